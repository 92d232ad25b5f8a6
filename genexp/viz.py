"""Figures of samples: image grids, 2-D scatter plots, labelled rows.

Figures are for reading, so small images are enlarged (``readable``: nearest, an integer factor,
every source pixel an exact block); tensors and the individual sample files keep their native size.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from genexp.data.base import unit_to_uint8
from genexp.files import save_image

MIN_WIDTH = 512  # px: a 64-digit grid is 146 px at native size, too small to read
MAX_SIDE = 4096  # px: enlarging stops before a figure gets unwieldy


def upscale_factor(height: int, width: int, min_width: int = MIN_WIDTH, max_side: int = MAX_SIDE) -> int:
    """The integer factor that makes a figure at least ``min_width`` wide, its longer side at most ``max_side``."""
    want = math.ceil(min_width / max(width, 1))
    return max(1, min(want, max_side // max(height, width, 1)))


def readable(array: np.ndarray) -> np.ndarray:
    """Nearest-neighbour enlargement by ``upscale_factor``; a figure already wide enough comes back as it is."""
    f = upscale_factor(*array.shape[:2])
    return array if f == 1 else array.repeat(f, axis=0).repeat(f, axis=1)


def image_grid(images: torch.Tensor, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (H', W', C) grid at native size, or (H', W') for gray."""
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


def balanced_columns(n: int, preferred: int) -> int:
    """Columns for ``n`` frames near ``preferred`` that leave no frame alone on the last row:
    the fewest empty cells plus distance from ``preferred``, the wider layout on a tie."""
    if n <= 2:
        return max(n, 1)
    def cost(c: int) -> int:
        return math.ceil(n / c) * c - n + abs(c - preferred)
    fits = [c for c in range(2, n + 1) if n % c != 1]
    return min(fits, key=lambda c: (cost(c), -c))


# --- labelled rows: which row is real, which is the model's ----------------------------------------

def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # an old Pillow or one without FreeType: the small bitmap font
        return ImageFont.load_default()


