"""Stacked MNIST modes (VEEGAN protocol): each channel's digit by genexp's MNIST classifier."""

from __future__ import annotations

import torch

from genexp.metrics.ddp import in_batch_order
from genexp.metrics.extractors import MetricUnavailable, build_extractor
from genexp.metrics.modes import stacked_mode_statistics
from genexp.metrics.registry import MAX, MIN, Context, MetricKind, count_label, register


@register
class StackedModes(MetricKind):
    kind = "stacked_modes"
    directions = {"stacked/modes": MAX, "stacked/kl": MIN}

    def __init__(self, name: str, cfg, ctx: Context):
        super().__init__(name, cfg, ctx)
        if not getattr(ctx.dataset, "stacked", False):
            raise MetricUnavailable(f"it counts the digits of Stacked MNIST channels; data={ctx.data_cfg.name} "
                                    "is not data=stacked_mnist")
        net, ident = build_extractor("mnist_lenet", "logits", cfg.get("weights"))
        self.net = net.to(ctx.device)
        self.num_samples = n = int(ctx.num_samples or cfg.num_samples)
        self.key = f"stacked@{count_label(n)}"
        self.protocol = {"num_fake": n, "classifier": ident, "modes": 1000}
        self.parts: list[tuple[int, torch.Tensor]] = []

    def keys(self) -> list[str]:
        at = count_label(self.num_samples)
        return [f"stacked/modes@{at}", f"stacked/kl@{at}"]

    def reset_fake(self) -> None:
        self.parts = []

    def update_fake(self, x: torch.Tensor, start: int, batch: int) -> None:
        # each channel is a digit: mode = 100 a + 10 b + c
        digits = self.net(x.reshape(-1, 1, *x.shape[2:])).argmax(1).view(len(x), 3)
        self.parts.append((batch, (digits * torch.tensor([100, 10, 1], device=digits.device)).sum(1).cpu()))

    def compute(self) -> dict[str, float]:
        stats = stacked_mode_statistics(torch.cat(in_batch_order(self.parts))[: self.num_samples])
        modes_key, kl_key = self.keys()
        return {modes_key: float(stats["modes"]), kl_key: stats["kl"]}
