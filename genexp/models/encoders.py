"""Encoders x -> z and joint discriminators D(x, z), for BiGAN / ALI and O-GAN.

Image nets are DCGAN-style (genexp/models/dcgan.py): stride-2 4x4 convs from the resolution
down to 4x4, channels doubling per halving; point nets are MLPs (genexp/models/mlp.py).

A joint discriminator judges a pair (x, z) packed into one flat tensor ``join(x, z)`` =
[x.flatten(1), z]: the GAN objectives, gradient penalties and GAN-QP's distance all take one
input tensor per sample, and a pair then goes through them unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from genexp.models.dcgan import init_dcgan, norm_layer, widths
from genexp.models.mlp import mlp


def join(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """One flat tensor per (x, z) pair: (N, prod(x.shape[1:]) + z_dim)."""
    return torch.cat([x.flatten(1), z.flatten(1)], 1)


def conv_trunk(resolution: int, channels: int, base_channels: int, max_channels: int,
               norm: str) -> tuple[nn.Sequential, int]:
    """Images down to 4x4 features; returns the trunk and its flattened width."""
    w = list(reversed(widths(resolution, base_channels, max_channels)))
    wrap = nn.utils.parametrizations.spectral_norm if norm == "spectral" else (lambda m: m)
    # No norm on the first layer: it would normalise the input images (DCGAN sec. 3).
    layers: list[nn.Module] = [wrap(nn.Conv2d(channels, w[0], 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
    for c_in, c_out in zip(w, w[1:]):
        layers += [wrap(nn.Conv2d(c_in, c_out, 4, 2, 1, bias=norm in ("none", "spectral"))),
                   norm_layer(norm, c_out), nn.LeakyReLU(0.2, inplace=True)]
    return nn.Sequential(*layers, nn.Flatten()), w[-1] * 16


class GaussianHead(nn.Module):
    """ALI's stochastic encoder (Dumoulin et al. 2017, sec. 2.2): features -> mean and log-variance;
    a reparameterized sample while training, the mean otherwise. Deterministic (BiGAN) when off."""

    def __init__(self, features: int, z_dim: int, stochastic: bool):
        super().__init__()
        self.stochastic = stochastic
        self.linear = nn.Linear(features, 2 * z_dim if stochastic else z_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.linear(h)
        if not self.stochastic:
            return out
        mean, log_var = out.chunk(2, 1)
        if not self.training:
            return mean
        return mean + torch.randn_like(mean) * (0.5 * log_var).exp()


class ImageEncoder(nn.Module):
    """E: image -> z (BiGAN's encoder; O-GAN's discriminator body)."""

    def __init__(self, z_dim: int = 64, resolution: int = 32, channels: int = 3, base_channels: int = 64,
                 max_channels: int = 512, norm: str = "batch", stochastic: bool = False):
        super().__init__()
        self.z_dim = z_dim
        self.trunk, features = conv_trunk(resolution, channels, base_channels, max_channels, norm)
        self.head = GaussianHead(features, z_dim, stochastic)
        init_dcgan(self)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.trunk(x))


class PointEncoder(nn.Module):
    """E: point -> z, an MLP."""

    def __init__(self, z_dim: int = 2, in_dim: int = 2, hidden: int = 256, layers: int = 3,
                 stochastic: bool = False):
        super().__init__()
        self.z_dim = z_dim
        self.trunk = mlp(in_dim, hidden, layers, 1, lambda: nn.LeakyReLU(0.2))[:-1]
        self.head = GaussianHead(hidden, z_dim, stochastic)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(self.trunk(x))


class OrthogonalDiscriminator(nn.Module):
    """O-GAN's D (Su 2019, sec. 3): an encoder E whose score is T(E(x)) = avg(E(x)), the mean over
    E's z_dim outputs; what is orthogonal to that mean is free to encode z. ``forward`` is the score,
    so the objectives and gradient penalties see an ordinary D; ``features`` is E(x)."""

    def __init__(self, z_dim: int = 64, resolution: int = 32, channels: int = 3, base_channels: int = 64,
                 max_channels: int = 512, norm: str = "batch"):
        super().__init__()
        self.z_dim = z_dim
        self.encoder = ImageEncoder(z_dim, resolution, channels, base_channels, max_channels, norm)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.features(x).mean(1)


class JointHead(nn.Module):
    """The part of D(x, z) that sees both: an MLP on [x features, z] to one logit. ALI's
    discriminator uses dropout (0.2) in it (Dumoulin et al. 2017, appendix A)."""

    def __init__(self, features: int, z_dim: int, hidden: int, layers: int, dropout: float):
        super().__init__()
        blocks: list[nn.Module] = []
        dims = [features + z_dim] + [hidden] * layers
        for a, b in zip(dims, dims[1:]):
            blocks += [nn.Linear(a, b), nn.LeakyReLU(0.2, inplace=True)]
            if dropout:
                blocks.append(nn.Dropout(dropout))
        blocks.append(nn.Linear(dims[-1], 1))
        self.net = nn.Sequential(*blocks)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([h, z], 1)).view(len(h))


class JointDiscriminator(nn.Module):
    """D(x, z) for images, given ``join(x, z)``: a conv trunk reads x, the joint MLP reads its
    features with z (the layout of Su's BiGAN-QP code: conv x-branch, z as it is, MLP on both)."""

    def __init__(self, z_dim: int = 64, resolution: int = 32, channels: int = 3, base_channels: int = 64,
                 max_channels: int = 512, norm: str = "none", hidden: int = 512, layers: int = 2,
                 dropout: float = 0.0):
        super().__init__()
        self.z_dim, self.x_shape = z_dim, (channels, resolution, resolution)
        self.trunk, features = conv_trunk(resolution, channels, base_channels, max_channels, norm)
        init_dcgan(self.trunk)
        self.head = JointHead(features, z_dim, hidden, layers, dropout)

    def forward(self, xz: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        n_x = math.prod(self.x_shape)
        x, z = xz[:, :n_x].reshape(len(xz), *self.x_shape), xz[:, n_x:]
        return self.head(self.trunk(x), z)


class JointPointDiscriminator(nn.Module):
    """D(x, z) for points, given ``join(x, z)``: an MLP on the concatenation."""

    def __init__(self, z_dim: int = 2, in_dim: int = 2, hidden: int = 256, layers: int = 3, dropout: float = 0.0):
        super().__init__()
        self.z_dim, self.in_dim = z_dim, in_dim
        self.head = JointHead(in_dim, z_dim, hidden, layers, dropout)

    def forward(self, xz: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.head(xz[:, :self.in_dim], xz[:, self.in_dim:])