def labelled_rows(groups: list[tuple[str, torch.Tensor]], columns: int, pad: int = 2) -> np.ndarray:
    """A readable grid whose row groups carry their label in a white left margin.

    ``groups``: (label, images (N, C, H, W) in [-1, 1]) in order, each laid out in ``columns`` columns."""
    parts = [image_grid(images, columns, pad) for _, images in groups]
    parts = [parts[0]] + [p[pad:] for p in parts[1:]]  # one pad between groups, as inside a grid
    grid = readable(np.concatenate(parts, axis=0))
    f = grid.shape[1] // parts[0].shape[1]
    font = _font(max(12, min(28, grid.shape[0] // (4 * len(groups)))))
    labels = [label for label, _ in groups]
    text_w = max(ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), t, font=font)[2] for t in labels)
    margin = text_w + 16
    mode = "L" if grid.ndim == 2 else "RGB"
    canvas = Image.new(mode, (margin + grid.shape[1], grid.shape[0]), 255 if mode == "L" else (255, 255, 255))
    canvas.paste(Image.fromarray(grid), (margin, 0))
    draw, top = ImageDraw.Draw(canvas), 0
    for label, part in zip(labels, parts):
        height = part.shape[0] * f
        draw.text((margin - 8, top + height // 2), label, fill=0 if mode == "L" else (0, 0, 0), font=font, anchor="rm")
        top += height
    return np.asarray(canvas)


def reconstruction_figure(real: torch.Tensor, recon: torch.Tensor, columns: int) -> np.ndarray:
    """Each row of real images above the row of their reconstructions, labelled."""
    groups = []
    for start in range(0, len(real), columns):
        groups += [("real", real[start:start + columns]), ("reconstruction", recon[start:start + columns])]
    return labelled_rows([(label, x.detach().float().cpu().clamp(-1, 1)) for label, x in groups], columns)


def projection_figure(target: torch.Tensor, projection: torch.Tensor) -> np.ndarray:
    """The target above the generator's image of the found latent."""
    return labelled_rows([("target", target.cpu()), ("projection", projection.cpu())], 1)


def progress_figure(frames: list[torch.Tensor], target: torch.Tensor) -> np.ndarray:
    """The projection as it went (left to right) above the target."""
    return labelled_rows([("projection", torch.cat(frames).cpu()), ("target", target.cpu())], len(frames))


# --- 2-D points ------------------------------------------------------------------------------------

def plot_limits(modes: torch.Tensor | None = None, std: float = 0.0, reference: torch.Tensor | None = None,
                points: torch.Tensor | None = None) -> tuple[tuple[float, float], tuple[float, float]]:
    """(x limits, y limits), equally wide: the data's extent (its modes, else the real points) plus a
    margin, so every step's figure has the same frame; the samples' own extent only without data."""
    source = next((t for t in (modes, reference, points) if t is not None and len(t)), None)
    xy = source.detach().cpu().double()[:, :2] if source is not None else torch.zeros(0, 2)
    xy = xy[torch.isfinite(xy).all(1)]
    if not len(xy):
        return (-1.0, 1.0), (-1.0, 1.0)
    lo, hi = xy.min(0).values, xy.max(0).values
    half = float((hi - lo).max()) / 2
    half += max(0.25 * half, 6 * std if source is modes else 0.0, 0.1)  # modes: room for their spread
    centre = ((lo + hi) / 2).tolist()
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def scatter_figure(points: torch.Tensor, reference=None, step: int | None = None, size: int = 512):
    """A matplotlib Figure of 2-D samples (black) over the real data (grey) with its mode centres (red x).

    ``reference``: a dataset (its ``x``, ``modes`` and ``std``) or a tensor of real points."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    data = getattr(reference, "x", reference)
    modes = getattr(reference, "modes", None)
    real = data[:2500].detach().cpu().float() if data is not None else None
    pts = points.detach().cpu().float()[:, :2]
    std = float(reference.std) if modes is not None else 0.0  # a dataset's spread (a tensor's .std is a method)
    (x0, x1), (y0, y1) = plot_limits(modes, std, real, pts)
    dpi = 100
    fig = Figure(figsize=(size / dpi, size / dpi), dpi=dpi)
    ax = fig.add_subplot()
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=3, c="0.8", linewidths=0, label="real")
    ax.scatter(pts[:, 0], pts[:, 1], s=3, c="black", linewidths=0, label="samples")
    if modes is not None:
        ax.scatter(modes[:, 0], modes[:, 1], s=40, c="tab:red", marker="x", linewidths=1.2, label="modes")
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_aspect("equal")
    inside = (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
    outside = int((~inside).sum())  # said in the title: the frame is fixed, so strays would go unseen
    title = f"step {step}" if step is not None else "samples"
    ax.set_title(title + (f" ({outside} of {len(pts)} outside)" if outside else ""), fontsize=10)
    ax.tick_params(labelsize=8)
    legend = ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.07), ncol=3, fontsize=8, frameon=False)
    for handle in legend.legend_handles:
        handle.set_sizes([20])
    with warnings.catch_warnings():  # a tiny figure cannot fit its ticks; it is drawn all the same
        warnings.simplefilter("ignore", UserWarning)
        fig.tight_layout()
    return fig


def render(fig) -> np.ndarray:
    """A matplotlib Figure as uint8 (H, W, 3), off-screen (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def scatter(points: torch.Tensor, reference=None, size: int = 512, step: int | None = None) -> np.ndarray:
    """2-D points as a scatter plot with axes, uint8 (size, size, 3); see ``scatter_figure``."""
    return render(scatter_figure(points, reference, step, size))


def picture(samples: torch.Tensor, reference=None, nrow: int | None = None, step: int | None = None) -> np.ndarray:
    """A readable grid for images, a scatter plot for points (``reference``: the real data, see scatter_figure)."""
    return readable(image_grid(samples, nrow)) if samples.dim() == 4 else scatter(samples, reference, step=step)


def save_png(array: np.ndarray, path: Path) -> None:
    """A figure as PNG, enlarged to a readable size (individual samples are written elsewhere, at native size)."""
    save_image(Image.fromarray(readable(array)), path, format="PNG")
