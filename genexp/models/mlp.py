"""Fully connected G and D for low-dimensional points (2-D mixtures)."""

from __future__ import annotations

import torch
from torch import nn

from genexp.errors import UserError
from genexp.models.layers import MinibatchStd, Projection, with_one_hot


def mlp(d_in: int, hidden: int, layers: int, d_out: int, act: type[nn.Module], norm: str = "none") -> nn.Sequential:
    if norm not in ("none", "batch"):
        raise UserError(f"model.generator.norm={norm}: use none or batch")
    dims = [d_in] + [hidden] * layers
    blocks: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        # PacGAN's 2-D generators batch-normalise every hidden layer.
        blocks += [nn.Linear(a, b), nn.BatchNorm1d(b), act()] if norm == "batch" else [nn.Linear(a, b), act()]
    blocks.append(nn.Linear(dims[-1], d_out))
    return nn.Sequential(*blocks)


class Generator(nn.Module):
    def __init__(self, z_dim: int = 2, out_dim: int = 2, hidden: int = 256, layers: int = 3, num_classes: int = 0,
                 norm: str = "none"):
        super().__init__()
        self.z_dim, self.out_dim, self.num_classes = z_dim, out_dim, num_classes
        self.net = mlp(z_dim + num_classes, hidden, layers, out_dim, nn.ReLU, norm)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(with_one_hot(z, labels, self.num_classes))


class Discriminator(nn.Module):
    def __init__(self, in_dim: int = 2, hidden: int = 256, layers: int = 3, pack: int = 1, mbstd_group: int = 0,
                 num_classes: int = 0):
        super().__init__()
        body = mlp(in_dim * pack, hidden, layers, 1, lambda: nn.LeakyReLU(0.2))
        features = hidden + (1 if mbstd_group else 0)
        # Minibatch std goes in before the output layer: the last hidden features gain one column.
        self.body, self.head = body[:-1], nn.Linear(features, 1)
        self.mbstd = MinibatchStd(mbstd_group) if mbstd_group else nn.Identity()
        self.projection = Projection(num_classes, features) if num_classes else None

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.mbstd(self.body(x))
        logit = self.head(h).view(len(x))
        return logit if self.projection is None else logit + self.projection(h, labels)
