"""Mode coverage of 2-D mixtures (PacGAN protocol; metrics/modes.py)."""

from __future__ import annotations

import torch

from genexp.metrics.ddp import in_batch_order
from genexp.metrics.extractors import MetricUnavailable
from genexp.metrics.modes import mode_statistics
from genexp.metrics.registry import MAX, MIN, Context, MetricKind, count_label, register

STATS = ("captured", "hq_percent", "reverse_kl")


@register
class Modes(MetricKind):
    kind = "modes"
    data_kinds = ("points",)
    directions = {"modes/captured": MAX, "modes/hq_percent": MAX, "modes/reverse_kl": MIN}

    def __init__(self, name: str, cfg, ctx: Context):
        super().__init__(name, cfg, ctx)
        if not hasattr(ctx.dataset, "modes"):
            raise MetricUnavailable(f"data={ctx.data_cfg.name} does not say where its modes are")
        self.num_samples = n = int(ctx.num_samples or cfg.num_samples)
        self.key = f"modes@{count_label(n)}"
        self.protocol = {"num_fake": n, "hq_sigmas": float(cfg.hq_sigmas), "modes": len(ctx.dataset.modes),
                         "std": float(ctx.dataset.std)}
        self.parts: list[tuple[int, torch.Tensor]] = []

    def keys(self) -> list[str]:
        return [f"modes/{k}@{count_label(self.num_samples)}" for k in STATS]

    def reset_fake(self) -> None:
        self.parts = []

    def update_fake(self, x: torch.Tensor, start: int, batch: int) -> None:
        self.parts.append((batch, x.cpu()))

    def compute(self) -> dict[str, float]:
        points = torch.cat(in_batch_order(self.parts))[: self.num_samples]
        stats = mode_statistics(points, self.ctx.dataset.modes, self.ctx.dataset.std, self.protocol["hq_sigmas"])
        return {key: float(stats[k]) for key, k in zip(self.keys(), STATS)}
