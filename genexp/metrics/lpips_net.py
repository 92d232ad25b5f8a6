"""LPIPS as the metrics use it: torchmetrics' (needs torchvision) on images in [-1, 1]."""

from __future__ import annotations

import torch


def lpips_metric(net: str):
    """torchmetrics' LPIPS on images in [-1, 1], mean over the pairs it is given."""
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=net)


def rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
