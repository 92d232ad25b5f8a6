"""Perceptual path length (Karras et al. 2019), computed by torchmetrics' perceptual_path_length.

PPL = E[ d(G(z1), G(z1 + eps (z2 - z1))) / eps^2 ] over latent pairs, the extreme 1 % of distances
discarded at each end. ``d`` is LPIPS (vgg, as StyleGAN; needs torchvision and its weights) or,
offline, a feature-space distance through one of genexp's extractors: the squared distance between
unit-normalised features, which is what LPIPS is with uniform channel weights.
"""

from __future__ import annotations

import importlib
from unittest import mock

import torch
from torch import nn

LPIPS_NETS = ("vgg", "alex", "squeeze")


class FeatureDistance(nn.Module):
    """d(a, b) = || f(a)/|f(a)| - f(b)/|f(b)| ||^2 for images in [-1, 1]."""

    def __init__(self, extractor: nn.Module):
        super().__init__()
        self.extractor = extractor

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        fa, fb = self.extractor(a).flatten(1).float(), self.extractor(b).flatten(1).float()
        fa = fa / fa.norm(dim=1, keepdim=True).clamp_min(1e-10)
        fb = fb / fb.norm(dim=1, keepdim=True).clamp_min(1e-10)
        return (fa - fb).pow(2).sum(1)


class PathGenerator(nn.Module):
    """A method's generator in torchmetrics' GeneratorType shape: ``sample(n)`` draws latents (from
    our seeded generator), ``forward(z[, labels])`` gives images in [0, 255]."""

    def __init__(self, method, ema: bool, generator: torch.Generator):
        super().__init__()
        self.method, self.ema, self.rng = method, ema, generator  # the method is not a submodule: no .to()
        if method.num_classes:
            self.num_classes = int(method.num_classes)

    def sample(self, num_samples: int) -> torch.Tensor:
        return self.method.latents(num_samples, self.method.z_dim, self.rng)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        images = self.method.decode(z, labels, ema=self.ema).float().clamp(-1, 1)
        return (images + 1) * 127.5

    def to(self, *args, **kwargs):  # torchmetrics moves the generator; the method is already placed
        return self


def build_lpips(net: str, resize: int | None) -> nn.Module:
    """torchmetrics' LPIPS network (pretrained linear heads it ships, backbone from torchvision)."""
    from torchmetrics.functional.image.lpips import _LPIPS

    return _LPIPS(pretrained=True, net=net, resize=resize).eval().requires_grad_(False)


def path_length(method, ema: bool, sim_net: nn.Module, num_samples: int, epsilon: float, interpolation: str,
                lower_discard: float, upper_discard: float, generator: torch.Generator, device: torch.device,
                batch_size: int = 64) -> tuple[float, float]:
    """(mean, std) of the path lengths, via torchmetrics."""
    # the package re-exports the function under the module's name: fetch the module itself
    tm_ppl = importlib.import_module("torchmetrics.functional.image.perceptual_path_length")

    gen = PathGenerator(method, ema, generator)
    # torchmetrics refuses to run without torchvision even when the similarity net needs none.
    with mock.patch.object(tm_ppl, "_TORCHVISION_AVAILABLE", True):
        mean, std, _ = tm_ppl.perceptual_path_length(
            gen, num_samples=num_samples, conditional=bool(method.num_classes), batch_size=batch_size,
            interpolation_method=interpolation, epsilon=epsilon, resize=None, lower_discard=lower_discard,
            upper_discard=upper_discard, sim_net=sim_net, device=device)
    return float(mean), float(std)
