"""Variational autoencoder (Kingma & Welling 2014): a Gaussian q(z|x), a standard normal prior, and a
decoder p(x|z) from methods/pixel_likelihood.py; trained on the ELBO with a weight beta on the KL
(Higgins et al. 2017), optionally warmed up from 0 (Sønderby et al. 2016).

Held-out NLL (``nll``): k importance samples z_i ~ q(z|x) give log-weights
log w_i = log p(x|z_i) + log p(z_i) - log q(z_i|x); their mean is the ELBO and their log-mean-exp the
IWAE bound (Burda et al. 2016). From the same draws, ELBO <= IWAE <= log p(x) for every example.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.errors import UserError
from genexp.methods.base import Batch, Method
from genexp.methods.pixel_likelihood import build_likelihood
from genexp.optim.build import build_optimizer

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class VAE(Method):
    def __init__(self, model: DictConfig, loss: DictConfig, optim: DictConfig, pixels: str = "mean",
                 iwae_chunk_elements: int = 2 ** 23):
        super().__init__()
        if pixels not in ("mean", "sample"):
            raise UserError(f"model.method.pixels={pixels}: use mean (the decoder's mean image) or sample "
                            "(a draw from p(x|z))")
        self.pixels = pixels
        self.iwae_chunk_elements = int(iwae_chunk_elements)  # decoder outputs held at once while scoring
        self.likelihood = build_likelihood(model.decoder, model.get("levels"), model.get("gaussian_scale", "learned"))
        self.num_classes = int(model.get("num_classes", 0) or 0)
        self.encoder = instantiate(model.encoder_net)
        self.decoder = instantiate(model.decoder_net, params_per_pixel=self.likelihood.params_per_pixel)
        self.latent_dim = int(self.encoder.latent_dim)
        self.beta, self.warmup_steps = float(loss.get("beta", 1.0)), int(loss.get("warmup_steps", 0) or 0)
        if self.beta < 0 or self.warmup_steps < 0:
            raise UserError(f"loss.beta={self.beta} loss.warmup_steps={self.warmup_steps}: both must be >= 0")
        self.optimizers = {"model": build_optimizer(optim.model, self.parameters())}

    def kl_weight(self, step: int) -> float:
        """beta, ramped linearly from 0 over the first warmup_steps steps."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.beta * (step + 1) / self.warmup_steps
        return self.beta

    def conditioning(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if labels is None:  # the composition check has already matched model and data classes
            raise UserError("a conditional VAE (model.num_classes > 0) needs labelled data")
        return labels

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        self.lr_decay.apply(self.optimizers.values(), step)
        weight = self.kl_weight(step)

        def phase():
            x, labels = next(batches)
            y = self.conditioning(labels)
            mean, log_var = self.encoder(x, y)
            z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
            log_px = self.likelihood.log_prob(self.decoder(z, y), x)
            kl = 0.5 * (mean ** 2 + log_var.exp() - 1 - log_var).sum(1)  # KL(q(z|x) || N(0, I)), closed form
            loss = (-log_px + weight * kl).mean()
            return loss, {"loss/neg_elbo": (kl - log_px).detach().mean(), "loss/recon": -log_px.detach().mean(),
                          "loss/kl": kl.detach().mean()}

        out = self.optimize("model", phase)
        out["loss/kl_weight"] = torch.tensor(weight, device=out["loss/kl"].device)
        return out

    @torch.no_grad()
    def nll(self, x: torch.Tensor, labels: torch.Tensor | None = None, iwae_samples: int = 1000
            ) -> dict[str, torch.Tensor]:
        """Per-example upper bounds on -log p(x) in nats, from ``iwae_samples`` draws of q(z|x) (the
        global RNG), decoded a chunk at a time."""
        k = max(1, int(iwae_samples))
        y = self.conditioning(labels)
        mean, log_var = self.encoder(x, y)
        std = (0.5 * log_var).exp()
        n = len(x)
        per_draw = n * x[0].numel() * self.likelihood.params_per_pixel
        chunk = max(1, min(k, self.iwae_chunk_elements // max(1, per_draw)))
        total = torch.zeros(n, dtype=torch.float64, device=x.device)
        running = torch.full((n,), -math.inf, dtype=torch.float64, device=x.device)  # logsumexp so far
        for start in range(0, k, chunk):
            m = min(chunk, k - start)
            eps = torch.randn(m, *mean.shape, device=x.device)
            z = mean + eps * std  # (m, N, latent)
            log_q = (-0.5 * eps ** 2 - 0.5 * log_var - HALF_LOG_2PI).sum(-1)
            log_prior = (-0.5 * z ** 2 - HALF_LOG_2PI).sum(-1)
            flat = z.reshape(m * n, -1)
            params = self.decoder(flat, y.repeat(m) if y is not None else None)
            log_px = self.likelihood.log_prob(params, x.repeat(m, *[1] * (x.dim() - 1))).view(m, n)
            log_w = (log_px + log_prior - log_q).double()
            total += log_w.sum(0)
            running = torch.logaddexp(running, torch.logsumexp(log_w, 0))
        suffix = self.likelihood.suffix
        return {f"elbo{suffix}": -(total / k).float(), f"iwae{suffix}": -(running - math.log(k)).float()}

    @torch.no_grad()
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The mean of q(z|x)."""
        return self.encoder(x, self.conditioning(labels))[0]

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's mean image at the mean of q(z|x)."""
        y = self.conditioning(labels)
        return self.likelihood.mean(self.decoder(self.encoder(x, y)[0], y)).clamp(-1, 1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool = True,
               labels: torch.Tensor | None = None, batch_size: int = 256, temperature: float = 1.0) -> torch.Tensor:
        """z from the prior (its standard deviation times ``temperature``), then the mean of p(x|z)
        (``pixels: mean``) or a draw from it; a conditional VAE draws ``labels`` (default: the classes
        in turn). No EMA: ``ema`` is ignored."""
        device = next(self.parameters()).device
        if self.num_classes and labels is None:
            labels = torch.arange(n) % self.num_classes
        chunks = []
        for start in range(0, n, batch_size):
            z = self.latents(min(batch_size, n - start), self.latent_dim, generator) * temperature
            y = labels[start:start + len(z)].to(device) if self.num_classes else None
            params = self.decoder(z, y)
            x = self.likelihood.mean(params) if self.pixels == "mean" else self.likelihood.sample(params, generator)
            chunks.append(x.float().cpu())
        return torch.cat(chunks).clamp(-1, 1) if chunks else torch.empty(0)
