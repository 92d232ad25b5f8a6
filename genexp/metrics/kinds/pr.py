"""Improved precision and recall (Kynkaanniemi et al. 2019) on extractor features and, with
``density_coverage=true`` (conf/metrics/prdc.yaml), density and coverage (Naeem et al. 2020) from the same
stored features, real radii and real-fake distance pass (metrics/precision_recall.py)."""

from __future__ import annotations

from genexp.metrics.featured import TorchmetricsKind, build_features, feature_key
from genexp.metrics.registry import MAX, Context, register

STATISTICS = ("precision", "recall", "density", "coverage")


@register
class PrecisionRecallKind(TorchmetricsKind):
    kind = "pr"
    keeps_reference = True
    directions = {f"{s}/": MAX for s in STATISTICS}

    def __init__(self, name: str, cfg, ctx: Context):
        from genexp.metrics.precision_recall import PrecisionRecall

        super().__init__(name, cfg, ctx)
        n, n_real = self.sizes(cfg, ctx)
        module, ident = build_features(cfg, ctx, "features")
        self.features, self.num_samples = int(module.num_features), n
        self.key = feature_key("pr", ident, n)
        k = int(cfg.get("k", 3))
        self.statistics = STATISTICS if cfg.get("density_coverage", False) else STATISTICS[:2]
        self.protocol = {"extractor": ident, "num_fake": n, "num_real": n_real, "k": k,
                         "ties": "precision/recall count distance == radius as inside (<=)"}
        dc_k = None
        if "density" in self.statistics:
            dc_k = int(cfg.get("density_coverage_k", 5))
            self.protocol.update({"density_coverage_k": dc_k,
                                  "ties": "precision/recall: distance == radius inside (<=); "
                                          "density/coverage: outside (<, as the prdc package)"})
        neighbours = max(k, dc_k or k)
        self.protocol.update(ctx.check_count(name, self.key, cfg, {"generated": n, "real": n_real},
                                             max(self.features, neighbours + 1),
                                             f"genexp asks for at least the {self.features} feature dimensions"))
        block_rows = cfg.get("block_rows")
        self.metric = PrecisionRecall(feature=module, k=k, dc_k=dc_k,
                                      block_rows=int(block_rows) if block_rows else None,
                                      reset_real_features=False).to(ctx.device)

    def keys(self) -> list[str]:
        return [self.key.replace("pr/", f"{s}/", 1) for s in self.statistics]

    def compute(self) -> dict[str, float]:
        values = self.metric.compute()
        return {key: float(values[s]) for s, key in zip(self.statistics, self.keys())}
