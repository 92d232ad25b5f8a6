"""scikit-learn's 8x8 handwritten digits, the embedded default: no download, 1,797 images.

Splits follow Tomczak's Deep Generative Modeling code (the likelihood benchmark's protocol):
train = the first 1,000 images, val = the next 350, test = the remaining 447; ``all`` keeps every one.
"""

from __future__ import annotations

import torch

from genexp.data.base import ArrayDataset, convert_channels, resize
from genexp.errors import UserError

SPLITS = {"all": slice(None), "train": slice(0, 1000), "val": slice(1000, 1350), "test": slice(1350, None)}
LEVELS = 17  # pixel values are counts 0..16 of a 4x4 block; 16 is full ink


class DigitsDataset(ArrayDataset):
    def __init__(self, resolution: int = 16, channels: int = 1, split: str = "all"):
        from sklearn.datasets import load_digits

        if split not in SPLITS:
            raise UserError(f"data.split={split}: the digits splits are {', '.join(SPLITS)}")
        digits = load_digits()
        part = SPLITS[split]
        x = torch.from_numpy(digits.images[part]).float().div(LEVELS - 1).unsqueeze(1)
        # At 8x8 the values stay the 17 levels exactly; resizing makes them continuous.
        x = resize(x.mul(2.0).sub(1.0), resolution).clamp(-1.0, 1.0)
        super().__init__(convert_channels(x, channels), torch.from_numpy(digits.target[part]), num_classes=10)
        self.resolution, self.channels, self.split = resolution, channels, split
