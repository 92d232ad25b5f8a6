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


def half_life_beta(batch: int, kimg: float, nimg: int, rampup: float | None = None) -> float:
    """StyleGAN2's EMA: a half-life of ``kimg`` thousand images, so the per-step decay is
    0.5 ** (batch / (1000 kimg)); with ``rampup`` the half-life is at most ``rampup`` times the
    images shown so far (``nimg``), so early weights fade fast."""
    ema_nimg = kimg * 1000
    if rampup is not None:
        ema_nimg = min(ema_nimg, nimg * rampup)
    return 0.5 ** (batch / max(ema_nimg, 1e-8))
