"""Pictures of samples without torchvision or matplotlib: image grids and 2-D scatter plots."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from genexp.data.base import unit_to_uint8
from genexp.files import save_image


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (H', W', C) grid, or (H', W') for gray."""
    x = unit_to_uint8(images.detach().cpu())
    n, c, h, w = x.shape
    nrow = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / nrow)
    grid = torch.zeros(c, rows * (h + pad) + pad, nrow * (w + pad) + pad, dtype=torch.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        top, left = pad + r * (h + pad), pad + col * (w + pad)
        grid[:, top:top + h, left:left + w] = x[i]
    arr = grid.permute(1, 2, 0).numpy()
    return arr[..., 0] if c == 1 else arr


def scatter(points: torch.Tensor, reference: torch.Tensor | None = None, size: int = 512) -> np.ndarray:
    """2-D points as black dots (reference points, e.g. real data, in light grey), uint8 (H, W, 3)."""
    pts = points.detach().cpu().float()[:, :2]
    both = pts if reference is None else torch.cat([pts, reference.cpu().float()[:, :2]])
    finite = both[torch.isfinite(both).all(1)]
    lo, hi = (finite.min(0).values, finite.max(0).values) if len(finite) else (torch.zeros(2), torch.ones(2))
    centre, half = (lo + hi) / 2, float((hi - lo).max()) / 2 * 1.1 + 1e-6
    img = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(img)

    def to_px(p: torch.Tensor) -> np.ndarray:
        q = (p - centre) / half  # [-1, 1], y up
        return np.stack([(q[:, 0] + 1) / 2 * (size - 1), (1 - q[:, 1]) / 2 * (size - 1)], 1)

    for colour, data in (((200, 200, 200), reference), ((20, 20, 20), pts)):
        if data is None:
            continue
        for x, y in to_px(data.cpu().float()[:, :2]):
            if np.isfinite(x) and np.isfinite(y):
                draw.ellipse([x - 1.5, y - 1.5, x + 1.5, y + 1.5], fill=colour)
    return np.asarray(img)


def picture(samples: torch.Tensor, reference: torch.Tensor | None = None, nrow: int | None = None) -> np.ndarray:
    """A grid for images, a scatter plot for points."""
    return image_grid(samples, nrow) if samples.dim() == 4 else scatter(samples, reference)


def save_png(array: np.ndarray, path: Path) -> None:
    save_image(Image.fromarray(array), path, format="PNG")
