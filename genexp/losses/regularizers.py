"""Penalties on D and G, applied every ``every`` steps and then scaled by ``every`` so that their
average strength does not depend on the interval (lazy regularization, StyleGAN2 sec. 3.1; the
GAN method's phases apply the interval and the scale, methods/phases.py)."""

from __future__ import annotations

import torch


class GradientPenalty:
    """weight * E[(||grad_x D(x)||_2 - center)^2] at x drawn from ``at``:

    - ``interpolates``, center 1: WGAN-GP (Gulrajani et al. 2017), weight 10.
    - ``real``, center 0: R1 (Mescheder et al. 2018), weight gamma / 2.
    - ``fake``, center 0: R2.
    """

    def __init__(self, weight: float = 10.0, center: float = 1.0, at: str = "interpolates", every: int = 1):
        if at not in ("interpolates", "real", "fake"):
            raise ValueError(f"GradientPenalty at={at}: use interpolates, real or fake")
        self.weight, self.center, self.at, self.every = weight, center, at, max(1, int(every))

    @property
    def needs_fake(self) -> bool:
        """Whether the penalty looks at fakes (R1 does not: a Dreg phase then generates none)."""
        return self.at != "real"

    def points(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.at == "real":
            return real
        if self.at == "fake":
            return fake
        eps = torch.rand(len(real), *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
        return torch.lerp(fake, real, eps)

    def gradient_norm(self, D, x: torch.Tensor, labels=None) -> torch.Tensor:
        # autograd.grad with inputs=[x] computes no weight gradient on its way to x (stylegan2-ada's
        # no_weight_gradients); the penalty's own backward differentiates through this one.
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x, labels).sum(), x, create_graph=True)
        return grad.flatten(1).norm(2, dim=1)

    def __call__(self, D, real: torch.Tensor, fake: torch.Tensor, labels=None) -> torch.Tensor:
        norm = self.gradient_norm(D, self.points(real, fake), labels)
        return self.weight * (norm - self.center).pow(2).mean()


class GradientPowerPenalty(GradientPenalty):
    """Wasserstein divergence (Wu et al. 2018): k * E[||grad_x D(x)||^p], k = 2, p = 6, with no target
    norm. ``at=real_and_fake`` (the authors' practice) takes k/2 of the sum over real and fake
    samples; ``interpolates`` takes it on random points between them."""

    def __init__(self, weight: float = 2.0, power: float = 6.0, at: str = "real_and_fake", every: int = 1):
        if at not in ("real_and_fake", "interpolates", "real", "fake"):
            raise ValueError(f"GradientPowerPenalty at={at}: use real_and_fake, interpolates, real or fake")
        self.weight, self.power, self.at, self.every = weight, power, at, max(1, int(every))

    def __call__(self, D, real: torch.Tensor, fake: torch.Tensor, labels=None) -> torch.Tensor:
        if self.at == "real_and_fake":
            norms = [self.gradient_norm(D, real, labels), self.gradient_norm(D, fake, labels)]
            return self.weight / 2 * sum(n.pow(self.power).mean() for n in norms)
        return self.weight * self.gradient_norm(D, self.points(real, fake), labels).pow(self.power).mean()


class PathLengthPenalty:
    """Path-length regularization of G (StyleGAN2 sec. 3.2): for y ~ N(0, I) / sqrt(H W), the lengths
    ||J_w^T y|| of the image's gradient with respect to the styles w are pulled toward their running
    mean a (updated with ``decay``): weight * E[(||J_w^T y|| - a)^2]. Every ``every`` G steps on
    1/``batch_shrink`` of the batch, scaled by ``every`` (lazy). Needs a style-based G (one with
    ``styles`` and ``synthesis``)."""

    def __init__(self, weight: float = 2.0, decay: float = 0.01, every: int = 4, batch_shrink: int = 2):
        self.weight, self.decay, self.every = float(weight), float(decay), max(1, int(every))
        self.batch_shrink = max(1, int(batch_shrink))
        self.pl_mean = torch.zeros([])  # checkpointed with the method (state / load_state)

    def state(self) -> dict:
        return {"pl_mean": self.pl_mean.clone()}

    def load_state(self, state: dict) -> None:
        self.pl_mean = state["pl_mean"].clone()

    def __call__(self, G, z: torch.Tensor, labels=None) -> torch.Tensor:
        n = max(1, len(z) // self.batch_shrink)
        ws = G.styles(z[:n], labels[:n] if labels is not None else None)
        img = G.synthesis(ws)
        lengths = self.lengths(img, ws, self.noise(img))
        self.update_mean(lengths)
        return self.weight * (lengths - self.pl_mean).square().mean()

    @staticmethod
    def noise(img: torch.Tensor) -> torch.Tensor:
        """The random image-space direction y ~ N(0, I) / sqrt(H W)."""
        return torch.randn_like(img) / (img.shape[2] * img.shape[3]) ** 0.5

    @staticmethod
    def lengths(img: torch.Tensor, ws: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """||J_w^T y|| per sample for y = ``noise`` (None: drawn N(0, I) / sqrt(H W)), differentiable."""
        if noise is None:
            noise = PathLengthPenalty.noise(img)
        (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        return grad.square().sum(2).mean(1).sqrt()

    def update_mean(self, lengths: torch.Tensor) -> None:
        self.pl_mean = self.pl_mean.to(lengths.device).lerp(lengths.mean().detach(), self.decay)
