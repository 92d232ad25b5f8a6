"""Improved precision and recall (Kynkaanniemi et al. 2019) on extractor features (metrics/precision_recall.py)."""

from __future__ import annotations

from genexp.metrics.featured import TorchmetricsKind, build_features, feature_key
from genexp.metrics.registry import MAX, Context, register


@register
class PrecisionRecallKind(TorchmetricsKind):
    kind = "pr"
    keeps_reference = True
    directions = {"precision/": MAX, "recall/": MAX}

    def __init__(self, name: str, cfg, ctx: Context):
        from genexp.metrics.precision_recall import PrecisionRecall

        super().__init__(name, cfg, ctx)
        n, n_real = self.sizes(cfg, ctx)
        module, ident = build_features(cfg, ctx, "features")
        self.features, self.num_samples = int(module.num_features), n
        self.key = feature_key("pr", ident, n)
        k = int(cfg.get("k", 3))
        self.protocol = {"extractor": ident, "num_fake": n, "num_real": n_real, "k": k}
        self.protocol.update(ctx.check_count(name, self.key, cfg, {"generated": n, "real": n_real},
                                             max(self.features, k + 1),
                                             f"genexp asks for at least the {self.features} feature dimensions"))
        self.metric = PrecisionRecall(feature=module, k=k, reset_real_features=False).to(ctx.device)

    def keys(self) -> list[str]:
        return [self.key.replace("pr/", "precision/", 1), self.key.replace("pr/", "recall/", 1)]

    def compute(self) -> dict[str, float]:
        precision, recall = self.metric.compute()
        p_key, r_key = self.keys()
        return {p_key: float(precision), r_key: float(recall)}
