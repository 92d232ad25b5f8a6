"""GAN objectives: each says how D's logits on real and fake samples become D's and G's losses.

An objective is two pure functions of logits (GAN-QP also reads the samples, for its
distance). To add one: a subclass here and a ``conf/loss/<name>.yaml`` whose
``objective._target_`` names it. Shapes: logits are (N,); samples (N, ...).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Objective:
    # Relativistic objectives and GAN-QP compare fake to real logits in G's loss too.
    g_needs_real = False

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor, real_x: torch.Tensor | None = None,
               fake_x: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class Minimax(Objective):
    """The original saturating game (Goodfellow et al. 2014, eq. 1): G minimises log(1 - D(G(z)))."""

    def d_loss(self, real, fake, real_x=None, fake_x=None):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss(self, fake, real=None):
        return -F.softplus(fake).mean()  # log(1 - sigmoid(f)) = -softplus(f)


class NonSaturating(Minimax):
    """D as in the minimax game; G minimises -log D(G(z)) (Goodfellow et al. 2014, sec. 3)."""

    def g_loss(self, fake, real=None):
        return F.softplus(-fake).mean()


class Wasserstein(Objective):
    """Critic maximises E[D(real)] - E[D(fake)]; G maximises E[D(fake)] (Arjovsky et al. 2017).
    Needs a Lipschitz constraint: weight clipping (wgan), a gradient penalty (wgan_gp) or the
    Wasserstein-divergence penalty (wgan_div)."""

    def d_loss(self, real, fake, real_x=None, fake_x=None):
        return fake.mean() - real.mean()

    def g_loss(self, fake, real=None):
        return -fake.mean()


class LeastSquares(Objective):
    """LSGAN (Mao et al. 2017) with the 0-1 coding a=0, b=1, c=1: D: 1/2 E[(D(x)-1)^2] + 1/2 E[D(G(z))^2];
    G: 1/2 E[(D(G(z))-1)^2]."""

    def d_loss(self, real, fake, real_x=None, fake_x=None):
        return 0.5 * (real - 1).pow(2).mean() + 0.5 * fake.pow(2).mean()

    def g_loss(self, fake, real=None):
        return 0.5 * (fake - 1).pow(2).mean()


class Hinge(Objective):
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018): D: E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]; G: -E[D(G(z))]."""

    def d_loss(self, real, fake, real_x=None, fake_x=None):
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()

    def g_loss(self, fake, real=None):
        return -fake.mean()


class RelativisticStandard(Objective):
    """RSGAN (Jolicoeur-Martineau 2018): D: -E log sigmoid(C(x_r) - C(x_f)), paired samples;
    G the same with real and fake swapped."""

    g_needs_real = True

    def d_loss(self, real, fake, real_x=None, fake_x=None):
        return F.softplus(-(real - fake)).mean()

    def g_loss(self, fake, real=None):
        return F.softplus(-(fake - real)).mean()


class RelativisticAverage(Objective):
    """RaSGAN: each sample against the mean logit of the other side.
    D: -E_r log sigmoid(C(x_r) - E_f C) - E_f log(1 - sigmoid(C(x_f) - E_r C)); G swaps real and fake."""

    g_needs_real = True

    def d_loss(self, real, fake, real_x=None, fake_x=None):
        return F.softplus(-(real - fake.mean())).mean() + F.softplus(fake - real.mean()).mean()

    def g_loss(self, fake, real=None):
        return F.softplus(-(fake - real.mean())).mean() + F.softplus(real - fake.mean()).mean()


class RelativisticAverageLeastSquares(Objective):
    """RaLSGAN: D: E_r[(C(x_r) - E_f C - 1)^2] + E_f[(C(x_f) - E_r C + 1)^2], halved as in the
    paper's code; G swaps real and fake."""

    g_needs_real = True

    def d_loss(self, real, fake, real_x=None, fake_x=None):
        return ((real - fake.mean() - 1).pow(2).mean() + (fake - real.mean() + 1).pow(2).mean()) / 2

    def g_loss(self, fake, real=None):
        return ((fake - real.mean() - 1).pow(2).mean() + (real - fake.mean() + 1).pow(2).mean()) / 2


class QuadraticPotential(Objective):
    """GAN-QP (Su 2018): D minimises E[-(T_r - T_f) + (T_r - T_f)^2 / (2 lambda d(x_r, x_f))] over
    paired real / fake samples, with d the per-sample mean absolute (l1) or root-mean-square (l2)
    difference; G minimises E[T_r - T_f]. No Lipschitz constraint is needed."""

    g_needs_real = True

    def __init__(self, weight: float = 10.0, distance: str = "l1"):
        if distance not in ("l1", "l2"):
            raise ValueError(f"GAN-QP distance={distance}: use l1 or l2")
        self.weight, self.distance = weight, distance

    def pair_distance(self, real_x: torch.Tensor, fake_x: torch.Tensor) -> torch.Tensor:
        diff = (real_x - fake_x).flatten(1)
        return diff.abs().mean(1) if self.distance == "l1" else diff.pow(2).mean(1).sqrt()

    def d_loss(self, real, fake, real_x=None, fake_x=None):
        if real_x is None or fake_x is None:
            raise ValueError("GAN-QP's D loss needs the real and fake samples for its distance")
        gap = real - fake
        # The distance only scales the quadratic term: no gradient flows into it.
        norm = self.weight * self.pair_distance(real_x, fake_x).detach()
        return (-gap + 0.5 * gap.pow(2) / norm).mean()

    def g_loss(self, fake, real=None):
        return (real - fake).mean()
