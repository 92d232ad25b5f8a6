"""Stacked MNIST (VEEGAN / PacGAN): three MNIST digits as the R, G and B channels, 1,000 modes.

A fixed, seeded draw of ``num_samples`` digit triples; the label of a sample is its mode,
100 a + 10 b + c for the digits a, b, c of its channels. Digits are kept once, as uint8,
and stacked when a batch is asked for.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from genexp.data.base import uint8_to_unit, unit_to_uint8
from genexp.data.idx import IdxDataset


class StackedMnistDataset(Dataset):
    kind = "image"
    channels = 3
    num_classes = 1000
    stacked = True  # each channel is one MNIST digit: the stacked_modes metric reads them

    def __init__(self, root: str, split: str = "train", num_samples: int = 100_000, resolution: int = 32,
                 seed: int = 0, download: bool = True):
        base = IdxDataset(root, "mnist", split, resolution=resolution, channels=1, download=download)
        self.digits = unit_to_uint8(base.x)[:, 0]  # (N, R, R) uint8
        g = torch.Generator().manual_seed(seed)
        self.triples = torch.randint(len(self.digits), (num_samples, 3), generator=g)
        d = base.y[self.triples]
        self.y = d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2]
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.triples)

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return uint8_to_unit(self.digits[self.triples[idx]]), self.y[idx]

    def __getitem__(self, i: int):
        x, y = self.get_batch(torch.tensor([i]))
        return x[0], y[0]
