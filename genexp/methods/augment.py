"""Differentiable augmentation of D's inputs (DiffAugment, Zhao et al. 2020).

The same kind of random transform goes on real and fake images, in D's and G's steps,
so D cannot tell them apart by it and gradients still reach G through it. Policy: a
list of ``color`` (brightness +U(-.5,.5), saturation x U(0,2), contrast x U(.5,1.5)),
``translation`` (up to 1/8 of the size, zero fill) and ``cutout`` (a zeroed square of
half the size). Randomness comes from torch's generator: a fixed seed repeats a run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from genexp.errors import UserError


def per_sample(x: torch.Tensor) -> torch.Tensor:
    return torch.rand(len(x), 1, 1, 1, device=x.device, dtype=x.dtype)


def color(x: torch.Tensor) -> torch.Tensor:
    x = x + (per_sample(x) - 0.5)
    mean = x.mean(1, keepdim=True)
    x = (x - mean) * (per_sample(x) * 2) + mean
    mean = x.mean((1, 2, 3), keepdim=True)
    return (x - mean) * (per_sample(x) + 0.5) + mean


def translation(x: torch.Tensor, ratio: float = 0.125) -> torch.Tensor:
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    ty = torch.randint(-sh, sh + 1, (n, 1), device=x.device)
    tx = torch.randint(-sw, sw + 1, (n, 1), device=x.device)
    padded = F.pad(x, [sw, sw, sh, sh])
    # out[i, j] = in[i - ty, j - tx]; rows and columns outside the image read the zero padding
    rows = torch.arange(h, device=x.device)[None] - ty + sh
    cols = torch.arange(w, device=x.device)[None] - tx + sw
    out = padded[torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return out.permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, ratio: float = 0.5) -> torch.Tensor:
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h, (n, 1), device=x.device) - ch // 2
    left = torch.randint(0, w, (n, 1), device=x.device) - cw // 2
    rows = torch.arange(h, device=x.device)[None]
    cols = torch.arange(w, device=x.device)[None]
    inside = ((rows >= top) & (rows < top + ch))[:, :, None] & ((cols >= left) & (cols < left + cw))[:, None, :]
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout,
}


def parse_policy(policy) -> list[Callable[[torch.Tensor], torch.Tensor]]:
    """A list of names (``augment=[color,cutout]``) or one comma-separated string."""
    items = policy.split(",") if isinstance(policy, str) else list(policy or [])
    names = [str(p).strip() for p in items if str(p).strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"unknown augmentation {unknown[0]!r}: use {', '.join(POLICIES)}")
    return [POLICIES[p] for p in names]


def check_policy(policy, data) -> None:
    """model.method.augment against the composed data config: known names, on image data."""
    from omegaconf import OmegaConf

    policy = OmegaConf.to_container(policy) if OmegaConf.is_list(policy) else policy
    if data.kind != "image":
        raise UserError(f"model.method.augment={policy}: augmentations work on images and data={data.name} is "
                        f"{data.kind}")
    try:
        parse_policy(policy)
    except ValueError as exc:
        raise UserError(f"model.method.augment={policy}: {exc}") from None


def augment(x: torch.Tensor, transforms: list[Callable[[torch.Tensor], torch.Tensor]]) -> torch.Tensor:
    for t in transforms:
        x = t(x)
    return x.contiguous() if transforms else x
