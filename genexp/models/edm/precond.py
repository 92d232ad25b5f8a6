"""Preconditioning and training losses of EDM (Karras et al. 2022, Table 1), and DDPM / NCSN in its frame.

A denoiser D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x; c_noise(sigma)) wraps a raw net F.
Training draws sigma from the formulation's distribution and minimises
lambda(sigma) |D(y + sigma n; sigma) - y|^2, summed over pixels, averaged over the batch (as EDM's
training loop does). The sampler then only ever calls D.

- edm: c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2),
  c_noise = ln(sigma) / 4; ln sigma ~ N(P_mean, P_std^2); lambda = (sigma^2 + sd^2) / (sigma sd)^2 (sd: sigma_data).
- vp (DDPM++ of Song et al. 2021): c_skip = 1, c_out = -sigma, c_in = 1 / sqrt(sigma^2 + 1),
  c_noise = (M - 1) t(sigma); t ~ U(epsilon_t, 1), sigma(t) = sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1);
  lambda = 1 / sigma^2.
- ve (NCSN++): c_skip = 1, c_out = sigma, c_in = 1, c_noise = ln(sigma / 2); ln sigma ~ U(ln sigma_min, ln sigma_max);
  lambda = 1 / sigma^2.
"""

from __future__ import annotations

import math

import torch
from torch import nn

KINDS = ("edm", "vp", "ve")


class Precond(nn.Module):
    """D(x; sigma, labels) around ``self.model`` (the raw net; the name EDM's state dicts use)."""

    sigma_min: float = 0.0
    sigma_max: float = math.inf

    def __init__(self, model: nn.Module, label_dim: int = 0):
        super().__init__()
        self.model = model
        self.label_dim = int(label_dim)

    def scalings(self, sigma: torch.Tensor) -> tuple:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        """``sigma``: a number or one per example; ``class_labels``: one-hot (N, label_dim) rows (a
        conditional net given none sees all-zero labels)."""
        x = x.to(torch.float32)
        sigma = torch.as_tensor(sigma, device=x.device).to(torch.float32).reshape(-1, 1, 1, 1)
        if not self.label_dim:
            class_labels = None
        elif class_labels is None:
            class_labels = torch.zeros([1, self.label_dim], device=x.device)
        else:
            class_labels = class_labels.to(torch.float32).reshape(-1, self.label_dim)
        c_skip, c_out, c_in, c_noise = self.scalings(sigma)
        F_x = self.model(c_in * x, c_noise.flatten(), class_labels, augment_labels)
        return c_skip * x + c_out * F_x.to(torch.float32)

    # training

    def sample_sigma(self, n: int, device: torch.device, loss) -> torch.Tensor:
        """(n, 1, 1, 1) noise levels from the formulation's training distribution (global RNG)."""
        raise NotImplementedError

    def loss_weight(self, sigma: torch.Tensor, loss) -> torch.Tensor:
        return 1 / sigma ** 2


class EDMPrecond(Precond):
    def __init__(self, model: nn.Module, label_dim: int = 0, sigma_data: float = 0.5, sigma_min: float = 0.0,
                 sigma_max: float = math.inf):
        super().__init__(model, label_dim)
        self.sigma_data, self.sigma_min, self.sigma_max = float(sigma_data), float(sigma_min), float(sigma_max)

    def scalings(self, sigma):
        sd2 = self.sigma_data ** 2
        c_skip = sd2 / (sigma ** 2 + sd2)
        c_out = sigma * self.sigma_data / (sigma ** 2 + sd2).sqrt()
        c_in = 1 / (sd2 + sigma ** 2).sqrt()
        return c_skip, c_out, c_in, sigma.log() / 4

    def sample_sigma(self, n, device, loss):
        return (torch.randn([n, 1, 1, 1], device=device) * float(loss.P_std) + float(loss.P_mean)).exp()

    def loss_weight(self, sigma, loss):
        return (sigma ** 2 + self.sigma_data ** 2) / (sigma * self.sigma_data) ** 2


class VPPrecond(Precond):
    def __init__(self, model: nn.Module, label_dim: int = 0, beta_d: float = 19.9, beta_min: float = 0.1,
                 M: int = 1000, epsilon_t: float = 1e-5):
        super().__init__(model, label_dim)
        self.beta_d, self.beta_min, self.M, self.epsilon_t = float(beta_d), float(beta_min), int(M), float(epsilon_t)
        self.sigma_min = float(self.sigma(epsilon_t))
        self.sigma_max = float(self.sigma(1))

    def sigma(self, t):
        t = torch.as_tensor(t)
        return ((0.5 * self.beta_d * t ** 2 + self.beta_min * t).exp() - 1).sqrt()

    def sigma_inv(self, sigma):
        sigma = torch.as_tensor(sigma)
        return ((self.beta_min ** 2 + 2 * self.beta_d * (1 + sigma ** 2).log()).sqrt() - self.beta_min) / self.beta_d

    def scalings(self, sigma):
        return 1, -sigma, 1 / (sigma ** 2 + 1).sqrt(), (self.M - 1) * self.sigma_inv(sigma)

    def sample_sigma(self, n, device, loss):
        u = torch.rand([n, 1, 1, 1], device=device)
        return self.sigma(1 + u * (self.epsilon_t - 1))


class VEPrecond(Precond):
    def __init__(self, model: nn.Module, label_dim: int = 0, sigma_min: float = 0.02, sigma_max: float = 100.0):
        super().__init__(model, label_dim)
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)

    def scalings(self, sigma):
        return 1, sigma, 1, (0.5 * sigma).log()

    def sample_sigma(self, n, device, loss):
        u = torch.rand([n, 1, 1, 1], device=device)
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** u


def build_precond(kind: str, model: nn.Module, label_dim: int, **settings) -> Precond:
    """``settings``: the chosen formulation's constants (others are ignored)."""
    if kind == "edm":
        keys, cls = ("sigma_data",), EDMPrecond
    elif kind == "vp":
        keys, cls = ("beta_d", "beta_min", "M", "epsilon_t"), VPPrecond
    elif kind == "ve":
        keys, cls = ("sigma_min", "sigma_max"), VEPrecond
    else:
        raise ValueError(f"precond kind {kind!r}: use one of {', '.join(KINDS)}")
    return cls(model, label_dim, **{k: settings[k] for k in keys if settings.get(k) is not None})


def denoising_loss(D: Precond, y: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor, loss,
                   class_labels: torch.Tensor | None = None, augment_labels: torch.Tensor | None = None
                   ) -> torch.Tensor:
    """lambda(sigma) (D(y + sigma noise; sigma) - y)^2 per pixel, (N, C, H, W); ``noise`` standard normal."""
    weight = D.loss_weight(sigma, loss)
    denoised = D(y + noise * sigma, sigma, class_labels, augment_labels)
    return weight * (denoised - y) ** 2
