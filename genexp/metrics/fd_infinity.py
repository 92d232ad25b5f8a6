"""FD-infinity (Chong & Forsyth 2020, "Effectively Unbiased FID and Inception Score and where to find
them"): the Frechet distance measured on N generated samples is biased, about linearly in 1/N, so
FD is measured on random subsets of several sizes and a least-squares line through (1/N, FD_N) is
read at 1/N = 0. As the authors' ``score_infinity.py``: ``points`` sizes evenly spaced from
``smallest`` to every sample (their ``np.linspace(min, n, 15).astype(int32)``), each a fresh
random subset of the generated features, scored against the full real statistics.
"""

from __future__ import annotations

import torch


def subset_sizes(smallest: int, total: int, points: int) -> list[int]:
    """floor(smallest + i (total - smallest) / (points - 1)), i = 0 .. points - 1, in integers: the
    authors' linspace truncated to int, without a float that lands a hair under an integer."""
    return [smallest + i * (total - smallest) // (points - 1) for i in range(points)]


def fd_infinity(fake: torch.Tensor, mu_real: torch.Tensor, sigma_real: torch.Tensor, smallest: int,
                points: int, generator: torch.Generator | None = None) -> tuple[float, list[int], list[float]]:
    """(FD-infinity, the subset sizes, the FD of each) for generated features ``fake`` (N, D) against
    real statistics; subsets drawn with ``generator`` (None: torch's global generator)."""
    from torchmetrics.image.fid import _compute_fid  # the FD formula FID itself uses

    fake = fake.double()
    sizes = subset_sizes(smallest, len(fake), points)
    fds = []
    for n in sizes:
        part = fake[torch.randperm(len(fake), generator=generator)[:n].to(fake.device)]
        fds.append(float(_compute_fid(part.mean(0), torch.cov(part.T), mu_real.double(), sigma_real.double())))
    x = 1.0 / torch.tensor(sizes, dtype=torch.float64)
    y = torch.tensor(fds, dtype=torch.float64)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / (x - x.mean()).square().sum()
    return float(y.mean() - slope * x.mean()), sizes, fds
