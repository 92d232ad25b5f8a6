"""Learning-rate decay as a pure function of the step, so a resumed run needs no scheduler state."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

KINDS = ("constant", "linear", "cosine")


class LrDecay:
    """Holds every optimizer's lr at its initial value until ``start`` (a fraction of the run), then
    decays it to 0 at ``total_steps``: linearly, or along half a cosine."""

    def __init__(self, kind: str = "constant", start: float = 0.0, total_steps: int = 1):
        if kind not in KINDS:
            raise ValueError(f"optim.decay must be one of {', '.join(KINDS)}, not {kind!r}")
        if not 0.0 <= float(start) < 1.0:
            raise ValueError(f"optim.decay_start is a fraction of the run in [0, 1), not {start}")
        self.kind, self.start, self.total_steps = kind, float(start), max(int(total_steps), 1)

    def factor(self, step: int) -> float:
        t = (step / self.total_steps - self.start) / (1.0 - self.start)
        t = min(max(t, 0.0), 1.0)
        if self.kind == "linear":
            return 1.0 - t
        if self.kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * t))
        return 1.0

    def apply(self, optimizers: Iterable[torch.optim.Optimizer], step: int) -> None:
        if self.kind == "constant":
            return
        f = self.factor(step)
        for opt in optimizers:
            for group in opt.param_groups:
                # initial_lr is torch's own key for a group's base lr; it travels in the optimizer state.
                group["lr"] = group.setdefault("initial_lr", group["lr"]) * f
