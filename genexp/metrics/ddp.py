"""Metric states across data-parallel ranks: every rank scores its share of the batches."""

from __future__ import annotations

import torch

from genexp import distributed


def my_batches(num_batches: int) -> range:
    """The batches of an evaluation this rank draws: a contiguous block (the first ranks take one more
    where they do not divide evenly; the last may take none). Contiguous, so that torchmetrics'
    gathering of list states in rank order puts the features in batch order, as one process holds
    them: KID's and IS's random subsets then pick the very same features for any number of ranks."""
    world = distributed.world()
    share = -(-num_batches // world.size)
    return range(min(world.rank * share, num_batches), min((world.rank + 1) * share, num_batches))


def in_batch_order(parts: list[tuple[int, torch.Tensor]]) -> list[torch.Tensor]:
    """Every rank's (batch number, tensor) parts, gathered and put in batch order."""
    if not distributed.active():
        return [t for _, t in parts]
    gathered = [p for rank_parts in distributed.gather_objects(parts) for p in rank_parts]
    return [t for _, t in sorted(gathered, key=lambda p: p[0])]


def one_tensor_per_list(metric) -> None:
    """torchmetrics gathers a list state element by element (unless its reduction is its own
    concatenation), so ranks holding different numbers of batches would disagree on the number of
    collectives: every list state becomes one tensor, with no rows where a rank drew no batch."""
    for name in metric._reductions:
        value = getattr(metric, name)
        if not isinstance(value, list):
            continue
        local = torch.cat(value) if value else None
        shapes = [s for s in distributed.gather_objects(None if local is None else
                                                        (tuple(local.shape), local.dtype)) if s is not None]
        if local is None and shapes:
            local = torch.empty((0, *shapes[0][0][1:]), dtype=shapes[0][1], device=metric.device)
        if local is not None:
            setattr(metric, name, [local])


def empty_real_states(metric, shapes: dict[str, tuple]) -> None:
    """Real states that add nothing to a sum or a concatenation over ranks: zeros, or no rows."""
    for name, (shape, dtype) in shapes.items():
        current = getattr(metric, name)
        if isinstance(current, list):
            setattr(metric, name, [torch.empty((0, *shape[1:]), dtype=dtype, device=metric.device)])
        else:
            setattr(metric, name, torch.zeros(shape, dtype=dtype, device=metric.device))
