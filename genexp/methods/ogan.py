"""O-GAN (Su 2019, "O-GAN: Extremely Concise Approach for Auto-Encoding Generative Adversarial
Networks", arXiv:1903.01931): the discriminator is the encoder.

D is an encoder E: x -> R^z_dim and its score is T(E(x)) = avg(E(x)), the mean of E's entries
(models/encoders.py OrthogonalDiscriminator). Any GAN objective is taken on that score and both
players add lambda * (1 - rho(z, E(G(z)))), rho the Pearson correlation of z with E(G(z)) taken
over each sample's z_dim entries (centred, normalised, dotted):

    D, E = argmin L_D(T(E(x)), T(E(G(z)))) - lambda rho(z, E(G(z)))
    G    = argmin L_G(T(E(G(z))))          - lambda rho(z, E(G(z)))

rho ignores the mean and the scale of E(x), the two degrees of freedom the score and the
objective use, so the code and the score do not compete (the paper's orthogonal decomposition).
lambda = 0.5 and the reconstruction G(0.8 * standardise(E(x))) follow the official code
(github.com/bojone/o-gan, o_gan_celeba.py: `- 0.5 * z_corr`; sample_ae).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import torch
from omegaconf import DictConfig

from genexp.errors import UserError
from genexp.methods.base import Batch
from genexp.methods.bigan import ema_decay, refuse_pairing_options
from genexp.methods.ema import update_ema
from genexp.methods.gan import GAN


def pearson(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample Pearson correlation of two (N, D) tensors across their D entries: (N,)."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(eps)


def standardise(code: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each code to mean 0 and standard deviation 1 over its entries, as a N(0, I) latent has."""
    code = code - code.mean(1, keepdim=True)
    return code / code.std(1, keepdim=True).clamp_min(eps)


class OGAN(GAN):
    def __init__(self, model: DictConfig, loss: DictConfig, optim: DictConfig, correlation_weight: float = 0.5,
                 recon_scale: float = 0.8, **gan_options):
        super().__init__(model, loss, optim, **gan_options)
        refuse_pairing_options(str(model.name), self)
        if not hasattr(self.D, "features") or int(self.D.z_dim) != self.z_dim:
            raise UserError(f"model.discriminator must be an encoder with z_dim={self.z_dim} outputs for O-GAN "
                            "(genexp.models.encoders.OrthogonalDiscriminator, z_dim: ${..z_dim})")
        self.correlation_weight, self.recon_scale = float(correlation_weight), float(recon_scale)

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        d_out: dict[str, torch.Tensor] = {}
        self.lr_decay.apply(self.optimizers.values(), step)
        self.D.requires_grad_(True)
        micro: list[tuple] = []  # the last D step's micro-batches: (size, D's real input)
        for _ in range(self.d_steps):
            micro = []
            d_out.update(self.optimize("D", partial(self.d_phase, batches, micro)))
            for constrain in self.d_constraints:
                constrain(self.D)
            self.d_steps_done += 1

        # D's weights take no gradient from G's loss: skip computing it.
        self.D.requires_grad_(False)
        pending = iter(micro)
        g_out = self.optimize("G", lambda: self.g_phase(*next(pending)))
        self.D.requires_grad_(True)

        update_ema(self.G_ema, self.G, ema_decay(self, step, sum(size for size, _ in micro)))
        d_real = d_out.pop("d/real")
        return {**d_out, "loss/g": g_out["loss/g"], "corr/z": g_out["corr/z"], "d/real": d_real,
                "d/fake": g_out["d/fake"]}

    def d_phase(self, batches: Iterator[Batch], micro: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss and correlation term on one micro-batch; notes it in ``micro`` for G's step."""
        lam = self.correlation_weight
        real, _ = next(batches)
        z = self.latents(len(real), self.z_dim)
        with torch.no_grad():
            fake = self.G(z)
        real_x, fake_x = self.d_input(real), self.d_input(fake)
        fake_code = self.D.features(fake_x)
        real_logits, fake_logits = self.D(real_x), fake_code.mean(1)
        d_loss = self.objective.d_loss(real_logits, fake_logits, real_x, fake_x)
        d_corr = pearson(z, fake_code).mean()
        scalars = {"loss/d": d_loss.detach()}
        d_loss = d_loss + lam * (1 - d_corr) + self.regularize(real_x, fake_x, None, scalars)
        scalars["d/real"] = real_logits.detach().mean()
        micro.append((len(real), real_x if self.objective.g_needs_real else None))
        return d_loss, scalars

    def g_phase(self, size: int, real_x) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss and correlation term on one micro-batch of new latents."""
        z = self.latents(size, self.z_dim)
        fake_code = self.D.features(self.d_input(self.G(z)))
        fake_logits = fake_code.mean(1)
        real_for_g = self.D(real_x).detach() if self.objective.g_needs_real else None
        g_loss = self.objective.g_loss(fake_logits, real_for_g)
        g_corr = pearson(z, fake_code).mean()
        return g_loss + self.correlation_weight * (1 - g_corr), {
            "loss/g": g_loss.detach(), "corr/z": g_corr.detach(), "d/fake": fake_logits.detach().mean()}

    @torch.no_grad()
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """E(x), standardised: the correlation term fixes a code only up to its mean and scale."""
        was_training = self.D.training
        self.D.eval()
        code = self.D.features(x)
        self.D.train(was_training)
        return standardise(code)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None, ema: bool = True) -> torch.Tensor:
        """G(recon_scale * E(x)); 0.8 as in the official code, a little inside the prior's shell."""
        return self.decode(self.recon_scale * self.encode(x), ema=ema).clamp(-1, 1)
