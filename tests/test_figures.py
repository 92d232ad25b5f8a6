"""Figures to read: enlarged grids, scatter plots with a fixed frame, labelled rows, strips without a
lonely frame, and W&B captions. In-process: the viz functions are called directly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genexp.commands.sample_styles import strip
from genexp.data.digits import DigitsDataset
from genexp.data.toy import GridDataset, RingDataset
from genexp.viz import (
    balanced_columns,
    image_grid,
    picture,
    plot_limits,
    projection_figure,
    reconstruction_figure,
    save_png,
    scatter_figure,
)


@pytest.fixture(scope="module")
def digits():
    return DigitsDataset(resolution=16).x[:64]


def blocks_of(big: np.ndarray, small: np.ndarray, f: int) -> bool:
    """Every pixel of ``small`` is an f x f block of ``big`` (the definition of nearest enlargement)."""
    h, w = small.shape[:2]
    if big.shape[:2] != (h * f, w * f):
        return False
    tiles = big.reshape(h, f, w, f, *big.shape[2:])
    return all((tiles[:, i, :, j] == small).all() for i in range(f) for j in range(f))


def test_saved_grid_of_16px_digits_is_enlarged_by_an_exact_integer_factor(digits, tmp_path):
    native = image_grid(digits)  # 8 x 8 digits of 16 px, 2 px pads: 146 px
    assert native.shape == (146, 146)
    save_png(native, tmp_path / "grid.png")
    saved = np.asarray(Image.open(tmp_path / "grid.png"))
    assert saved.shape[1] >= 512
    f = saved.shape[1] // 146
    assert f == 4 and saved.shape == (146 * f, 146 * f)  # ceil(512 / 146) = 4
    assert blocks_of(saved, native, f)
    assert blocks_of(picture(digits), native, f)  # what W&B and samples/step_*.png get


def test_wide_figures_and_tensors_keep_their_size(tmp_path):
    wide = np.arange(600 * 20, dtype=np.uint8).reshape(20, 600)
    save_png(wide, tmp_path / "wide.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "wide.png")), wide)
    tall = np.zeros((5000, 10), np.uint8)  # enlarging stops before the longer side passes 4096 px
    save_png(tall, tmp_path / "tall.png")
    assert Image.open(tmp_path / "tall.png").size == (10, 5000)


def ring_points(n=400, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) * 0.3


@pytest.mark.parametrize("dataset", [RingDataset(num_samples=3000), GridDataset(num_samples=3000)],
                         ids=["ring", "grid"])
def test_scatter_frame_is_the_datas_extent_whatever_the_samples(dataset):
    modes = dataset.modes
    figs = [scatter_figure(ring_points(seed=0) * s, dataset, step=step) for s, step in ((1, 10), (20, 20))]
    limits = [(f.axes[0].get_xlim(), f.axes[0].get_ylim()) for f in figs]
    assert limits[0] == limits[1]  # far-flung samples move nothing
    (x0, x1), (y0, y1) = limits[0]
    lo, hi = modes.min(0).values.tolist(), modes.max(0).values.tolist()
    assert x0 < lo[0] and x1 > hi[0] and y0 < lo[1] and y1 > hi[1]  # every mode inside the frame
    assert x1 - x0 == pytest.approx(y1 - y0) and x1 - x0 < 2 * (hi[0] - lo[0])  # square, not much more than the data
    ax = figs[1].axes[0]
    assert ax.get_title().startswith("step 20") and "outside" in ax.get_title()
    assert len(ax.get_xticks()) > 2 and len(ax.get_yticks()) > 2
    marked = [c for c in ax.collections if c.get_label() == "modes"]
    assert len(marked) == 1 and np.allclose(marked[0].get_offsets(), modes.numpy())
    # real points alone (a tensor, no modes): their extent is the frame
    (x0, x1), _ = scatter_figure(ring_points() * 20, dataset.x[:500]).axes[0].get_xlim(), None
    assert x0 < float(dataset.x[:500, 0].min()) and x1 > float(dataset.x[:500, 0].max())


def test_plot_limits_closed_form():
    # a ring of radius 1 with std 0.01: half-width 1 + max(0.25 * 1, 6 * 0.01, 0.1) = 1.25 about 0
    ring = RingDataset(num_samples=10, modes=4, radius=1.0, std=0.01)
    (x0, x1), (y0, y1) = plot_limits(ring.modes, 0.01)
    assert (x0, x1) == pytest.approx((-1.25, 1.25), abs=1e-6) and (y0, y1) == pytest.approx((-1.25, 1.25), abs=1e-6)
    # without modes the real points set the frame, and a point off to one side widens both axes alike
    (x0, x1), (y0, y1) = plot_limits(reference=torch.tensor([[0.0, 0.0], [4.0, 2.0]]))
    assert (x0, x1) == pytest.approx((-0.5, 4.5)) and (y0, y1) == pytest.approx((-1.5, 3.5))


def test_reconstruction_figure_has_a_labelled_margin(digits):
    real, recon = digits[:16], -digits[:16]
    fig = reconstruction_figure(real, recon, 4)
    # 4 real rows and 4 reconstruction rows of 4 digits: 8 * 18 + 2 = 146 px tall, 4 * 18 + 2 = 74 wide
    native = image_grid(torch.cat([t for i in range(0, 16, 4) for t in (real[i:i + 4], recon[i:i + 4])]), 4)
    assert native.shape == (146, 74)
    f = 7  # ceil(512 / 74)
    margin = fig.shape[1] - 74 * f
    assert fig.shape[0] == 146 * f and 60 < margin < 250  # room for "reconstruction", not half the figure
    assert blocks_of(fig[:, margin:], native, f)  # the images themselves, untouched
    band = 18 * f
    for row in range(8):  # a label in each row's band of the margin: dark text on white
        ink = fig[2 * f + row * band: 2 * f + (row + 1) * band, :margin] < 128
        assert ink.any(), row
    assert (fig[:, :margin] == 255).mean() > 0.8


def test_projection_figure_labels_target_and_projection_in_colour():
    target, image = torch.zeros(1, 3, 16, 16), torch.ones(1, 3, 16, 16)
    fig = projection_figure(target, image)
    f = 26  # one 16 px image and its pads: 20 px wide, ceil(512 / 20) = 26
    assert fig.ndim == 3 and fig.shape[2] == 3 and fig.shape[0] == (2 * 18 + 2) * f
    margin = fig.shape[1] - 20 * f
    assert margin > 40
    half = fig.shape[0] // 2
    for band in (fig[:half, :margin], fig[half:, :margin]):  # "target" above, "projection" below
        assert (band < 128).any()
    assert (fig[2 * f:18 * f, margin + 2 * f:margin + 18 * f] == 128).all()  # the target (0 in [-1, 1])
    assert (fig[20 * f:36 * f, margin + 2 * f:margin + 18 * f] == 255).all()  # then the projection


@pytest.mark.parametrize("n", range(2, 21))
def test_interpolation_layout_leaves_no_frame_alone(n):
    for preferred in range(1, n + 2):
        c = balanced_columns(n, preferred)
        assert 2 <= c <= n and (n % c == 0 or n % c >= 2), (n, preferred, c)
    frames = torch.zeros(n, 1, 4, 4)
    c = balanced_columns(n, 4)
    assert strip(frames, 4).shape[1] == c * 6 + 2


def test_three_keyframes_of_four_frames_fill_a_square():
    # keyframes=3 frames=4: 9 images, which used to be 4 + 4 + 1 alone
    assert strip(torch.zeros(9, 1, 4, 4), 4).shape == (3 * 6 + 2, 3 * 6 + 2)


def test_wandb_caption_names_step_and_model(tmp_path):
    pytest.importorskip("wandb")
    from omegaconf import OmegaConf

    from genexp.logger.console import Console
    from genexp.logger.run_logger import RunLogger

    logged = []

    class Run:
        def log(self, values, step):
            logged.append((values, step))

    logger = RunLogger(tmp_path, Console(), None, OmegaConf.create({"model": {"name": "dcgan"}}))
    logger.wandb, logger.log_images = Run(), True
    logger.image(500, "samples", np.zeros((8, 8), np.uint8))
    (values, step), = logged
    assert step == 500 and values["samples"]._caption == "step 500 · dcgan"
    logger.wandb = None
    logger.close()
