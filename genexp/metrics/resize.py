"""How images reach an extractor's input size: the one place the metric resize filters live.

FID numbers move with the filter (FFHQ-256: 4.3 vs 5.3 from the resize alone), so the filter is a
per-metric option, part of the reference-statistics key, and written into every result's protocol.

- ``tf1_bilinear``: TensorFlow 1.x ``resize_bilinear`` (no antialiasing, corner-aligned source grid),
  what the original TF FID code, torch-fidelity and torchmetrics feed Inception.
- ``bicubic``: antialiased bicubic, as PIL's (clean-fid's choice).
- ``box``: area averaging (antialiased when shrinking; nearest-like when growing by whole factors).
- ``bilinear``: antialiased bilinear (torch); genexp's own classifiers are trained with it.
- ``nearest``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FILTERS = ("tf1_bilinear", "bicubic", "box", "bilinear", "nearest")


def resize(x: torch.Tensor, size: int, filter: str) -> torch.Tensor:
    """Float images (N, C, H, W) to (N, C, size, size) with ``filter``; unchanged when already there."""
    if filter not in FILTERS:
        raise ValueError(f"unknown resize filter '{filter}': use one of {', '.join(FILTERS)}")
    if x.shape[-2:] == (size, size):
        return x
    if filter == "tf1_bilinear":
        return tf1_bilinear(x, size)
    if filter == "box":
        return F.interpolate(x, size=(size, size), mode="area")
    if filter == "nearest":
        return F.interpolate(x, size=(size, size), mode="nearest")
    # torch's antialiased path is PIL's resampling (bicubic's a = -0.5) in both directions; its plain
    # bicubic is a = -0.75: growing 32 -> 299 with it lands 4.2 grey levels from PIL on average, so
    # bicubic is always antialiased. Bilinear's kernel is the same either way when growing.
    antialias = filter == "bicubic" or x.shape[-1] > size
    return F.interpolate(x, size=(size, size), mode=filter, align_corners=False, antialias=antialias)


def tf1_bilinear(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF 1.x resize_bilinear(align_corners=False): output pixel i samples input coordinate
    i * in / out (no half-pixel offset), interpolating between floor and the next pixel (clamped)."""
    out = []
    coords = []
    for dim in (-2, -1):
        n = x.shape[dim]
        # float32 coordinates, as TF computes them: float64 would move pixels by up to 4e-4 of 255
        src = torch.arange(size, dtype=torch.float32, device=x.device) * torch.tensor(n / size, dtype=torch.float32)
        lo = src.long().clamp_max(n - 1)
        coords.append((lo, (lo + 1).clamp_max(n - 1), (src - lo.float()).to(x.dtype)))
    (ylo, yhi, dy), (xlo, xhi, dx) = coords
    rows_lo, rows_hi = x[..., ylo, :], x[..., yhi, :]
    for rows in (rows_lo, rows_hi):
        left, right = rows[..., xlo], rows[..., xhi]
        out.append(left + (right - left) * dx)
    top, bottom = out
    return top + (bottom - top) * dy.view(-1, 1)
