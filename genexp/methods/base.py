"""What the training loop and the commands ask of every model family."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from genexp.optim.schedule import LrDecay

Batch = tuple[torch.Tensor, torch.Tensor]


class Method(nn.Module):
    """A family's way of training: it owns its nets (as submodules) and their optimizers.

    The loop calls ``train_step`` with an endless batch iterator (a step may take
    several batches, e.g. k D steps) and logs the scalars it returns.
    """

    def __init__(self) -> None:
        super().__init__()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.lr_decay = LrDecay()  # build_method sets the configured one

    def train_step(self, batches: Iterator[Batch], step: int) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # Classes a conditional model generates (0: unconditional).
    num_classes = 0

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, ema: bool = True,
               labels: torch.Tensor | None = None) -> torch.Tensor:
        """n samples on the CPU: images in [-1, 1] (N, C, H, W) or points (N, D); ``labels`` picks
        the classes of a conditional model."""
        raise NotImplementedError

    # Optional, where a family has them (the nll and recon metrics, eval and sample look for them):
    #   nll(x, labels, iwae_samples=k) -> {name: (N,) tensor}: negative log-likelihoods in nats per
    #       example of the discrete data (x in [-1, 1], model.levels levels; genexp/data/discrete.py),
    #       e.g. {"exact": ...} for a flow or an autoregressive model, {"elbo": ..., "iwae": ...} for a
    #       VAE (bounds on the NLL). Models without importance sampling ignore iwae_samples.
    #   reconstruct(x, labels) -> x_hat: images in [-1, 1] through the encoder and back.
    #   encode(x, labels) -> codes.

    def state_dict_all(self) -> dict:
        return {"modules": self.state_dict(),
                "optimizers": {k: opt.state_dict() for k, opt in self.optimizers.items()}}

    def load_state_dict_all(self, state: dict, optimizers: bool = True) -> None:
        self.load_state_dict(state["modules"])
        if optimizers:
            for key, opt in self.optimizers.items():
                opt.load_state_dict(state["optimizers"][key])

    def latents(self, n: int, dim: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Standard normal latents drawn on the CPU when a generator is given, so a fixed seed
        gives the same latents on every device."""
        device = next(self.parameters()).device
        if generator is None:
            return torch.randn(n, dim, device=device)
        return torch.randn(n, dim, generator=generator).to(device)
