"""Normalizing flows trained by dequantised maximum likelihood (RealNVP, Glow).

Discrete levels k become points y = (k + u) / L in [0, 1)^D with u ~ U[0, 1)^D (uniform dequantisation,
data/discrete.py), y is mapped to the real line (the logit of RealNVP or the shift of Glow, log-det
included), and the flow scores it exactly. -log p(y) + D log L is then an upper bound on the discrete
negative log-likelihood, the one flow papers report.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.data.discrete import bits_per_dim, dequantize, from_levels, to_levels
from genexp.errors import UserError
from genexp.methods.base import Batch, Method
from genexp.optim.build import build_optimizer


class Flow(Method):
    """``preprocess``: ``logit`` maps y to logit(alpha + (1 - 2 alpha) y) (RealNVP sec. 4.1, alpha = 0.05),
    which keeps the flow off the infinite tails at 0 and 1; ``affine`` maps y to y - 1/2 (Glow).
    ``nll_seed``: the dequantisation noise of held-out scoring, fixed so that every evaluation of a
    checkpoint gives the same number. ``max_grad_norm``: clip the gradient norm (null: no clipping)."""

    def __init__(self, model: DictConfig, loss: DictConfig, optim: DictConfig, preprocess: str = "logit",
                 alpha: float = 0.05, nll_seed: int = 0, max_grad_norm: float | None = None):
        super().__init__()
        if preprocess not in ("logit", "affine"):
            raise UserError(f"model.method.preprocess={preprocess}: use logit (RealNVP) or affine (Glow)")
        if not 0.0 <= float(alpha) < 0.5:
            raise UserError(f"model.method.alpha={alpha}: the logit's margin must lie in [0, 0.5)")
        if int(model.get("num_classes", 0) or 0):
            raise UserError(f"model={model.name} is an unconditional flow: set model.num_classes=0")
        self.levels = int(model.levels)
        self.shape = (int(model.channels), int(model.resolution), int(model.resolution))
        self.dims = math.prod(self.shape)
        self.preprocess, self.alpha, self.nll_seed = preprocess, float(alpha), int(nll_seed)
        self.max_grad_norm = float(max_grad_norm) if max_grad_norm is not None else None
        self.flow = instantiate(model.flow)
        self.optimizers = {"model": build_optimizer(optim.model, self.flow.parameters())}

    def to_real(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantised y in [0, 1) -> the flow's input, with the log-det of the map per example."""
        if self.preprocess == "affine":
            return y - 0.5, y.new_zeros(len(y))
        p = self.alpha + (1 - 2 * self.alpha) * y
        z = torch.log(p) - torch.log1p(-p)
        logdet = math.log(1 - 2 * self.alpha) * self.dims - (torch.log(p) + torch.log1p(-p)).flatten(1).sum(1)
        return z, logdet

    def from_real(self, z: torch.Tensor) -> torch.Tensor:
        if self.preprocess == "affine":
            return z + 0.5
        return (torch.sigmoid(z) - self.alpha) / (1 - 2 * self.alpha)

    def discrete_nll(self, y: torch.Tensor) -> torch.Tensor:
        """-log p(y) + D log L per example in nats: an upper bound on -log P(k) for y = (k + u) / L."""
        z, logdet = self.to_real(y)
        return -(self.flow.log_prob(z) + logdet) + self.dims * math.log(self.levels)

    def compile_targets(self) -> list[str]:
        """None: the flow is called through log_prob / encode / decode, never through ``forward``, so
        ``Module.compile()`` would change nothing (and ActNorm's data-dependent first call reads a
        flag on the host)."""
        return []

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        self.lr_decay.apply(self.optimizers.values(), step)

        def phase():
            x, _ = next(batches)
            nll = self.discrete_nll(dequantize(to_levels(x, self.levels), self.levels)).mean()
            # nats per dimension: the same step size at any image size
            return nll / self.dims, {"loss/nll": nll.detach()}

        out = self.optimize("model", phase, clip_grad_norm=self.max_grad_norm)
        scalars = {"loss/nll": out["loss/nll"], "bpd": bits_per_dim(out["loss/nll"], self.dims)}
        if "grad_norm" in out:
            scalars["grad_norm"] = out["grad_norm"]
        return scalars

    @torch.no_grad()
    def nll(self, x: torch.Tensor, labels: torch.Tensor | None = None, iwae_samples: int | None = None
            ) -> dict[str, torch.Tensor]:
        """{"exact": (N,)}: the flow's exact density of one dequantised point per example, as the discrete
        NLL bound -log p((k + u) / L) + D log L in nats, u drawn from a generator seeded with nll_seed.
        A single draw of u, not E_u: unbiased for the standard bound, not itself a bound per example."""
        g = torch.Generator().manual_seed(self.nll_seed)
        y = dequantize(to_levels(x, self.levels), self.levels, generator=g)
        return {"exact": self.discrete_nll(y)}

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool = True,
               labels: torch.Tensor | None = None, temperature: float = 1.0, batch_size: int = 256) -> torch.Tensor:
        """Images at the data's levels; every prior's scale is multiplied by ``temperature``. A flow keeps
        no EMA copy, so ``ema`` changes nothing."""
        if temperature < 0:
            raise UserError(f"temperature={temperature}: must be at least 0 (1: the model's own distribution)")
        chunks = []
        for start in range(0, n, batch_size):
            z = self.flow.sample(min(batch_size, n - start), float(temperature), generator)
            y = torch.nan_to_num(self.from_real(z), nan=0.5).clamp(0, 1)
            k = (y * self.levels).floor().clamp(0, self.levels - 1)
            chunks.append(from_levels(k, self.levels).cpu())
        return torch.cat(chunks) if chunks else torch.empty(0, *self.shape)
