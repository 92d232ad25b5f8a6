"""GAN objectives: each says how D's logits on real and fake samples become D's and G's losses.

An objective is two pure functions of logits. To add one: a subclass here and a
``conf/loss/<name>.yaml`` whose ``objective._target_`` names it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class Objective:
    # Relativistic objectives compare fake to real logits in G's loss too.
    g_needs_real = False

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def g_loss(self, fake: torch.Tensor, real: torch.Tensor | None = None) -> torch.Tensor:
        raise NotImplementedError


class NonSaturating(Objective):
    """D: -log sigmoid(real) - log(1 - sigmoid(fake)); G: -log sigmoid(fake) (Goodfellow et al. 2014)."""

    def d_loss(self, real, fake):
        return F.softplus(-real).mean() + F.softplus(fake).mean()

    def g_loss(self, fake, real=None):
        return F.softplus(-fake).mean()


class Wasserstein(Objective):
    """Critic maximises E[D(real)] - E[D(fake)]; G maximises E[D(fake)] (Arjovsky et al. 2017)."""

    def d_loss(self, real, fake):
        return fake.mean() - real.mean()

    def g_loss(self, fake, real=None):
        return -fake.mean()
