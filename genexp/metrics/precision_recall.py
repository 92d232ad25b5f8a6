"""Improved precision and recall (Kynkäänniemi et al. 2019), the one metric torchmetrics lacks.

Each set's manifold is the union of balls around its features, each ball reaching that
feature's k-th nearest neighbour in the same set. Precision: the share of generated features
inside the real manifold; recall: the share of real features inside the generated one.
"""

from __future__ import annotations

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities.data import dim_zero_cat


def knn_radii(features: torch.Tensor, k: int, batch: int = 1024) -> torch.Tensor:
    """Distance from each feature to its k-th nearest neighbour, itself excluded."""
    if len(features) <= k:
        raise ValueError(f"k={k} nearest neighbours need more than {k} samples, got {len(features)}")
    return torch.cat([torch.cdist(chunk, features).kthvalue(k + 1, dim=1).values for chunk in features.split(batch)])


def coverage_share(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor, batch: int = 1024) -> float:
    """Share of ``queries`` within radii[i] of some support[i]."""
    inside = [(torch.cdist(chunk, support) <= radii).any(dim=1) for chunk in queries.split(batch)]
    return torch.cat(inside).float().mean().item()


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    real, fake = real.double(), fake.double()  # distances near a radius decide membership: keep them exact
    precision = coverage_share(fake, real, knn_radii(real, k))
    recall = coverage_share(real, fake, knn_radii(fake, k))
    return precision, recall


class PrecisionRecall(Metric):
    """torchmetrics-style: ``update(images, real=...)`` through ``feature``; ``compute()`` gives
    (precision, recall). Features are kept (k-NN needs them all): n x D floats per side."""

    higher_is_better = True
    full_state_update = False

    def __init__(self, feature: nn.Module, k: int = 3, reset_real_features: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.feature, self.k, self.reset_real_features = feature, int(k), reset_real_features
        self.add_state("real_features", default=[], dist_reduce_fx="cat")
        self.add_state("fake_features", default=[], dist_reduce_fx="cat")

    def update(self, imgs: torch.Tensor, real: bool) -> None:
        features = self.feature(imgs).flatten(1).float()
        (self.real_features if real else self.fake_features).append(features)

    def compute(self) -> tuple[torch.Tensor, torch.Tensor]:
        p, r = precision_recall(dim_zero_cat(self.real_features), dim_zero_cat(self.fake_features), self.k)
        return torch.tensor(p), torch.tensor(r)

    def reset(self) -> None:
        kept = list(self.real_features)  # torchmetrics clears list states in place
        super().reset()
        if not self.reset_real_features:
            self.real_features = kept
