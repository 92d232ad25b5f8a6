"""Mode coverage on mixtures of Gaussians (PacGAN / VEEGAN protocol, 2-D ring and grid).

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
    p = torch.bincount(nearest, minlength=k).double() / len(samples)
    nonzero = p > 0
    reverse_kl = float((p[nonzero] * (p[nonzero] * k).log()).sum())
    return {"captured": int(captured.sum()), "hq_percent": 100.0 * float(high_quality.double().mean()),
            "reverse_kl": reverse_kl, "max_reverse_kl": math.log(k)}
