"""genexp's own small classifiers: feature extractors for data where Inception means little.

They take images in [-1, 1] at any resolution and channel count, and see them as
gray at the size they were trained at (16x16 digits, 28x28 MNIST). ``features`` is the penultimate layer
(for FID / KID), ``logits`` the class scores (for IS).
"""

from __future__ import annotations

import torch
from torch import nn

from genexp.metrics.resize import resize


class SmallClassifier(nn.Module):
    """Gray images at ``input_resolution`` -> ``num_features`` -> class logits."""

    input_resolution = 16
    num_features = 128
    resize_filter = "bilinear"  # the filter the shipped weights were evaluated with

    def __init__(self, body: nn.Sequential, num_classes: int = 10):
        super().__init__()
        self.body = body
        self.head = nn.Linear(self.num_features, num_classes)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[1] == 3:
            x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        return resize(x, self.input_resolution, self.resize_filter)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.prepare(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class DigitsLeNet(SmallClassifier):
    """For the 8x8 scikit-learn digits seen at 16x16."""

    input_resolution = 16

    def __init__(self, num_classes: int = 10):
        super().__init__(nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 4 * 4, self.num_features), nn.ReLU(),
        ), num_classes)


class MnistLeNet(SmallClassifier):
    """For MNIST-like 28x28 digits (also each channel of Stacked MNIST)."""

    input_resolution = 28

    def __init__(self, num_classes: int = 10):
        super().__init__(nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 14
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 7
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 3
            nn.Flatten(), nn.Linear(64 * 3 * 3, self.num_features), nn.ReLU(),
        ), num_classes)


def save_classifier(net: nn.Module, path, info: dict) -> str:
    """The weights as shipped (plain tensors, loadable with weights_only=True), and beside them a
    JSON with ``info`` and the weights' sha256, which is part of every metric key's identity."""
    import hashlib
    import json
    from pathlib import Path

    path = Path(path)
    from genexp.files import atomic_write_text, save_torch

    save_torch({k: v.clone() for k, v in net.state_dict().items()}, path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    atomic_write_text(path.with_suffix(".json"), json.dumps({**info, "sha256": digest}, indent=2) + "\n")
    return digest
