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

import torch
from omegaconf import DictConfig

from genexp.errors import UserError
from genexp.methods.bigan import refuse_pairing_options
from genexp.methods.gan import GAN
from genexp.methods.phases import Micro


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

    def report(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        last = {key: out.pop(key) for key in ("loss/g", "corr/z", "d/real", "d/fake") if key in out}
        return {**out, **last}

    def d_labels(self, micro: Micro) -> None:
        return None  # unconditional; D is an encoder

    def fakes(self, n: int, labels=None) -> torch.Tensor:
        return super().fakes(n, None)

    def d_main(self, micro: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss and correlation term on one micro-batch."""
        lam = self.correlation_weight
        z = self.latents(len(micro), self.z_dim)
        with torch.no_grad():
            fake = self.G(z)
        micro.real_d = real_x = self.d_input(micro.real)
        fake_x = self.d_input(fake)
        fake_code = self.D.features(fake_x)
        real_logits, fake_logits = self.D(real_x), fake_code.mean(1)
        d_loss = self.objective.d_loss(real_logits, fake_logits, real_x, fake_x)
        d_corr = pearson(z, fake_code).mean()
        scalars = {"loss/d": d_loss.detach()}
        d_loss = d_loss + lam * (1 - d_corr)
        if not self.d_reg_phases:
            d_loss = d_loss + self.regularize(real_x, fake_x, None, scalars)
        scalars["d/real"] = real_logits.detach().mean()
        return d_loss, scalars

    def g_main(self, micro: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G's loss and correlation term on one micro-batch of new latents."""
        z = self.latents(len(micro), self.z_dim)
        fake_code = self.D.features(self.d_input(self.G(z)))
        fake_logits = fake_code.mean(1)
        real_for_g = self.D(self.real_input(micro)).detach() if self.objective.g_needs_real else None
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
