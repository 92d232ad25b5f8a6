"""BiGAN / ALI (Donahue et al. 2017; Dumoulin et al. 2017): an encoder E beside G, and D judging
pairs: (x, E(x)) is "real", (G(z), z) is "fake". With loss=gan_qp this is BiGAN-QP (Su 2018).

D sees each pair as one flat tensor ``join(x, z)`` = [x.flatten(1), z] (models/encoders.py), so
every objective, D regularizer and constraint of the GAN method applies unchanged. GAN-QP's
distance between a real and a fake pair is then its per-sample distance of the joint vectors:
the mean absolute difference over all pixel and latent entries (l1), or their root mean square
(l2). Su's BiGAN-QP code sums the pixel and latent means instead, which weighs z more at the
same lambda.

G and E share one optimizer (optim.generator) and one loss, the inverse of D's game: G pushes
D(G(z), z) toward real and E pushes D(x, E(x)) toward fake.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterator
from functools import partial

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.errors import UserError
from genexp.losses.objectives import Objective
from genexp.methods.base import Batch
from genexp.methods.ema import ema_beta, half_life_beta, update_ema
from genexp.methods.gan import GAN
from genexp.models.encoders import join
from genexp.optim.build import build_optimizer


def ema_decay(gan: GAN, step: int, batch: int) -> float:
    """The GAN method's EMA decay at this step (StyleGAN2's half-life when ema_kimg is set)."""
    if gan.ema_kimg is not None:
        return half_life_beta(batch, gan.ema_kimg, step * batch, gan.ema_kimg_rampup)
    return ema_beta(gan.ema_beta, step, gan.ema_start, gan.ema_rampup)


def refuse_pairing_options(name: str, gan: GAN) -> None:
    """Packing and augmenting mix samples or change them after their code was taken."""
    if gan.num_classes:
        raise UserError(f"model={name} is unconditional here: set model.num_classes=0")
    if gan.pack != 1:
        raise UserError(f"model.method.pack={gan.pack}: {name} pairs each sample with its own code, "
                        "so D cannot judge packed samples; use pack=1")
    if gan.g_regularizers:
        raise UserError(f"loss.g_regularizers need a style-based generator; model={name} has none")


def generator_side_loss(objective: Objective, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """G and E's loss from D's logits on (G(z), z) (``fake``) and (x, E(x)) (``real``).

    Objectives that compare the two sides in G's loss (relativistic, GAN-QP) already move both:
    for GAN-QP that is BiGAN-QP's E[T(x, E(x)) - T(G(z), z)]. For the others G takes its usual
    loss on the fake pair and E the same loss on the real pair with the logit's sign flipped (its
    label swapped): BiGAN's "inverted labels" for the logistic losses (Donahue et al. 2017, sec. 3.4),
    -D(x, E(x)) + D(G(z), z) mirrored for WGAN and hinge. For LSGAN's 0/1 coding the flip targets
    -1 for the real pair, one step beyond D's fake code 0."""
    if objective.g_needs_real:
        return objective.g_loss(fake, real)
    return objective.g_loss(fake) + objective.g_loss(-real)


class BiGAN(GAN):
    def __init__(self, model: DictConfig, loss: DictConfig, optim: DictConfig, latent_recon_weight: float = 0.0,
                 pixel_recon_weight: float = 0.0, **gan_options):
        super().__init__(model, loss, optim, **gan_options)
        refuse_pairing_options(str(model.name), self)
        if self.augment:
            raise UserError(f"model.method.augment: {model.name}'s D judges (x, E(x)) pairs and an augmented x "
                            "no longer matches its code; use augment=[]")
        self.E = instantiate(model.encoder)
        self.E_ema = copy.deepcopy(self.E).eval().requires_grad_(False)
        if int(self.E.z_dim) != self.z_dim:
            raise UserError(f"model.encoder.z_dim={self.E.z_dim} but the generator's z_dim is {self.z_dim}: make "
                            "them equal (both follow model.z_dim)")
        # BiGAN-QP's extra terms (Su's code: 2 and 3): ||z - E(G(z))||^2 trains E only and
        # ||x - G(E(x))||^2 trains G only (the other net's output is detached).
        self.latent_recon_weight, self.pixel_recon_weight = float(latent_recon_weight), float(pixel_recon_weight)
        self.optimizers["G"] = build_optimizer(optim.generator, itertools.chain(self.G.parameters(),
                                                                                self.E.parameters()))

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        self.lr_decay.apply(self.optimizers.values(), step)
        self.D.requires_grad_(True)
        reals: list[torch.Tensor] = []  # the last D step's micro-batches, for G and E's step
        for _ in range(self.d_steps):
            reals = []
            out.update(self.optimize("D", partial(self.d_phase, batches, reals)))
            for constrain in self.d_constraints:
                constrain(self.D)
            self.d_steps_done += 1

        self.D.requires_grad_(False)
        pending = iter(reals)
        out.update(self.optimize("G", lambda: self.g_phase(next(pending))))
        self.D.requires_grad_(True)

        beta = ema_decay(self, step, sum(len(real) for real in reals))  # the whole (accumulated) batch
        update_ema(self.G_ema, self.G, beta)
        update_ema(self.E_ema, self.E, beta)
        return out

    def d_phase(self, batches: Iterator[Batch], reals: list) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss on one micro-batch of (x, E(x)) and (G(z), z) pairs; keeps x in ``reals``."""
        real, _ = next(batches)
        z = self.latents(len(real), self.z_dim)
        with torch.no_grad():
            real_pair, fake_pair = join(real, self.E(real)), join(self.G(z), z)
        real_logits, fake_logits = self.D(real_pair), self.D(fake_pair)
        d_loss = self.objective.d_loss(real_logits, fake_logits, real_pair, fake_pair)
        scalars = {"loss/d": d_loss.detach()}
        d_loss = d_loss + self.regularize(real_pair, fake_pair, None, scalars)
        reals.append(real)
        return d_loss, scalars

    def g_phase(self, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G and E's loss on one micro-batch of the last D step and as many new latents."""
        z = self.latents(len(real), self.z_dim)
        fake, code = self.G(z), self.E(real)
        fake_logits, real_logits = self.D(join(fake, z)), self.D(join(real, code))
        g_loss = generator_side_loss(self.objective, fake_logits, real_logits)
        scalars = {"loss/g": g_loss.detach()}
        if self.latent_recon_weight:
            latent_err = (self.E(fake.detach()) - z).pow(2).mean()
            scalars["recon/latent"] = latent_err.detach()
            g_loss = g_loss + self.latent_recon_weight * latent_err
        if self.pixel_recon_weight:
            pixel_err = (self.G(code.detach()) - real).pow(2).mean()
            scalars["recon/pixel"] = pixel_err.detach()
            g_loss = g_loss + self.pixel_recon_weight * pixel_err
        scalars.update({"d/real": real_logits.detach().mean(), "d/fake": fake_logits.detach().mean()})
        return g_loss, scalars

    @torch.no_grad()
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None, ema: bool = True) -> torch.Tensor:
        """E(x): the code (ALI's stochastic encoder gives its mean)."""
        E = self.E_ema if ema else self.E
        was_training = E.training
        E.eval()
        code = E(x)
        E.train(was_training)
        return code

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, labels: torch.Tensor | None = None, ema: bool = True) -> torch.Tensor:
        """G(E(x)), with the averaged nets by default as samples are."""
        x_hat = self.decode(self.encode(x, ema=ema), ema=ema)
        return x_hat.clamp(-1, 1) if x_hat.dim() == 4 else x_hat
