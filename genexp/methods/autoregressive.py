"""Autoregressive models (MADE, gated PixelCNN): maximum likelihood of categorical pixel levels.

The net gives logits (N, K, *shape) of levels k (N, *shape) with each value's logits depending only on
the values before it, so the sum of the per-value cross-entropies is the exact NLL of the discrete image.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.data.discrete import bits_per_dim, from_levels, to_levels
from genexp.errors import UserError
from genexp.methods.base import Batch, Method
from genexp.optim.build import build_optimizer


class Autoregressive(Method):
    def __init__(self, model: DictConfig, loss: DictConfig, optim: DictConfig, grad_clip: float | None = None):
        super().__init__()
        self.levels = int(model.levels)
        self.shape = (int(model.channels), int(model.resolution), int(model.resolution))
        self.num_classes = int(model.get("num_classes", 0) or 0)
        self.net = instantiate(model.net)
        # MADE trains several masks (orderings / connectivities) with one set of weights, one per step.
        self.num_masks = int(getattr(self.net, "num_masks", 1))
        self.grad_clip = float(grad_clip) if grad_clip else None
        self.optimizers = {"model": build_optimizer(optim.model, self.net.parameters())}

    def conditioning(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if labels is None or bool((labels < 0).any()):
            raise UserError(f"this model is class-conditional (model.num_classes={self.num_classes}) and the data "
                            "has unlabelled images: use labelled data or model.num_classes=0")
        return labels

    def log_prob(self, k: torch.Tensor, labels: torch.Tensor | None, mask: int | None = None) -> torch.Tensor:
        """log P(k) (N,) in nats: one mask set's, or (mask=None) the mixture over all of them."""
        if mask is None and self.num_masks > 1:
            return self.net.log_prob(k, labels)
        logits = self.net(k, labels, mask) if mask is not None else self.net(k, labels)
        return -F.cross_entropy(logits.float(), k, reduction="none").flatten(1).sum(1)

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        self.lr_decay.apply(self.optimizers.values(), step)
        mask = step % self.num_masks if self.num_masks > 1 else None  # one mask set for the whole step
        dims = []

        def phase():
            x, y = next(batches)
            k = to_levels(x, self.levels)
            dims.append(k[0].numel())
            nll = -self.log_prob(k, self.conditioning(y), mask).mean()
            return nll, {"loss/nll": nll.detach()}

        nll = self.optimize("model", phase, clip_grad_norm=self.grad_clip)["loss/nll"]
        return {"loss/nll": nll, "bpd": bits_per_dim(nll, dims[0])}

    @torch.no_grad()
    def nll(self, x: torch.Tensor, labels: torch.Tensor | None = None, iwae_samples: int | None = None,
            **_) -> dict[str, torch.Tensor]:
        """Exact NLL (nats per image) of x's levels; there is nothing to importance-sample."""
        return {"exact": -self.log_prob(to_levels(x, self.levels), self.conditioning(labels))}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool = True,
               labels: torch.Tensor | None = None, temperature: float = 1.0) -> torch.Tensor:
        """Value by value with the CPU ``generator``; a conditional model draws ``labels`` (default: the classes
        in turn). ``ema`` is accepted for the common interface: there is no average of weights here."""
        if self.num_classes and labels is None:
            labels = torch.arange(n) % self.num_classes
        was_training = self.training
        self.eval()
        k = self.net.sample(n, self.shape, generator=generator, labels=labels if self.num_classes else None,
                            temperature=temperature)
        self.train(was_training)
        return from_levels(k, self.levels)
