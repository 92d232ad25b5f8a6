"""A GAN iteration as data: a list of phases (which net takes a step, on which loss, how often), run in
order by one loop, as stylegan2-ada-pytorch's training_loop.py runs Gmain, Greg, Dmain, Dreg.

A phase is due at the iterations where ``step % interval == 0``; then it takes ``repeat`` optimizer
steps of its net (k D steps), each through ``Method.optimize`` (accumulation, loss scaling, gradient
sync). A lazy regularisation phase (``reg``) has its loss multiplied by its interval, so that its
average strength does not depend on the interval (StyleGAN2 sec. 3.1; the official ``gain``). The
official code also gives the net of a lazy phase Adam's lr * c and betas ** c, c = k / (k + 1): in
genexp a net's optimizer config names its interval (optim.<net>.lazy_reg_interval, set by the stylegan2
packs) and genexp/optim/build.py applies it when it builds the optimizer, not here.

The phases of one iteration share its data (``IterationData``): a phase that ``draws`` (D's main
phase) takes a new batch for each of its steps, except for a batch that earlier phases of the
iteration drew and no drawing phase has used yet; every other phase takes the iteration's latest batch
(drawing it when it is the first to need one). So [Dmain x k, Gmain, Greg] gives G the labels of the
last D step, and the official [Gmain, Greg, Dmain, Dreg] gives all four phases one batch.

Where genexp's official order differs from training_loop.py / loss.py, and why: G's phases take the
labels of the iteration's reals (the official draws other dataset labels, of the same distribution);
a separate Dreg phase regularises D's input as its Dmain step augmented it (the official re-augments
and differentiates through the augmentation), so R1 means the same with and without a Dreg phase.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from genexp.methods.base import Batch, PhaseResult

# The phases a schedule names (loss.schedule), in the official order.
PHASE_NAMES = ("Gmain", "Greg", "Dmain", "Dreg")
# genexp's order: k D steps (D's regularizers on its loss when due), then G, then G's regularizers.
DEFAULT_SCHEDULE = ("Dmain", "Gmain", "Greg")
# stylegan2-ada-pytorch's training_loop.py: G first, each regularizer its own (lazy) optimizer step.
OFFICIAL_SCHEDULE = PHASE_NAMES


@dataclass
class Micro:
    """One micro-batch of an iteration: the reals, their labels, and D's view of the reals (augmented,
    packed) once a phase computed it, so later phases judge the same input."""

    real: torch.Tensor
    labels: torch.Tensor | None
    real_d: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.real)


class IterationData:
    """The micro-batches of one iteration, drawn from the loader when a phase first needs them (the
    draws keep their place among the random numbers the phases use)."""

    def __init__(self, batches: Iterator[Batch]):
        self.batches = batches
        self.micro: list[Micro] = []  # the latest batch's micro-batches
        self.used = False  # whether a drawing phase took the latest batch already
        self.cursor = 0

    def start(self, draws: bool) -> None:
        """Before each optimizer step of a phase."""
        if not self.micro or (draws and self.used):
            self.micro, self.used = [], False  # a new batch
        self.used = self.used or draws
        self.cursor = 0

    def next(self) -> Micro:
        """The micro-batch of the step's next micro-phase."""
        if self.cursor == len(self.micro):
            real, labels = next(self.batches)
            self.micro.append(Micro(real, labels))
        micro = self.micro[self.cursor]
        self.cursor += 1
        return micro

    @property
    def size(self) -> int:
        """Samples in the latest (accumulated) batch."""
        return sum(len(m) for m in self.micro)


@dataclass
class Phase:
    """One kind of optimizer step of an iteration."""

    name: str  # Gmain, Greg/pl, Dmain, Dreg/r1, ... (what a profile or a log calls it)
    net: str  # the optimizer it steps: a key of Method.optimizers
    loss: Callable[[Micro], PhaseResult]  # its loss on one micro-batch (a mean over it), scalars to log
    interval: int = 1  # due at the iterations where step % interval == 0
    repeat: int = 1  # optimizer steps when due (D's k steps)
    reg: bool = False  # lazy regularisation: the loss is multiplied by the interval
    draws: bool = False  # each step takes a new batch (see IterationData)
    freeze: tuple[str, ...] = ()  # submodules that take no gradient meanwhile (D during G's phases)
    after: Callable[[], None] | None = field(default=None, repr=False)  # after each of its steps

    def due(self, step: int) -> bool:
        return step % self.interval == 0

    def micro_loss(self, micro: Micro) -> PhaseResult:
        result = self.loss(micro)
        if not self.reg or self.interval == 1:
            return result
        loss, scalars = result if isinstance(result, tuple) else (result, {})
        return loss * self.interval, scalars


def check_schedule(schedule) -> tuple[str, ...]:
    """The phase names of ``loss.schedule``, checked: each of PHASE_NAMES at most once, Gmain and Dmain
    present. Raises ValueError saying what is wrong."""
    names = tuple(str(name) for name in schedule)
    unknown = [name for name in names if name not in PHASE_NAMES]
    if unknown:
        raise ValueError(f"loss.schedule names {', '.join(unknown)}: use phases of {', '.join(PHASE_NAMES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"loss.schedule={list(names)} names a phase twice (k D steps: loss.d_steps)")
    missing = [name for name in ("Gmain", "Dmain") if name not in names]
    if missing:
        raise ValueError(f"loss.schedule={list(names)} has no {' or '.join(missing)}")
    return names
