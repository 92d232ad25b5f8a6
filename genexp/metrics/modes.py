"""Mode coverage: mixtures of Gaussians (PacGAN / VEEGAN protocol, 2-D ring and grid) and
Stacked MNIST (1,000 modes).

A sample is high quality when it lies within ``hq_sigmas`` standard deviations (Euclidean
distance) of its nearest mode; a mode is captured when at least one high-quality sample
falls on it. The reverse KL is KL(generated || true) between the histogram of all samples
over their nearest modes and the uniform mixture weights.
"""

from __future__ import annotations

import math

import torch


def mode_statistics(samples: torch.Tensor, modes: torch.Tensor, std: float, hq_sigmas: float = 3.0) -> dict:
    samples, modes = samples.double(), modes.double()
    distance, nearest = torch.cdist(samples, modes).min(1)
    high_quality = distance <= hq_sigmas * std
    k = len(modes)
    captured = torch.bincount(nearest[high_quality], minlength=k) > 0
    return {"captured": int(captured.sum()), "hq_percent": 100.0 * float(high_quality.double().mean()),
            "reverse_kl": kl_to_uniform(torch.bincount(nearest, minlength=k)), "max_reverse_kl": math.log(k)}


def kl_to_uniform(counts: torch.Tensor) -> float:
    """KL(p || uniform) in nats for the histogram ``counts`` over k bins (0 log 0 = 0)."""
    p = counts.double() / counts.sum()
    p = p[p > 0]
    return float((p * (p * len(counts)).log()).sum())


def stacked_mode_statistics(modes: torch.Tensor, k: int = 1000) -> dict:
    """Stacked MNIST (VEEGAN protocol): modes covered of k, and KL(generated || uniform) of the
    mode histogram, the mode of a sample being the digits its channels are classified as."""
    counts = torch.bincount(modes, minlength=k)
    return {"modes": int((counts > 0).sum()), "kl": kl_to_uniform(counts)}
