"""DCGAN-style generator and discriminator (Radford et al. 2016) for square images.

G: z -> 4x4 by a transposed conv, then one stride-2 transposed conv per doubling to
the resolution; D mirrors it down to 4x4 and ends in a 4x4 conv to one logit.
Channels halve per doubling from ``base_channels * 2**(doublings-1)``, capped.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genexp.errors import UserError
from genexp.models.layers import MinibatchStd, Projection, with_one_hot


def doublings(resolution: int) -> int:
    n = math.log2(resolution) if resolution > 0 else 0.5
    if not float(n).is_integer() or resolution < 8:
        raise UserError(f"resolution {resolution}: DCGAN needs a power of two >= 8 (e.g. 16, 32, 64)")
    return int(n) - 2


def widths(resolution: int, base: int, cap: int) -> list[int]:
    """Channels at 4x4, 8x8, ..., resolution/2 (the last conv maps to image channels)."""
    n = doublings(resolution)
    return [min(base * 2 ** (n - 1 - i), cap) for i in range(n)]


class Generator(nn.Module):
    def __init__(self, z_dim: int = 64, resolution: int = 32, channels: int = 3,
                 base_channels: int = 64, max_channels: int = 512, num_classes: int = 0):
        super().__init__()
        self.z_dim, self.resolution, self.channels, self.num_classes = z_dim, resolution, channels, num_classes
        w = widths(resolution, base_channels, max_channels)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim + num_classes, w[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True)]
        for c_in, c_out in zip(w, w[1:]):
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False),
                       nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]
        layers += [nn.ConvTranspose2d(w[-1], channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        init_dcgan(self)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        z = with_one_hot(z, labels, self.num_classes)
        return self.net(z.view(len(z), z.shape[1], 1, 1))


def norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)
    if kind in ("none", "spectral"):
        return nn.Identity()
    raise UserError(f"model.discriminator.norm={kind}: use none, batch, layer or spectral")


class Discriminator(nn.Module):
    def __init__(self, resolution: int = 32, channels: int = 3, base_channels: int = 64,
                 max_channels: int = 512, norm: str = "none", pack: int = 1, mbstd_group: int = 0,
                 num_classes: int = 0):
        super().__init__()
        self.resolution, self.channels = resolution, channels
        w = list(reversed(widths(resolution, base_channels, max_channels)))
        wrap = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
        # No norm on the first layer: it would normalise the input images (DCGAN sec. 3).
        layers: list[nn.Module] = [wrap(nn.Conv2d(channels * pack, w[0], 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
        for c_in, c_out in zip(w, w[1:]):
            layers += [wrap(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm == "none" or norm == "spectral")),
                       norm_layer(norm, c_out), nn.LeakyReLU(0.2, inplace=True)]
        if mbstd_group:
            layers.append(MinibatchStd(mbstd_group))
        features = w[-1] + (1 if mbstd_group else 0)
        self.body = nn.Sequential(*layers)
        self.head = wrap(nn.Conv2d(features, 1, 4, 1, 0))
        self.projection = Projection(num_classes, features) if num_classes else None
        init_dcgan(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.body(x)
        logit = self.head(h).view(len(x))
        if self.projection is not None:
            logit = logit + self.projection(h.sum((2, 3)), labels)
        return logit


def init_dcgan(module: nn.Module) -> None:
    """N(0, 0.02) conv weights and N(1, 0.02) norm scales, as in the DCGAN paper."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
