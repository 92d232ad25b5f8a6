"""Kernel Inception Distance: unbiased polynomial-kernel (degree 3) MMD^2 between real and generated
features over random subsets (torchmetrics' KID), reported x 10^3 as papers quote it."""

from __future__ import annotations

from genexp.metrics.featured import TorchmetricsKind, build_features, feature_key
from genexp.metrics.registry import MIN, Context, register, std_key

SCALE = 1e3


@register
class KID(TorchmetricsKind):
    kind = "kid"
    keeps_reference = True
    directions = {"kid_x1e3/": MIN}

    def __init__(self, name: str, cfg, ctx: Context):
        from torchmetrics.image.kid import KernelInceptionDistance

        super().__init__(name, cfg, ctx)
        n, n_real = self.sizes(cfg, ctx)
        module, ident = build_features(cfg, ctx, "features")
        self.features, self.num_samples = int(module.num_features), n
        self.key = feature_key("kid_x1e3", ident, n)
        subset = min(int(cfg.subset_size), n, n_real)
        # Subsets of every sample on both sides are all the same set: their spread would be 0 by construction.
        self.subsets_differ = not (subset == n == n_real)
        self.protocol = {"extractor": ident, "num_fake": n, "num_real": n_real, "subsets": int(cfg.subsets),
                         "subset_size": subset, "unit": "KID x 10^3"}
        self.protocol.update(ctx.check_count(name, self.key, cfg, {"generated": n, "real": n_real}, self.features,
                                             f"genexp asks for at least the {self.features} feature dimensions"))
        self.metric = KernelInceptionDistance(feature=module, subsets=int(cfg.subsets), subset_size=subset,
                                              reset_real_features=False).to(ctx.device)

    def keys(self) -> list[str]:
        return [self.key, std_key(self.key)] if self.subsets_differ else [self.key]

    def compute(self) -> dict[str, float]:
        mean, std = self.metric.compute()
        out = {self.key: float(mean) * SCALE}
        if self.subsets_differ:
            out[std_key(self.key)] = float(std) * SCALE
        return out
