"""Frechet distance between Gaussians fitted to real and generated features (torchmetrics' FID)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from genexp.errors import UserError
from genexp.metrics.featured import TorchmetricsKind, build_features, feature_key
from genexp.metrics.registry import MIN, Context, register


@register
class FID(TorchmetricsKind):
    kind = "fid"
    keeps_reference = True
    directions = {"fid/": MIN}

    def __init__(self, name: str, cfg, ctx: Context):
        from torchmetrics.image.fid import FrechetInceptionDistance

        super().__init__(name, cfg, ctx)
        n, n_real = self.sizes(cfg, ctx)
        module, ident = build_features(cfg, ctx, "features")
        self.features, self.num_samples = int(module.num_features), n
        self.key = feature_key("fid", ident, n)
        self.protocol = {"extractor": ident, "num_fake": n, "num_real": n_real}
        reference = cfg.get("reference")
        counts = {"generated": n} if reference else {"generated": n, "real": n_real}
        # Below 2 x D samples a D-dimensional covariance is rank-deficient or barely full: the
        # distance then measures the sample size as much as the model.
        self.protocol.update(ctx.check_count(name, self.key, cfg, counts, 2 * self.features,
                                             f"FID fits a {self.features}-dimensional covariance: "
                                             f"2 x {self.features} features"))
        self.metric = FrechetInceptionDistance(feature=module, reset_real_features=False).to(ctx.device)
        if reference:
            self.import_reference(Path(str(reference)).expanduser(), f"metrics.{name}.reference")

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
        return {self.key: float(self.metric.compute())}


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
