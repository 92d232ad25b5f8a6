"""What every dataset returns, and the few tensor conversions they share.

A sample is ``(x, y)``: ``x`` is float32, images ``(C, H, W)`` in [-1, 1] or points
``(D,)``; ``y`` is an int64 class label, -1 when the data has none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

UNLABELED = -1


class ArrayDataset(Dataset):
    """Samples held in memory as two tensors; the loader slices them directly (no collate)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None = None, num_classes: int = 0):
        self.x = x.contiguous().float()
        if y is None:
            y = torch.full((len(x),), UNLABELED, dtype=torch.long)
        self.y = y.long()
        self.num_classes = num_classes
        self.kind = "image" if x.dim() == 4 else "points"

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], self.y[i]

    def get_batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[idx], self.y[idx]


def uint8_to_unit(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div(127.5).sub(1.0)


def unit_to_uint8(images: torch.Tensor) -> torch.Tensor:
    """float [-1, 1] -> uint8 [0, 255], clamped (generators overshoot)."""
    return images.add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


# How every dataset reaches its configured resolution; part of a cached statistic's identity.
RESIZE_FILTER = "bilinear, antialiased when shrinking"


def resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    """Square float images (N, C, H, W) to ``resolution``; antialiased when shrinking."""
    if images.shape[-1] == resolution and images.shape[-2] == resolution:
        return images
    shrinking = images.shape[-1] > resolution
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear",
                         align_corners=False, antialias=shrinking)


def convert_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Gray <-> RGB for (N, C, H, W) images; luminance weights of ITU-R 601."""
    have = images.shape[1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return images.expand(-1, 3, -1, -1).contiguous()
    if have == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=images.dtype).view(1, 3, 1, 1)
        return (images * w).sum(1, keepdim=True)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")
