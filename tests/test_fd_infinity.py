"""FD-infinity (Chong & Forsyth 2020) against an independent computation: the authors' recipe with
numpy / scipy (np.linspace sizes, np.cov, scipy.linalg.sqrtm, a least-squares line from scikit-learn
as their score_infinity.py), a closed form on Gaussian features, and the FID kind's option."""

from __future__ import annotations

import re

import numpy as np
import pytest
import scipy.linalg
import torch
from omegaconf import OmegaConf
from sklearn.linear_model import LinearRegression

from genexp.data.digits import DigitsDataset
from genexp.errors import UserError
from genexp.metrics.fd_infinity import fd_infinity, subset_sizes
from genexp.metrics.registry import direction
from genexp.metrics.suite import MetricSuite

DIGITS = OmegaConf.create({"name": "digits", "kind": "image"})


def scipy_fd(mu1, s1, mu2, s2) -> float:
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("smallest, total, points", [(5000, 50000, 15), (5000, 10000, 15), (500, 2017, 7), (3, 10, 8)])
def test_subset_sizes_are_the_authors_linspace(smallest, total, points):
    assert subset_sizes(smallest, total, points) == np.linspace(smallest, total, points).astype("int32").tolist()


def test_fd_infinity_equals_the_authors_recipe_in_numpy():
    rng = np.random.default_rng(0)
    d, n = 12, 3000
    a = rng.normal(size=(d, d)) / np.sqrt(d)
    fake = rng.normal(size=(n, d)) @ a + 0.3
    real = rng.normal(size=(4000, d))
    mu_r, sigma_r = real.mean(0), np.cov(real, rowvar=False)
    g = torch.Generator().manual_seed(7)
    value, sizes, fds = fd_infinity(torch.from_numpy(fake), torch.from_numpy(mu_r), torch.from_numpy(sigma_r),
                                    500, 15, generator=g)
    # the same random subsets (the subset draw is not what is under test), everything else independent
    g = torch.Generator().manual_seed(7)
    ref_sizes = np.linspace(500, n, 15).astype("int32")
    ref = []
    for size in ref_sizes:
        part = fake[torch.randperm(n, generator=g)[:size].numpy()]
        ref.append(scipy_fd(part.mean(0), np.cov(part, rowvar=False), mu_r, sigma_r))
    reg = LinearRegression().fit(1 / ref_sizes.reshape(-1, 1), np.array(ref).reshape(-1, 1))
    assert sizes == ref_sizes.tolist()
    assert np.allclose(fds, ref, rtol=1e-9, atol=1e-12)
    assert value == pytest.approx(float(reg.predict(np.array([[0.0]]))[0, 0]), rel=1e-9, abs=1e-12)


def test_fd_infinity_removes_the_bias_on_gaussians_with_a_known_distance():
    """Fake ~ N(m, diag(s^2)) against the exact real N(0, I): FD = |m|^2 + sum (s - 1)^2."""
    g = torch.Generator().manual_seed(0)
    d, n = 64, 4000
    m = torch.full((d,), 0.05, dtype=torch.float64)
    s = torch.linspace(0.8, 1.2, d, dtype=torch.float64)
    fake = torch.randn(n, d, generator=g, dtype=torch.float64) * s + m
    truth = float(m.square().sum() + (s - 1).square().sum())
    value, sizes, fds = fd_infinity(fake, torch.zeros(d, dtype=torch.float64), torch.eye(d, dtype=torch.float64),
                                    500, 15, generator=g)
    full_bias, inf_bias = fds[-1] - truth, value - truth
    # 4000 samples of 64 dimensions: FD_N still carries ~ d(d+1)/(2N)-sized bias, FD-infinity a fraction of it
    assert full_bias > 0.1 and abs(inf_bias) < 0.25 * full_bias, (truth, fds[-1], value)


class MeanPool(torch.nn.Module):
    """A 4-feature user extractor: channel means over 2 x 2 cells."""

    num_features = 4

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, 2).flatten(1)


def fid_cfg(**extra):
    return OmegaConf.create({"fid": {"kind": "fid", "num_samples": 300,
                                     "extractor": {"_target_": f"{__name__}.MeanPool"},
                                     "infinity": True, "infinity_min": 50, "infinity_points": 6, **extra}})


def test_the_fid_option_reports_fid_inf_from_every_generated_feature(tmp_path, monkeypatch):
    from genexp.metrics.kinds import fid as fid_kind

    seen = {}
    real_fd_infinity = fid_kind.fd_infinity

    def recording(fake, mu, sigma, smallest, points, generator=None):
        seen.update(fake=fake.clone(), mu=mu.clone(), sigma=sigma.clone(), smallest=smallest, points=points)
        seen["result"] = real_fd_infinity(fake, mu, sigma, smallest, points, generator)
        return seen["result"]

    monkeypatch.setattr(fid_kind, "fd_infinity", recording)
    data = DigitsDataset(resolution=8)
    suite = MetricSuite(fid_cfg(), data, DIGITS, torch.device("cpu"), print, batch_size=64, cache_dir=tmp_path)
    fakes = []

    def sample(n, g):
        x = torch.rand(n, 1, 8, 8, generator=g) * 2 - 1
        fakes.append(x)
        return x

    out = suite.compute(sample, seed=0)
    fid_key, inf_key = list(out)
    assert re.fullmatch(r"fid/MeanPool-[0-9a-f]{6}@300", fid_key) and inf_key == fid_key.replace("fid/", "fid_inf/")
    assert out[inf_key] == seen["result"][0] and seen["smallest"] == 50 and seen["points"] == 6
    # every generated feature, in order, and the real statistics of the 300 real images the suite drew
    fake_features = MeanPool()(torch.cat(fakes)).double()
    assert torch.allclose(seen["fake"].double(), fake_features, atol=1e-6)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:300]
    real = MeanPool()(torch.stack([data[int(i)][0] for i in order])).double().numpy()
    assert np.allclose(seen["mu"].numpy(), real.mean(0), atol=1e-6)
    assert np.allclose(seen["sigma"].numpy(), np.cov(real, rowvar=False), atol=1e-6)
    # and the FID beside it is the full-sample FD of the same features (scipy's)
    fake = fake_features.numpy()
    expected = scipy_fd(fake.mean(0), np.cov(fake, rowvar=False), real.mean(0), np.cov(real, rowvar=False))
    assert out[fid_key] == pytest.approx(expected, rel=1e-4)
    proto = suite.protocol()[fid_key]["fd_infinity"]
    assert proto["subset_sizes"] == "6 evenly spaced from 50 to 300"
    assert direction("fid_inf") == "minimize" and direction(inf_key) == "minimize"


@pytest.mark.parametrize("extra, message", [
    ({"infinity_min": 300}, "needs 2 <= infinity_min < num_samples"),
    ({"infinity_points": 1}, "at least 2 points"),
])
def test_impossible_settings_are_refused_in_one_line(extra, message):
    with pytest.raises(UserError, match=message) as err:
        MetricSuite(fid_cfg(**extra), DigitsDataset(resolution=8), DIGITS, torch.device("cpu"), print)
    assert "\n" not in str(err.value) and "metrics.fid.infinity" in str(err.value)


def test_the_smallest_subset_obeys_the_fid_minimum():
    notes = []
    MetricSuite(fid_cfg(infinity_min=5), DigitsDataset(resolution=8), DIGITS, torch.device("cpu"), notes.append)
    assert any("5 generated (smallest FD-infinity subset) samples, under the minimum of 8" in n for n in notes), notes
