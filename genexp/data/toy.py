"""2-D mixtures of Gaussians for mode-collapse studies (PacGAN / VEEGAN protocols).

The dataset is a fixed draw of ``num_samples`` points; labels are the mode index.
``modes`` (the centres) is what mode-coverage metrics compare against.
"""

from __future__ import annotations

import math

import torch

from genexp.data.base import ArrayDataset


class MixtureDataset(ArrayDataset):
    def __init__(self, centres: torch.Tensor, std: float, num_samples: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        labels = torch.randint(len(centres), (num_samples,), generator=g)
        x = centres[labels] + std * torch.randn(num_samples, centres.shape[1], generator=g)
        super().__init__(x, labels, num_classes=len(centres))
        self.modes = centres
        self.std = std
        self.dim = centres.shape[1]


class RingDataset(MixtureDataset):
    def __init__(self, num_samples=100_000, modes=8, radius=1.0, std=0.01, seed=0):
        angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
        centres = radius * torch.stack([angles.cos(), angles.sin()], 1).float()
        super().__init__(centres, std, num_samples, seed)


class GridDataset(MixtureDataset):
    def __init__(self, num_samples=100_000, side=5, spacing=2.0, std=0.05, seed=0):
        coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
        centres = torch.cartesian_prod(coords, coords)
        super().__init__(centres, std, num_samples, seed)
