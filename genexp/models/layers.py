"""Layers shared by several networks."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MinibatchStd(nn.Module):
    """Appends the standard deviation of features across groups of samples as more channels
    (Karras et al. 2018, sec. 3; StyleGAN2 uses groups of 4): D can see a lack of variety.
    Works on (N, C, H, W) and (N, C); N must divide into groups (smaller groups otherwise);
    ``group_size`` None: the whole batch. ``channels`` > 1 splits the features into that many
    groups with one statistic each (the official mbstd_num_channels)."""

    def __init__(self, group_size: int | None = 4, channels: int = 1):
        super().__init__()
        self.group_size, self.channels = group_size, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        g = n if self.group_size is None else min(self.group_size, n)
        while n % g:
            g -= 1
        f = self.channels
        y = x.reshape(g, n // g, f, c // f, *x.shape[2:])
        std = (y.var(0, unbiased=False) + 1e-8).sqrt()  # (n/g, F, C/F, ...)
        stat = std.mean(dim=tuple(range(2, std.dim())))  # (n/g, F): per group member slot
        stat = stat.repeat(g, 1).view(n, f, *([1] * (x.dim() - 2)))
        return torch.cat([x, stat.expand(n, f, *x.shape[2:])], 1)


def pack_samples(x: torch.Tensor, pack: int) -> torch.Tensor:
    """PacGAN (Lin et al. 2018): ``pack`` consecutive samples become one D input, concatenated
    along channels (images) or coordinates (points). A ragged tail is dropped."""
    if pack == 1:
        return x
    n = len(x) - len(x) % pack
    return x[:n].reshape(n // pack, pack * x.shape[1], *x.shape[2:])


class Projection(nn.Module):
    """The class term of a projection discriminator (Miyato & Koyama 2018): <embed(y), phi(x)>."""

    def __init__(self, num_classes: int, features: int):
        super().__init__()
        self.embed = nn.Embedding(num_classes, features)
        nn.init.normal_(self.embed.weight, 0.0, 0.02)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        if labels is None:
            raise ValueError("a conditional discriminator needs labels")
        return (self.embed(labels) * features).sum(1)


def with_one_hot(z: torch.Tensor, labels: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """cGAN conditioning of G (Mirza & Osindero 2014): the one-hot label joins the latent."""
    if not num_classes:
        return z
    if labels is None:
        raise ValueError("a conditional generator needs labels")
    return torch.cat([z, F.one_hot(labels, num_classes).to(z.dtype)], 1)

