"""What the training loop and the commands ask of every model family."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import nn

from genexp.optim.schedule import LrDecay

Batch = tuple[torch.Tensor, torch.Tensor]
Scalars = dict[str, torch.Tensor]
# What a phase of ``Method.optimize`` returns: its loss, or its loss and the scalars to log.
PhaseResult = torch.Tensor | tuple[torch.Tensor, Scalars]


class Method(nn.Module):
    """A family's way of training: it owns its nets (as submodules) and their optimizers.

    The loop calls ``train_step`` with an endless batch iterator (a step may take
    several batches, e.g. k D steps) and logs the scalars it returns. Every optimizer step goes
    through ``optimize``, which applies the loop's settings below.
    """

    # Set by the training loop, never by configs:
    # micro-batches per optimizer step (trainer.accumulate; the loop hands out batch / accumulate)
    accumulate: int = 1
    # a torch.amp.GradScaler (trainer.precision=16): losses scaled, steps with inf/nan gradients skipped
    scaler: torch.amp.GradScaler | None = None
    # called with the optimizer after the last backward pass of a step and before the scaler's
    # inf check or any clipping (data-parallel: the ranks' gradients averaged, so every rank decides alike)
    grad_sync: Callable[[torch.optim.Optimizer], None] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.lr_decay = LrDecay()  # build_method sets the configured one

    def optimize(self, name: str, phase: Callable[[], PhaseResult], clip_grad_norm: float | None = None
                 ) -> Scalars:
        """One step of ``self.optimizers[name]`` from ``self.accumulate`` micro-batches.

        ``phase()`` is called once per micro-batch (drawing that micro-batch itself, e.g. from the
        batch iterator) and returns its loss, a mean over the micro-batch, or ``(loss, scalars)``.
        Gradients are zeroed first; each loss is backpropagated divided by ``accumulate`` (so the
        step follows the mean over the whole batch) and through the scaler when one is set. Then
        ``grad_sync``, then (``clip_grad_norm``) the gradients' total norm clipped, unscaled first,
        then the step (the scaler's: skipped when a gradient is inf or nan).

        Returns the phases' scalars, each the mean over the micro-batches that logged it (with equal
        micro-batches: the value of the whole batch), plus ``grad_norm`` (before clipping) when
        clipping; with a scaler, a step skipped for inf/nan gradients logs grad_norm 0 (an inf would
        stop the run at the loop's finite check). With accumulate=1 and no scaler, the arithmetic is
        that of a plain zero_grad / backward / step.
        """
        opt = self.optimizers[name]
        accumulate = max(1, int(self.accumulate))
        scaler = self.scaler
        opt.zero_grad(set_to_none=True)
        sums: Scalars = {}
        counts: dict[str, int] = {}
        for _ in range(accumulate):
            result = phase()
            loss, scalars = result if isinstance(result, tuple) else (result, {})
            if accumulate > 1:
                loss = loss / accumulate
            (scaler.scale(loss) if scaler is not None else loss).backward()
            for key, value in scalars.items():
                value = value.detach()
                sums[key] = sums[key] + value if key in sums else value
                counts[key] = counts.get(key, 0) + 1
        out = {k: v / counts[k] if counts[k] > 1 else v for k, v in sums.items()}
        if self.grad_sync is not None:
            self.grad_sync(opt)
        if clip_grad_norm is not None:
            if scaler is not None:
                scaler.unscale_(opt)
            params = [p for group in opt.param_groups for p in group["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm).detach()
            if scaler is not None:  # an overflow the scaler skips is no step: logged as 0, not inf
                norm = torch.where(torch.isfinite(norm), norm, torch.zeros_like(norm))
            out["grad_norm"] = norm
        if scaler is not None:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        return out

    def compile_targets(self) -> list[str]:
        """Names of the submodules that trainer.compile=true may compile in place (``module.compile()``:
        the state_dict keys stay). Default: every direct child with parameters but the EMA copies
        (``*_ema``). Families leave out nets that a double backward goes through (R1, gradient
        penalties, path length: compiled graphs cannot be differentiated twice) and nets whose
        ``forward`` training never calls (compiling them would change nothing)."""
        return [name for name, child in self.named_children()
                if not name.endswith("_ema") and any(True for _ in child.parameters())]

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
