"""LPIPS of samples: diversity (pairs of samples) or paired (the i-th generated image against the i-th real)."""

from __future__ import annotations

import torch

from genexp.metrics import lpips_net
from genexp.metrics.extractors import MetricUnavailable
from genexp.metrics.lpips_net import rgb
from genexp.metrics.registry import MAX, MIN, Context, MetricKind, count_label, register


@register
class LPIPS(MetricKind):
    kind = "lpips"
    directions = {"lpips_diversity/": MAX, "lpips_recon/": MIN}

    def __init__(self, name: str, cfg, ctx: Context):
        super().__init__(name, cfg, ctx)
        net, self.mode = cfg.get("net", "alex"), cfg.get("mode", "diversity")
        if self.mode not in ("diversity", "paired"):
            raise MetricUnavailable(f"metrics.lpips.mode={self.mode}: use diversity (pairs of samples) or paired "
                                    "(the i-th generated image against the i-th real one)")
        try:
            self.metric = lpips_net.lpips_metric(net).to(ctx.device)
        except Exception as exc:
            raise MetricUnavailable(f"LPIPS needs torchvision and its backbone weights ({type(exc).__name__}): "
                                    "pip install 'genexp[gpu]' where torchvision matches torch") from None
        n = int(ctx.num_samples or cfg.num_samples)
        if self.mode == "paired":
            n = min(n, len(ctx.dataset))
            self.key = f"lpips_recon/{net}@{count_label(n)}"
            self.protocol = {"mode": self.mode, "pairs": n, "net": net,
                             "order": "real and generated in index order"}
        else:
            self.key = f"lpips_diversity/{net}@{count_label(n)}"
            self.protocol = {"mode": self.mode, "pairs": n // 2, "net": net}
        self.num_samples, self.pending = n, None

    def reset_fake(self) -> None:
        self.metric.reset()
        self.pending = None

    def update_fake(self, x: torch.Tensor, start: int, batch: int) -> None:
        if self.mode == "paired":  # reconstructions of the reals, in index order
            real = torch.stack([self.ctx.dataset[i][0] for i in range(start, start + len(x))])
            self.metric.update(rgb(x).clamp(-1, 1), rgb(real.to(self.ctx.device)).clamp(-1, 1))
            return
        self.pending = x if self.pending is None else torch.cat([self.pending, x])
        pairs = len(self.pending) // 2 * 2
        if pairs:
            a, b = self.pending[:pairs].chunk(2)
            self.metric.update(rgb(a).clamp(-1, 1), rgb(b).clamp(-1, 1))
            self.pending = self.pending[pairs:]

    def compute(self) -> dict[str, float]:
        return {self.key: float(self.metric.compute())}
