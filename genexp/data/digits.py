"""scikit-learn's 8x8 handwritten digits, the embedded default: no download, 1,797 images."""

from __future__ import annotations

import torch

from genexp.data.base import ArrayDataset, convert_channels, resize


class DigitsDataset(ArrayDataset):
    def __init__(self, resolution: int = 16, channels: int = 1):
        from sklearn.datasets import load_digits

        digits = load_digits()
        # Pixels are counts 0..16 of a 4x4 block; 16 is full ink.
        x = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)
        x = resize(x.mul(2.0).sub(1.0), resolution).clamp(-1.0, 1.0)
        super().__init__(convert_channels(x, channels), torch.from_numpy(digits.target), num_classes=10)
        self.resolution = resolution
        self.channels = channels
