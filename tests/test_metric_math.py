"""The metric formulas against independent float64 references on synthetic features.

torchmetrics does the math; these pin down that genexp feeds it so that the numbers are
the textbook ones (and catch a torchmetrics change that would move them)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

pytestmark = pytest.mark.filterwarnings("ignore:.*will save all extracted features", "ignore:std\\(\\)")


class Features(nn.Module):
    """Stands in for an extractor: the 'images' already are features (or logits)."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def gaussian_features(n: int, dim: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(dim, dim, generator=g) / dim ** 0.5
    return (torch.randn(n, dim, generator=g) @ mix + shift).double()


def fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b - 2 * covmean))


def test_fid_equals_the_scipy_reference_and_is_zero_on_the_same_set():
    from torchmetrics.image.fid import FrechetInceptionDistance

    real, fake = gaussian_features(500, 16, 0), gaussian_features(400, 16, 1, shift=0.3)
    fid = FrechetInceptionDistance(feature=Features(16))
    fid.update(real, real=True)
    fid.update(fake, real=False)
    assert float(fid.compute()) == pytest.approx(fid_reference(real.numpy(), fake.numpy()), rel=1e-6)
    same = FrechetInceptionDistance(feature=Features(16))
    same.update(real, real=True)
    same.update(real, real=False)
    assert abs(float(same.compute())) < 1e-6


def kid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """Unbiased MMD^2 with the polynomial kernel (x.y / d + 1)^3 on one subset."""
    d, m = a.shape[1], len(a)
    k_aa, k_bb, k_ab = ((a @ a.T / d + 1) ** 3, (b @ b.T / d + 1) ** 3, (a @ b.T / d + 1) ** 3)
    off = (k_aa.sum() - np.trace(k_aa) + k_bb.sum() - np.trace(k_bb)) / (m * (m - 1))
    return float(off - 2 * k_ab.mean())


def test_kid_on_one_full_subset_equals_the_unbiased_reference():
    from torchmetrics.image.kid import KernelInceptionDistance

    real, fake = gaussian_features(120, 8, 2), gaussian_features(120, 8, 3, shift=0.5)
    kid = KernelInceptionDistance(feature=Features(8), subsets=1, subset_size=120)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    mean, _ = kid.compute()
    assert float(mean) == pytest.approx(kid_reference(real.numpy(), fake.numpy()), rel=1e-6)


@pytest.mark.parametrize("classes", [10, 1000])
def test_inception_score_of_uniform_and_of_confident_balanced_predictions(classes):
    from torchmetrics.image.inception import InceptionScore

    uniform = InceptionScore(feature=Features(classes), splits=1)
    uniform.update(torch.zeros(200, classes, dtype=torch.float64))  # logits: every class equally likely
    assert float(uniform.compute()[0]) == pytest.approx(1.0, abs=1e-6)
    confident = InceptionScore(feature=Features(classes), splits=1)
    logits = torch.full((classes * 2, classes), -1e4, dtype=torch.float64)
    logits[torch.arange(classes * 2), torch.arange(classes * 2) % classes] = 0.0  # each class twice, certain
    confident.update(logits)
    assert float(confident.compute()[0]) == pytest.approx(classes, rel=1e-6)
