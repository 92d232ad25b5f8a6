"""Constraints applied to D's weights after each of its optimizer steps."""

from __future__ import annotations

import torch
from torch import nn


class WeightClip:
    """Clamp every weight of the critic to [-bound, bound] (WGAN, Arjovsky et al. 2017: 0.01)."""

    def __init__(self, bound: float = 0.01):
        self.bound = float(bound)

    @torch.no_grad()
    def __call__(self, D: nn.Module) -> None:
        for p in D.parameters():
            p.clamp_(-self.bound, self.bound)
