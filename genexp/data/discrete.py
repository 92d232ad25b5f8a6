"""Images as the discrete values likelihood models score: x in [-1, 1] <-> integer levels 0..L-1.

Every likelihood family (VAE with a categorical or Bernoulli decoder, flows with dequantisation,
autoregressive models) converts through these two functions, so "level" means one thing.
"""

from __future__ import annotations

import torch


def to_levels(x: torch.Tensor, levels: int) -> torch.Tensor:
    """[-1, 1] floats -> int64 levels 0..levels-1 (nearest)."""
    return x.add(1.0).mul((levels - 1) / 2.0).round().clamp(0, levels - 1).long()


def from_levels(k: torch.Tensor, levels: int) -> torch.Tensor:
    """int levels 0..levels-1 -> [-1, 1] floats (the inverse of to_levels on its image)."""
    return k.float().mul(2.0 / (levels - 1)).sub(1.0)


def dequantize(k: torch.Tensor, levels: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation (Theis et al. 2016): level k -> (k + u) / levels in [0, 1), u ~ U[0, 1).
    A density on [0, 1)^D of these points lower-bounds the discrete log-likelihood:
    log P(k) >= E_u[log p((k + u) / levels)] - D log(levels)."""
    u = torch.rand(k.shape, generator=generator, device="cpu" if generator is not None else k.device)
    return (k.float() + u.to(k.device)) / levels


def bits_per_dim(nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """Negative log-likelihood in nats per example -> bits per dimension."""
    return nats / (dims * 0.6931471805599453)  # ln 2
