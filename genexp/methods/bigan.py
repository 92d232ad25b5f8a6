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

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.errors import UserError
from genexp.losses.objectives import Objective
from genexp.methods.ema import update_ema
from genexp.methods.gan import GAN
from genexp.methods.phases import Micro
from genexp.models.encoders import join
from genexp.optim.build import build_optimizer


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

    def update_averages(self, step: int, batch: int) -> None:
        beta = self.ema_decay(step, batch)
        update_ema(self.G_ema, self.G, beta)
        update_ema(self.E_ema, self.E, beta)

    def report(self, out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return out  # D's, then G and E's (whose d/real and d/fake are D's logits on the two kinds of pair)

    def pairs(self, micro: Micro, real: bool = True, fake: bool = True):
        """D's inputs (x, E(x)) and (G(z), z) for new latents, neither net taking a gradient."""
        z = self.latents(len(micro), self.z_dim) if fake else None
        with torch.no_grad():
            real_pair = join(micro.real, self.E(micro.real)) if real else None
            fake_pair = join(self.G(z), z) if fake else None
        return real_pair, fake_pair

    def d_main(self, micro: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """D's loss on one micro-batch of (x, E(x)) and (G(z), z) pairs."""
        real_pair, fake_pair = self.pairs(micro)
        real_logits, fake_logits = self.D(real_pair), self.D(fake_pair)
        d_loss = self.objective.d_loss(real_logits, fake_logits, real_pair, fake_pair)
        scalars = {"loss/d": d_loss.detach()}
        if not self.d_reg_phases:
            d_loss = d_loss + self.regularize(real_pair, fake_pair, None, scalars)
        micro.real_d = real_pair
        return d_loss, scalars

    def reg_inputs(self, micro: Micro, fake: bool):
        """D's regularizers on the pairs: the real pairs of the iteration's D step, new fake pairs."""
        if micro.real_d is None:
            micro.real_d = self.pairs(micro, fake=False)[0]
        return micro.real_d, self.pairs(micro, real=False)[1] if fake else None, None

    def g_main(self, micro: Micro) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """G and E's loss on one micro-batch of reals and as many new latents."""
        real = micro.real
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
