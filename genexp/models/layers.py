"""Layers shared by several networks."""

from __future__ import annotations

import torch
from torch import nn


class MinibatchStd(nn.Module):
    """Appends the standard deviation of features across groups of samples as one more channel
    (Karras et al. 2018, sec. 3; StyleGAN2 uses groups of 4): D can see a lack of variety.
    Works on (N, C, H, W) and (N, C); N must divide into groups (smaller groups otherwise)."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        y = x.reshape(g, n // g, *x.shape[1:])
        std = (y.var(0, unbiased=False) + 1e-8).sqrt()  # (n/g, C, ...)
        stat = std.mean(dim=tuple(range(1, std.dim())))  # one number per group member slot
        stat = stat.repeat(g).view(n, 1, *([1] * (x.dim() - 2)))
        return torch.cat([x, stat.expand(n, 1, *x.shape[2:])], 1)


def pack_samples(x: torch.Tensor, pack: int) -> torch.Tensor:
    """PacGAN (Lin et al. 2018): ``pack`` consecutive samples become one D input, concatenated
    along channels (images) or coordinates (points). A ragged tail is dropped."""
    if pack == 1:
        return x
    n = len(x) - len(x) % pack
    return x[:n].reshape(n // pack, pack * x.shape[1], *x.shape[2:])
