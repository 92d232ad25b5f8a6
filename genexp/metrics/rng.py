"""Metrics never draw from a training run's random streams.

Building a metric initialises networks before their weights are loaded (genexp's classifiers, the
Inception, LPIPS backbones, a user's extractor), and computing one draws random subsets (KID, IS)
and the noise of model metrics (NLL's importance samples): on the global generators, any of that
would shift every later latent and dropout mask of the run, so a run's weights would depend on
which metrics it reports and how often. ``own_rng`` runs such a block on forked generators —
torch's CPU generator and every CUDA device's, numpy's and python's global ones — seeded inside,
so that what it draws does not depend on when it runs either, and restored after it.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

# Building a metric: a fixed seed, so a randomly initialised user extractor is the same network in
# every run and command (its weights' hash is part of the metric key).
BUILD_SEED = 0


def _cuda_devices(device: torch.device | None) -> list[int]:
    """The CUDA devices whose generators a block may touch: the current one and the block's own, once CUDA
    is up or the block runs on a GPU. Not every GPU: reading a device's state opens a context on it (a
    data-parallel rank would hold one on each of its node's GPUs), and a CPU run on a GPU machine never
    initialises CUDA for this."""
    on_gpu = device is not None and device.type == "cuda"
    if not torch.cuda.is_available() or not (torch.cuda.is_initialized() or on_gpu):
        return []
    devices = {torch.cuda.current_device()}
    if on_gpu:
        devices.add(device.index if device.index is not None else torch.cuda.current_device())
    return sorted(devices)


@contextmanager
def own_rng(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run the block on generators seeded from ``seed`` and give every global stream back as it was."""
    devices = _cuda_devices(device)
    np_state, py_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=devices):
        torch.default_generator.manual_seed(seed)
        for d in devices:  # not torch.manual_seed: with CUDA not yet up it queues a seed for later
            torch.cuda.default_generators[d].manual_seed(seed)
        np.random.seed(seed % 2 ** 32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)
