"""LPIPS of samples: diversity (pairs of samples) or paired (the i-th generated image against the i-th real)."""

from __future__ import annotations

import torch

from genexp.metrics import lpips_net
from genexp.metrics.extractors import MetricUnavailable
from genexp.metrics.registry import MAX, MIN, Context, MetricKind, count_label, register


@register
class LPIPS(MetricKind):
    kind = "lpips"
    directions = {"lpips_diversity/": MAX, "lpips_recon/": MIN}

    def __init__(self, name: str, cfg, ctx: Context):
        super().__init__(name, cfg, ctx)
        net, self.mode = cfg.get("net", "alex"), cfg.get("mode", "diversity")
        if self.mode not in ("diversity", "paired"):
            raise MetricUnavailable(f"metrics.{name}.mode={self.mode}: use diversity (pairs of samples) or paired "
                                    "(the i-th generated image against the i-th real one)")
        size = cfg.get("resize")
        self.metric = lpips_net.lpips_metric(net, cfg.get("weights"), bool(cfg.get("download", True)),
                                             f"metrics.{name}.weights", int(size) if size else None).to(ctx.device)
        side = int(ctx.data_cfg.get("resolution") or ctx.example().shape[-1])
        seen = self.metric.net.seen_size(side)
        label = f"{net}-{seen}px" if seen else net  # resized images give other numbers: the key says so
        n = int(ctx.num_samples or cfg.num_samples)
        protocol = {"mode": self.mode, "net": net, "backbone": lpips_net.SPECS[net].file,
                    "input": f"resized to {seen} px" if seen else "as generated"}
        if self.mode == "paired":
            n = min(n, len(ctx.dataset))
            self.key = f"lpips_recon/{label}@{count_label(n)}"
            self.protocol = {**protocol, "pairs": n, "order": "real and generated in index order"}
        else:
            self.key = f"lpips_diversity/{label}@{count_label(n)}"
            self.protocol = {**protocol, "pairs": n // 2}
        self.num_samples, self.pending = n, None

    def reset_fake(self) -> None:
        self.metric.reset()
        self.pending = None

    def update_fake(self, x: torch.Tensor, start: int, batch: int) -> None:
        if self.mode == "paired":  # reconstructions of the reals, in index order
            real = torch.stack([self.ctx.dataset[i][0] for i in range(start, start + len(x))])
            self.metric.update(x.clamp(-1, 1), real.to(self.ctx.device).clamp(-1, 1))
            return
        self.pending = x if self.pending is None else torch.cat([self.pending, x])
        pairs = len(self.pending) // 2 * 2
        if pairs:
            a, b = self.pending[:pairs].chunk(2)
            self.metric.update(a.clamp(-1, 1), b.clamp(-1, 1))
            self.pending = self.pending[pairs:]

    def compute(self) -> dict[str, float]:
        return {self.key: float(self.metric.compute())}
