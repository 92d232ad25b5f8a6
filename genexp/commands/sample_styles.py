"""genexp sample's tools for style-based generators: truncated samples, style-mixing grids and
latent interpolations. Each takes the generator (G or its EMA) and seeded latents."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from genexp.data.base import unit_to_uint8
from genexp.files import save_image
from genexp.metrics.ppl import slerp
from genexp.viz import balanced_columns, image_grid


@torch.no_grad()
def truncated(G, z: torch.Tensor, labels, psi: float, noise_mode: str, batch: int = 64) -> torch.Tensor:
    out = [G(z[i:i + batch], labels[i:i + batch] if labels is not None else None, psi=psi, noise_mode=noise_mode)
           for i in range(0, len(z), batch)]
    return torch.cat(out).float().clamp(-1, 1).cpu()


@torch.no_grad()
def mixing_grid(G, row_z: torch.Tensor, col_z: torch.Tensor, layers: list[int], labels, psi: float,
                noise_mode: str) -> torch.Tensor:
    """The official style-mixing figure: a blank corner, the column sources along the top, the row
    sources down the left, and in each cell the row's styles with the column's at ``layers``.
    Returns (rows + 1) * (cols + 1) images, row-major."""
    lab = (lambda n: labels[:n]) if labels is not None else (lambda n: None)
    row_ws = G.styles(row_z, lab(len(row_z)), psi)
    col_ws = G.styles(col_z, lab(len(col_z)), psi)
    top = G.synthesis(col_ws, noise_mode)
    left = G.synthesis(row_ws, noise_mode)
    cells = [torch.full_like(top[:1], -1.0), top]
    for r in range(len(row_z)):
        ws = row_ws[r:r + 1].repeat(len(col_z), 1, 1)
        ws[:, layers] = col_ws[:, layers]
        cells += [left[r:r + 1], G.synthesis(ws, noise_mode)]
    return torch.cat(cells).float().clamp(-1, 1).cpu()


@torch.no_grad()
def interpolation(G, keys: torch.Tensor, frames: int, space: str, labels, psi: float,
                  noise_mode: str) -> torch.Tensor:
    """``frames`` images per segment between consecutive key latents, the last key closing it:
    slerp in z, or lerp in w (w is not Gaussian)."""
    label = labels[:1] if labels is not None else None
    out = []
    for a, b in zip(keys[:-1], keys[1:]):
        for i in range(frames):
            t = i / frames
            if space == "z":
                ws = G.styles(slerp(a[None], b[None], torch.full((1, 1), t, device=a.device)), label, psi)
            else:
                wa, wb = G.styles(a[None], label, psi), G.styles(b[None], label, psi)
                ws = torch.lerp(wa, wb, t)
            out.append(G.synthesis(ws, noise_mode))
    out.append(G.synthesis(G.styles(keys[-1:], label, psi), noise_mode))
    return torch.cat(out).float().clamp(-1, 1).cpu()


def save_gif(frames: torch.Tensor, path, fps: int = 12) -> None:
    """An animated GIF (PIL), looping; gray frames stay gray."""
    arrays = unit_to_uint8(frames).permute(0, 2, 3, 1).numpy()
    images = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
    save_image(images[0], path, format="GIF", save_all=True, append_images=images[1:],
               duration=max(1, round(1000 / fps)), loop=0)


def strip(frames: torch.Tensor, columns: int | None = None) -> np.ndarray:
    """The frames in rows of about ``columns`` (default: a strip twice as wide as tall), none alone on the last."""
    n = len(frames)
    return image_grid(frames, balanced_columns(n, columns or max(1, math.ceil(math.sqrt(n * 4)))))
