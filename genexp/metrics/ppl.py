"""Perceptual path length (Karras et al. 2019), computed by torchmetrics' perceptual_path_length.

PPL = E[ d(G(z1), G(z1 + eps (z2 - z1))) / eps^2 ] over latent pairs, the extreme 1 % of distances
discarded at each end. ``d`` is LPIPS (vgg, as StyleGAN; metrics/lpips_net.py, torchvision's ImageNet weight file) or,
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
    """A method's generator in torchmetrics' GeneratorType shape.

    torchmetrics draws latent1 = sample(n), latent2 = sample(n) and measures the images at latent1
    and latent1 + eps (latent2 - latent1). To walk the paper's paths instead, the first call returns
    the point p = interp(a, b, t) of a random path a -> b and the second p + (interp(a, b, t + eps) - p)
    / eps, so torchmetrics' step lands exactly on interp(a, b, t + eps): slerp in z, lerp in w;
    t = 0 (``end``) or uniform (``full``). A style-based G renders with constant noise, so that the
    two images differ by the latent step alone; ``crop`` keeps the paper's central face crop."""

    def __init__(self, method, ema: bool, generator: torch.Generator, epsilon: float, space: str = "z",
                 sampling: str = "end", interpolation: str = "slerp", crop: bool = False):
        super().__init__()
        self.method, self.ema, self.rng = method, ema, generator  # the method is not a submodule: no .to()
        self.G = getattr(method, "G_ema" if ema else "G", None)
        self.epsilon, self.space, self.sampling, self.crop = epsilon, space, sampling, crop
        self.interp = slerp if interpolation == "slerp" else torch.lerp
        self.styled = self.G is not None and hasattr(self.G, "styles")
        if space == "w" and not self.styled:
            raise ValueError(f"PPL in w needs a style-based generator; {type(self.G).__name__} has no w")
        if method.num_classes:
            self.num_classes = int(method.num_classes)
        self._second: torch.Tensor | None = None

    def sample(self, num_samples: int) -> torch.Tensor:
        if self._second is not None:  # torchmetrics' second call: the far end of each eps-step
            second, self._second = self._second, None
            return second
        a = self.method.latents(num_samples, self.method.z_dim, self.rng)
        b = self.method.latents(num_samples, self.method.z_dim, self.rng)
        if self.space == "w":
            with torch.no_grad():
                a, b = self.G.mapping(a, None)[:, 0], self.G.mapping(b, None)[:, 0]
        t = torch.rand(num_samples, 1, generator=self.rng).to(a.device) if self.sampling == "full" \
            else torch.zeros(num_samples, 1, device=a.device)
        p = self.interp(a, b, t)
        self._second = p + (self.interp(a, b, t + self.epsilon) - p) / self.epsilon
        return p

    def forward(self, latent: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if not self.styled:
            images = self.method.decode(latent, labels, ema=self.ema)
        else:
            if self.space == "w":
                ws = latent.unsqueeze(1).expand(-1, self.G.num_ws, -1)
            else:
                c = self.G.one_hot(labels, len(latent), latent.device)
                ws = self.G.mapping(latent, c)
            images = self.G.synthesis(ws, noise_mode="const")
        images = images.float().clamp(-1, 1)
        if self.crop:  # the central face region, as StyleGAN's PPL on FFHQ
            c = images.shape[2] // 8
            images = images[:, :, c * 3:c * 7, c * 2:c * 6]
        return (images + 1) * 127.5

    def to(self, *args, **kwargs):  # torchmetrics moves the generator; the method is already placed
        return self


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation of the directions, with the norm interpolated linearly (the StyleGAN
    PPL's slerp on normalised z)."""
    a_n, b_n = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    d = (a_n * b_n).sum(-1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7)
    omega = torch.acos(d)
    c = b_n - d * a_n
    c = c / c.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    direction = a_n * torch.cos(omega * t) + c * torch.sin(omega * t)
    return direction * torch.lerp(a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True), t)


def path_length(method, ema: bool, sim_net: nn.Module, num_samples: int, epsilon: float, interpolation: str,
                lower_discard: float, upper_discard: float, generator: torch.Generator, device: torch.device,
                space: str = "z", sampling: str = "end", crop: bool = False,
                batch_size: int = 64) -> tuple[float, float]:
    """(mean, std) of the path lengths, via torchmetrics."""
    # the package re-exports the function under the module's name: fetch the module itself
    tm_ppl = importlib.import_module("torchmetrics.functional.image.perceptual_path_length")

    gen = PathGenerator(method, ema, generator, epsilon, space, sampling, interpolation, crop)
    # torchmetrics refuses to run without torchvision even when the similarity net needs none.
    with mock.patch.object(tm_ppl, "_TORCHVISION_AVAILABLE", True):
        mean, std, _ = tm_ppl.perceptual_path_length(
            gen, num_samples=num_samples, conditional=bool(method.num_classes), batch_size=batch_size,
            interpolation_method="lerp", epsilon=epsilon, resize=None, lower_discard=lower_discard,
            upper_discard=upper_discard, sim_net=sim_net, device=device)
    return float(mean), float(std)
