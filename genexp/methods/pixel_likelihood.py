"""p(x|z) for a VAE's decoder, per pixel: the one place its distribution math lives.

Each likelihood reads ``params_per_pixel`` decoder outputs per pixel, shaped (N, P, C, H, W), and
scores images x in [-1, 1]. ``log_prob`` sums over pixels: nats per example.

- categorical: a softmax over the data's ``levels`` (Tomczak's digits VAE); a discrete likelihood.
- bernoulli: a logit per pixel of the image thresholded at mid-grey (x > 0). On binary data (levels=2)
  that is the data itself; on multi-level data it scores the binarised image, a different and easier
  problem, so its NLL keys carry ``_binarized`` and never sit beside the multi-level numbers.
- gaussian: a mean per pixel and a scale (learned per pixel, or fixed). On discrete data it scores the
  Gaussian's mass over each level's bin (the outer bins reach to +-inf, as PixelCNN++ does with its
  logistic), a discrete likelihood; on continuous data (levels=null) a density, keys ``_density``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genexp.data.discrete import from_levels, to_levels
from genexp.errors import UserError

LIKELIHOODS = ("categorical", "bernoulli", "gaussian")


class Categorical:
    suffix = ""

    def __init__(self, levels: int):
        self.levels = int(levels)
        self.params_per_pixel = self.levels

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logp = F.log_softmax(params.float(), dim=1)
        return logp.gather(1, to_levels(x, self.levels).unsqueeze(1)).flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        values = from_levels(torch.arange(self.levels, device=params.device), self.levels)
        return (F.softmax(params.float(), dim=1) * values.view(1, -1, 1, 1, 1)).sum(1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        probs = F.softmax(params.float(), dim=1).movedim(1, -1)  # (N, C, H, W, levels)
        flat = probs.reshape(-1, self.levels)
        if generator is not None:
            flat = flat.cpu()
        k = torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])
        return from_levels(k, self.levels).to(params.device)


class Bernoulli:
    params_per_pixel = 1

    def __init__(self, levels: int | None):
        self.suffix = "" if levels == 2 else "_binarized"

    @staticmethod
    def binarize(x: torch.Tensor) -> torch.Tensor:
        return (x > 0).float()

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        logits = params[:, 0].float()
        return -F.binary_cross_entropy_with_logits(logits, self.binarize(x), reduction="none").flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(params[:, 0].float()) * 2 - 1

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = torch.sigmoid(params[:, 0].float())
        if generator is not None:
            return (torch.bernoulli(p.cpu(), generator=generator) * 2 - 1).to(params.device)
        return torch.bernoulli(p) * 2 - 1


class Gaussian:
    MIN_LOG_SCALE = -7.0  # keeps the learned scale's gradients finite when the decoder grows sure

    def __init__(self, levels: int | None, scale: str | float = "learned"):
        self.levels = int(levels) if levels else None
        self.suffix = "" if self.levels else "_density"
        self.learned = scale == "learned"
        if not self.learned:
            try:
                scale = float(scale)
            except (TypeError, ValueError):
                scale = -1.0
            if not scale > 0:
                raise UserError(f"model.gaussian_scale={scale}: use learned or a positive standard deviation "
                                "(in units of images in [-1, 1], e.g. 0.1)")
            self.fixed_log_scale = math.log(scale)
        self.params_per_pixel = 2 if self.learned else 1

    def mean_and_log_scale(self, params: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = params[:, 0].float()
        if self.learned:
            return mean, params[:, 1].float().clamp(min=self.MIN_LOG_SCALE)
        return mean, torch.full_like(mean, self.fixed_log_scale)

    def log_prob(self, params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mean, log_scale = self.mean_and_log_scale(params)
        if self.levels is None:
            z = (x - mean) * torch.exp(-log_scale)
            return (-0.5 * z ** 2 - log_scale - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)
        k = to_levels(x, self.levels)
        half = 1.0 / (self.levels - 1)  # half the spacing of the levels in [-1, 1]
        centre = from_levels(k, self.levels)
        inv = torch.exp(-log_scale)
        inf = torch.full_like(mean, math.inf)
        lo = torch.where(k == 0, -inf, (centre - half - mean) * inv)
        hi = torch.where(k == self.levels - 1, inf, (centre + half - mean) * inv)
        return log_normal_mass(lo, hi).flatten(1).sum(1)

    def mean(self, params: torch.Tensor) -> torch.Tensor:
        return self.mean_and_log_scale(params)[0].clamp(-1, 1)

    def sample(self, params: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        mean, log_scale = self.mean_and_log_scale(params)
        if generator is not None:
            noise = torch.randn(mean.shape, generator=generator).to(mean.device)
        else:
            noise = torch.randn_like(mean)
        x = mean + noise * log_scale.exp()
        # Rounding a draw to its bin (outer bins open) is a draw from the discretised Gaussian.
        return from_levels(to_levels(x, self.levels), self.levels) if self.levels else x.clamp(-1, 1)


def log_normal_mass(lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """log(Phi(hi) - Phi(lo)) for standardised bounds lo < hi (either may be infinite), in float64 and
    on the tail where both CDFs are small (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)), so narrow or far bins
    keep their digits."""
    lo, hi = lo.double(), hi.double()
    flip = lo > 0
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_a, log_b = torch.special.log_ndtr(a), torch.special.log_ndtr(b)
    return (log_b + log1mexp(log_b - log_a)).float()


def log1mexp(d: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(-d)) for d >= 0, accurate at both ends (Maechler 2012)."""
    d = d.clamp(min=torch.finfo(d.dtype).tiny)
    return torch.where(d < math.log(2), torch.log(-torch.expm1(-d)), torch.log1p(-torch.exp(-d)))


def build_likelihood(name: str, levels: int | None, gaussian_scale: str | float = "learned"):
    if name not in LIKELIHOODS:
        raise UserError(f"model.decoder={name}: use one of {', '.join(LIKELIHOODS)}")
    if name == "categorical":
        if not levels:
            raise UserError("model.decoder=categorical scores the data's discrete levels and data.levels is null: "
                            "use data=digits8 (or set data.levels), or model.decoder=gaussian for continuous data")
        return Categorical(levels)
    if name == "bernoulli":
        return Bernoulli(levels)
    return Gaussian(levels, gaussian_scale)
