"""`genexp sample seeds=0-99`: one PNG per seed with the pixels the official generate.py writes.

stylegan2-ada-pytorch's generate.py draws z = np.random.RandomState(seed).randn(1, z_dim), runs
G_ema(z, c, truncation_psi, noise_mode) and writes (img * 127.5 + 128).clamp(0, 255) as uint8 to
seed%04d.png. Doing the same here means a paper's figure (its network, its seeds) comes out the same.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genexp.errors import UserError
from genexp.files import save_image

MAX_SEEDS = 100_000
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+))?\s*$")


def parse_seeds(value) -> list[int]:
    """`5`, `0-99`, `1,4,10-12` or a list, as generate.py's --seeds reads them."""
    items = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") and \
        not isinstance(value, str) else str(value).split(",")
    seeds: list[int] = []
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            bounds = (item, item)
        else:
            m = _RANGE.match(str(item))
            if not m:
                raise UserError(f"seeds={value}: use a seed, a range or a list, e.g. seeds=0-99 or seeds=[1,5,10-12]")
            bounds = (int(m.group(1)), int(m.group(2) or m.group(1)))
        if bounds[0] < 0 or bounds[1] < bounds[0] or bounds[1] >= 2 ** 32:
            raise UserError(f"seeds={value}: {bounds[0]}-{bounds[1]} is not a range of seeds in 0..2^32-1")
        if len(seeds) + bounds[1] - bounds[0] + 1 > MAX_SEEDS:
            raise UserError(f"seeds={value}: more than {MAX_SEEDS} images; ask for fewer")
        seeds.extend(range(bounds[0], bounds[1] + 1))
    if not seeds:
        raise UserError(f"seeds={value}: no seeds")
    return seeds


def official_latent(seed: int, z_dim: int) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim)).float()


def to_uint8(img: torch.Tensor) -> np.ndarray:
    """(1, C, H, W) in about [-1, 1] -> H x W x C uint8, rounding as generate.py does (a cast after +128)."""
    return (img.permute(0, 2, 3, 1) * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].cpu().numpy()


@torch.no_grad()
def seed_images(G, seeds: list[int], label: int | None, psi: float, noise_mode: str, out: Path, note) -> list[Path]:
    if not hasattr(G, "styles"):
        raise UserError("seeds= draws z as the official generate.py does, for a style-based generator "
                        f"(model=stylegan2); this checkpoint's is {type(G).__name__}: use n=... instead")
    if G.num_classes and label is None:
        raise UserError(f"seeds= with a conditional network: add class=<0..{G.num_classes - 1}> (as generate.py "
                        "asks for --class)")
    G.eval()
    device = next(G.parameters()).device
    labels = torch.tensor([label], device=device) if label is not None else None
    paths = []
    for i, seed in enumerate(seeds):
        img = G(official_latent(seed, G.z_dim).to(device), labels, psi=psi, noise_mode=noise_mode)
        pixels = to_uint8(img.float())
        path = out / f"seed{seed:04d}.png"
        save_image(Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels), path)
        paths.append(path)
        if (i + 1) % 100 == 0:
            note(f"{i + 1}/{len(seeds)} seeds written")
    return paths
