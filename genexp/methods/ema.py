"""Exponential moving average of a network's weights (buffers are copied, not averaged)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.lerp_(p, 1.0 - beta)
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)


def ema_beta(beta: float, step: int, start: int = 0, rampup: bool = False) -> float:
    """The decay at a G step: 0 (a copy) before ``start``; with ``rampup`` at most (1 + t) / (10 + t)
    for t steps averaged so far, so a short run is not an average dominated by its first weights
    (0.999 alone keeps 37% of the weights of step 0 after 1,000 steps)."""
    if step < start:
        return 0.0
    return min(beta, (1 + step - start) / (10 + step - start)) if rampup else beta
