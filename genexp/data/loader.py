"""An endless, seeded stream of batches whose position is part of the checkpoint.

Epoch e visits the data in the order randperm(N) under seed (seed, e), so a resumed
run needs only (epoch, index) to continue with the very batches an uninterrupted run
would have seen. Datasets with ``get_batch(indices)`` (in memory) are gathered directly;
others go through a DataLoader (workers) over the same order.

Data-parallel: ``batch_size`` is the global batch; rank r of W takes the r-th of W equal slices of
each, so W processes see together exactly the batches one process would (DistributedSampler's
contract, kept with the resumable order above).
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from genexp.errors import UserError


class InfiniteLoader:
    def __init__(self, dataset: Dataset, batch_size: int, seed: int, device: torch.device | str = "cpu",
                 num_workers: int = 0, rank: int = 0, world: int = 1):
        if batch_size % world:
            raise UserError(f"data.batch_size={batch_size} is the global batch and does not split evenly over "
                            f"{world} processes: use a multiple of {world}")
        if len(dataset) < batch_size:
            raise UserError(
                f"data.batch_size={batch_size} is larger than the dataset ({len(dataset)} samples): "
                "lower data.batch_size"
            )
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)
        self.num_workers = num_workers
        self.rank, self.world = rank, world
        self.local = batch_size // world  # this rank's share of each batch
        self.channels_last = False  # trainer.channels_last: image batches in that memory order
        self.epoch = 0
        self.index = 0  # batches already taken from this epoch
        self._order: torch.Tensor | None = None
        self._workers = None

    @property
    def batches_per_epoch(self) -> int:
        return len(self.dataset) // self.batch_size  # the ragged last batch is dropped

    def order(self) -> torch.Tensor:
        if self._order is None:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            self._order = torch.randperm(len(self.dataset), generator=g)
        return self._order

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.index >= self.batches_per_epoch:
            self.epoch, self.index, self._order, self._workers = self.epoch + 1, 0, None, None
        if hasattr(self.dataset, "get_batch"):  # in memory: one gather per batch, no collate
            start = self.index * self.batch_size + self.rank * self.local
            idx = self.order()[start:start + self.local]
            x, y = self.dataset.get_batch(idx)
        else:
            x, y = next(self._worker_stream())
        self.index += 1
        non_blocking = self.device.type == "cuda"
        x = x.to(self.device, non_blocking=non_blocking)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(self.device, non_blocking=non_blocking)

    def _worker_stream(self):
        if self._workers is None:
            rest = self.order()[self.index * self.batch_size:self.batches_per_epoch * self.batch_size]
            mine = rest.view(-1, self.batch_size)[:, self.rank * self.local:(self.rank + 1) * self.local]
            loader = DataLoader(Subset(self.dataset, mine.reshape(-1).tolist()), batch_size=self.local,
                                shuffle=False, drop_last=True, num_workers=self.num_workers,
                                pin_memory=self.device.type == "cuda",
                                persistent_workers=False)
            self._workers = iter(loader)
        return self._workers

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.index, self.seed = int(state["epoch"]), int(state["index"]), int(state["seed"])
        self._order, self._workers = None, None
