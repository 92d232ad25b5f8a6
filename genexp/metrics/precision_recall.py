"""k-NN fidelity and diversity of generated features, the family torchmetrics lacks: improved precision
and recall (Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020).

Each feature's ball reaches its k-th nearest neighbour in its own set. Precision: the share of generated
features inside some real ball; recall: the share of real features inside some generated ball. Density:
how many real balls hold each generated feature, / k, averaged (1 in expectation for identical
distributions, above 1 where fakes crowd dense real regions); coverage: the share of real balls that hold
at least one generated feature (real balls only, so a few real outliers do not inflate it).

Ties (a distance exactly equal to a radius) are counted as each metric's authors count them: precision and
recall take a feature on a ball's surface as inside (<=, the paper's definition and NVlabs' reference
code); density and coverage as outside (<, Naeem et al.'s ``prdc`` package, their reference code). The
``prdc`` package also uses < for precision and recall: genexp differs from it there, and only on exact
ties, which continuous features make improbable (tests/test_density_coverage.py shows one).

Memory is O(block x N), never O(N^2): pairwise distances come in row blocks of one reused buffer, the
k-NN radii from a top-k per block, and every statistic reads the one real-fake pass; all on the features'
device (the GPU when there is one), in float64 (membership is decided by distances near a radius).
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat

# Entries of one distance block (float64: 32 MiB on the CPU, 512 MiB on a GPU), whatever the sample count.
# One buffer is reused for every block: kthvalue and cdist temporaries fragmented the heap (RSS grew by
# 1 GiB at 20k samples).
BLOCK_ENTRIES = 1 << 22
CUDA_BLOCK_ENTRIES = 1 << 26


def rows_per_block(support: torch.Tensor, block_rows: int | None = None) -> int:
    """``block_rows`` when given, else as many rows as the device's entry budget allows."""
    if block_rows is not None:
        return max(1, int(block_rows))
    entries = CUDA_BLOCK_ENTRIES if support.device.type == "cuda" else BLOCK_ENTRIES
    return max(1, entries // max(1, len(support)))


def squared_distance_blocks(queries: torch.Tensor, support: torch.Tensor, rows: int):
    """Yield (rows, block) with block[i, j] = |queries[rows][i] - support[j]|^2, blocks in one buffer."""
    buffer = torch.empty(min(rows, len(queries)), len(support), dtype=queries.dtype, device=queries.device)
    support_sq = support.pow(2).sum(1)
    for start in range(0, len(queries), rows):
        q = queries[start:start + rows]
        block = buffer[: len(q)]
        torch.mm(q, support.T, out=block)
        block.mul_(-2).add_(q.pow(2).sum(1, keepdim=True)).add_(support_sq).clamp_(min=0)
        yield slice(start, start + len(q)), block


def knn_squared_radii(features: torch.Tensor, ks: set[int], block_rows: int | None = None) -> dict[int, torch.Tensor]:
    """Squared distance from each feature to its k-th nearest neighbour (itself excluded), for every k in
    ``ks`` from one top-k per block. Squared: compared with squared distances, no square root in between."""
    top = max(ks)
    if len(features) <= top:
        raise ValueError(f"k={top} nearest neighbours need more than {top} samples, got {len(features)}")
    radii = {k: torch.empty(len(features), dtype=features.dtype, device=features.device) for k in ks}
    for rows, block in squared_distance_blocks(features, features, rows_per_block(features, block_rows)):
        nearest = block.topk(top + 1, dim=1, largest=False).values  # [:, 0] is the feature itself
        for k in ks:
            radii[k][rows] = nearest[:, k]
    return radii


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 3, dc_k: int | None = None,
         block_rows: int | None = None) -> dict[str, float]:
    """Precision and recall with ``k``, density and coverage with ``dc_k`` (None: ``k``, as the ``prdc``
    package uses one k for all four). ``block_rows``: query rows per distance block (None: the device's
    budget); the numbers do not depend on it."""
    dc_k = k if dc_k is None else int(dc_k)
    real, fake = real.double(), fake.double()
    real_r = knn_squared_radii(real, {k, dc_k}, block_rows)
    fake_r = knn_squared_radii(fake, {k}, block_rows)[k]
    in_real = torch.zeros(len(fake), dtype=torch.bool, device=fake.device)  # precision
    reached = torch.zeros(len(real), dtype=torch.bool, device=real.device)  # recall
    nearest_fake = torch.full((len(real),), float("inf"), dtype=real.dtype, device=real.device)  # coverage
    balls_holding = torch.zeros((), dtype=torch.long, device=real.device)  # density
    # One pass over the real-fake distances (fake rows) feeds all four.
    for rows, block in squared_distance_blocks(fake, real, rows_per_block(real, block_rows)):
        in_real[rows] = (block <= real_r[k]).any(dim=1)
        reached |= (block <= fake_r[rows, None]).any(dim=0)
        balls_holding += (block < real_r[dc_k]).sum()
        torch.minimum(nearest_fake, block.min(dim=0).values, out=nearest_fake)
    return {"precision": in_real.double().mean().item(), "recall": reached.double().mean().item(),
            "density": balls_holding.item() / (dc_k * len(fake)),
            "coverage": (nearest_fake < real_r[dc_k]).double().mean().item()}


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3,
                     block_rows: int | None = None) -> tuple[float, float]:
    out = prdc(real, fake, k, k, block_rows)
    return out["precision"], out["recall"]


class PrecisionRecall(Metric):
    """torchmetrics-style: ``update(images, real=...)`` through ``feature``; ``compute()`` gives
    {precision, recall, density, coverage}. Features are kept (k-NN needs them all): n x D floats per side."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, feature: nn.Module, k: int = 3, dc_k: int | None = None, block_rows: int | None = None,
                 reset_real_features: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.feature, self.k, self.reset_real_features = feature, int(k), reset_real_features
        self.dc_k, self.block_rows = dc_k, block_rows
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    def update(self, imgs: torch.Tensor, real: bool) -> None:
        features = self.feature(imgs).flatten(1).float()
        (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> dict[str, float]:
        return prdc(dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features), self.k, self.dc_k,
                    self.block_rows)

    def reset(self) -> None:
        kept = list(self.real_features)  # torchmetrics clears list states in place
        super().reset()
        if not self.reset_real_features:
            self.real_features = kept
