"""Frechet distance between Gaussians fitted to real and generated features (torchmetrics' FID).

Keyed ``fid/<extractor>@N``, and ``fd/dinov2_vit*14@N`` on DINOv2 features (FD_DINOv2: EDM2 and
Stein et al. 2023 keep "FID" for the Inception distance). ``infinity=true`` adds FD-infinity
(metrics/fd_infinity.py), ``fid_inf/...`` or ``fd_inf/...``, from the same generated features.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from genexp.errors import UserError
from genexp.metrics.dinov2 import ARCHS as DINOV2
from genexp.metrics.fd_infinity import fd_infinity
from genexp.metrics.featured import TorchmetricsKind, build_features, feature_key
from genexp.metrics.registry import MIN, Context, register


def distance_name(extractor: str) -> str:
    """fid for the Inception (and genexp's classifiers, keyed so since their first release), fd for DINOv2."""
    return "fd" if extractor in DINOV2 else "fid"


class FeatureTap(nn.Module):
    """The extractor, keeping its last output: FD-infinity draws subsets of the generated features
    that torchmetrics sums away, and the extractor runs once per batch for both."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.num_features, self.last = net, net.num_features, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last = self.net(x)
        return self.last


@register
class FID(TorchmetricsKind):
    kind = "fid"
    keeps_reference = True
    directions = {"fid/": MIN, "fd/": MIN, "fid_inf/": MIN, "fd_inf/": MIN}

    def __init__(self, name: str, cfg, ctx: Context):
        from torchmetrics.image.fid import FrechetInceptionDistance

        super().__init__(name, cfg, ctx)
        n, n_real = self.sizes(cfg, ctx)
        module, ident = build_features(cfg, ctx, "features")
        self.features, self.num_samples = int(module.num_features), n
        prefix = distance_name(ident["name"])
        self.key = feature_key(prefix, ident, n)
        self.protocol = {"extractor": ident, "num_fake": n, "num_real": n_real}
        reference = cfg.get("reference")
        counts = {"generated": n} if reference else {"generated": n, "real": n_real}
        # Below 2 x D samples a D-dimensional covariance is rank-deficient or barely full: the
        # distance then measures the sample size as much as the model.
        self.protocol.update(ctx.check_count(name, self.key, cfg, counts, 2 * self.features,
                                             f"{prefix.upper()} fits a {self.features}-dimensional covariance: "
                                             f"2 x {self.features} features"))
        self.infinity = bool(cfg.get("infinity", False))
        if self.infinity:
            module = FeatureTap(module)
            self.inf_key = feature_key(f"{prefix}_inf", ident, n)
            self.smallest, self.points = self.infinity_settings(name, cfg, ctx, n)
        self.metric = FrechetInceptionDistance(feature=module, reset_real_features=False).to(ctx.device)
        if self.infinity:
            self.tap = module
            # Gathered over data-parallel ranks in batch order (metrics/ddp.py), reset with the fakes.
            self.metric.add_state("fake_features_kept", default=[], dist_reduce_fx="cat")
        if reference:
            self.import_reference(Path(str(reference)).expanduser(), f"metrics.{name}.reference")

    def infinity_settings(self, name: str, cfg, ctx: Context, n: int) -> tuple[int, int]:
        smallest, points = int(cfg.get("infinity_min", 5000)), int(cfg.get("infinity_points", 15))
        if points < 2 or not 2 <= smallest < n:
            raise UserError(f"metrics.{name}.infinity: FD-infinity fits a line through FDs at "
                            f"infinity_points={points} subset sizes from infinity_min={smallest} to all {n} "
                            "generated samples; it needs 2 <= infinity_min < num_samples and at least 2 points")
        self.protocol["fd_infinity"] = {
            "subset_sizes": f"{points} evenly spaced from {smallest} to {n}", "subsets": "random, fresh for each size",
            "fit": "least squares of FD against 1/N, read at 1/N = 0 (Chong & Forsyth 2020)"}
        # Every subset's FD fits the same covariance as the FID: the same minimum holds for the smallest.
        self.protocol["fd_infinity"].update(ctx.check_count(
            name, self.inf_key, cfg, {"generated (smallest FD-infinity subset)": smallest}, 2 * self.features,
            f"each subset fits a {self.features}-dimensional covariance: 2 x {self.features} features"))
        return smallest, points

    def keys(self) -> list[str]:
        return [self.key, self.inf_key] if self.infinity else [self.key]

    def update_fake(self, x: torch.Tensor, start: int, batch: int) -> None:
        super().update_fake(x, start, batch)
        if self.infinity:
            self.metric.fake_features_kept.append(self.tap.last.detach())

    def import_reference(self, path: Path, setting: str) -> None:
        """Real statistics from a clean-fid / pytorch-fid ``mu`` / ``sigma`` file, set as torchmetrics
        states of two samples (sum = 2 mu, cov_sum = sigma + 2 mu mu^T) so its compute returns exactly them."""
        mu, sigma = read_mu_sigma(path, setting, self.features)
        mu_t, sigma_t = torch.from_numpy(mu), torch.from_numpy(sigma)
        self.load_real_states({"real_features_sum": 2 * mu_t,
                               "real_features_cov_sum": sigma_t + 2 * torch.outer(mu_t, mu_t),
                               "real_features_num_samples": torch.tensor(2, dtype=torch.long)})
        self.real_ready = True
        self.protocol.pop("num_real")
        self.protocol["reference"] = {"file": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:16]}

    def reset_fake(self) -> None:
        super().reset_fake()
        # torchmetrics sets the dtype it returns in update(): a rank that draws no fakes (fewer batches
        # than ranks) still computes, after summing every rank's states.
        if not hasattr(self.metric, "orig_dtype"):
            self.metric.orig_dtype = torch.float32

    def compute(self) -> dict[str, float]:
        out = {self.key: float(self.metric.compute())}
        if self.infinity:
            with self.metric.sync_context():
                m = self.metric
                fake = torch.cat(m.fake_features_kept)
                n = m.real_features_num_samples
                mu = m.real_features_sum / n
                sigma = (m.real_features_cov_sum - n * torch.outer(mu, mu)) / (n - 1)
                out[self.inf_key] = fd_infinity(fake, mu, sigma, self.smallest, self.points)[0]
        return out


def read_mu_sigma(path: Path, setting: str, dims: int) -> tuple[np.ndarray, np.ndarray]:
    fix = "give a clean-fid or pytorch-fid statistics file (an npz with mu and sigma)"
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("mu", "sigma") if k not in z.files]
            if missing:
                raise UserError(f"{setting}={path}: no {' or '.join(missing)} array (it holds "
                                f"{', '.join(z.files) or 'nothing'}); {fix}")
            mu, sigma = np.asarray(z["mu"], dtype=np.float64), np.asarray(z["sigma"], dtype=np.float64)
    except (OSError, ValueError) as exc:
        raise UserError(f"{setting}={path}: not a readable npz ({type(exc).__name__}); {fix}") from None
    if mu.shape != (dims,) or sigma.shape != (dims, dims):
        raise UserError(f"{setting}={path}: mu {mu.shape} and sigma {sigma.shape}, but the extractor gives {dims} "
                        f"features (mu ({dims},), sigma ({dims}, {dims})); use statistics of the same extractor")
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise UserError(f"{setting}={path}: mu or sigma holds NaN or inf; {fix}")
    return mu, sigma
