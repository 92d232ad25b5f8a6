"""The ImageNet feature stacks LPIPS compares, in plain torch: no torchvision.

torchvision's AlexNet, VGG16 and SqueezeNet 1.1 ``features``, layer for layer and index for index,
so that torchvision's weight files (plain state dicts: ``features.0.weight`` ...) load as they are
(their ``classifier.*`` keys are not needed). LPIPS reads the outputs of the ReLUs listed in
``taps``, the layers the LPIPS paper (Zhang et al. 2018) and its official code use.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

URL = "https://download.pytorch.org/models/"


class Fire(nn.Module):
    """SqueezeNet's block: a 1x1 squeeze, then 1x1 and 3x3 expansions side by side."""

    def __init__(self, cin: int, squeeze: int, expand1x1: int, expand3x3: int):
        super().__init__()
        self.squeeze, self.squeeze_activation = nn.Conv2d(cin, squeeze, 1), nn.ReLU()
        self.expand1x1, self.expand1x1_activation = nn.Conv2d(squeeze, expand1x1, 1), nn.ReLU()
        self.expand3x3, self.expand3x3_activation = nn.Conv2d(squeeze, expand3x3, 3, padding=1), nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat([self.expand1x1_activation(self.expand1x1(x)),
                          self.expand3x3_activation(self.expand3x3(x))], 1)


def alexnet() -> nn.Sequential:
    """The "one weird trick" AlexNet torchvision trains (64-192-384-256-256 channels)."""
    return nn.Sequential(
        nn.Conv2d(3, 64, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))


def vgg16() -> nn.Sequential:
    """VGG configuration D without batch norm: 13 3x3 convolutions in five blocks, each closed by a 2x2 max pool."""
    layers: list[nn.Module] = []
    cin = 3
    for block in ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512)):
        for cout in block:
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU()]
            cin = cout
        layers.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*layers)


def squeezenet1_1() -> nn.Sequential:
    # ceil_mode pools, as torchvision's (and the Caffe original's) SqueezeNet 1.1
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, stride=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(256, 48, 192, 192), Fire(384, 48, 192, 192), Fire(384, 64, 256, 256), Fire(512, 64, 256, 256))


@dataclass(frozen=True)
class Spec:
    build: Callable[[], nn.Sequential]
    file: str  # torchvision's ImageNet weight file, as torch hub caches it
    taps: tuple[int, ...]  # indices in ``features`` whose outputs LPIPS compares
    channels: tuple[int, ...]  # their channel counts: the LPIPS heads' inputs
    min_size: int  # the smallest square input whose last tap is still 1x1 or more

    @property
    def url(self) -> str:
        return URL + self.file


SPECS = {
    "alex": Spec(alexnet, "alexnet-owt-7be5be79.pth", (1, 4, 7, 9, 11), (64, 192, 384, 256, 256), 31),
    "vgg": Spec(vgg16, "vgg16-397923af.pth", (3, 8, 15, 22, 29), (64, 128, 256, 512, 512), 16),
    "squeeze": Spec(squeezenet1_1, "squeezenet1_1-b8a52dc0.pth", (1, 4, 7, 9, 10, 11, 12),
                    (64, 128, 256, 384, 384, 512, 512), 17),
}


class Backbone(nn.Module):
    """One of SPECS' stacks as ``features`` (torchvision's key names); returns the tapped activations."""

    def __init__(self, net: str):
        super().__init__()
        spec = SPECS[net]
        self.features, self.taps = spec.build(), spec.taps

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features[:self.taps[-1] + 1]):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out
