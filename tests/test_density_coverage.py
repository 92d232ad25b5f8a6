"""Precision, recall, density and coverage against the authors' ``prdc`` package (Naeem et al. 2020), in
distance blocks of any size, and as the ``prdc`` metric of the suite."""

from __future__ import annotations

import contextlib
import io

import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.digits import DigitsDataset
from genexp.metrics import registry
from genexp.metrics.precision_recall import prdc
from genexp.metrics.suite import MetricSuite

from .conftest import CONF, compose

prdc_package = pytest.importorskip("prdc", reason="the prdc package (pip install prdc, in the dev extra)")
STATISTICS = ("precision", "recall", "density", "coverage")


def reference(real: torch.Tensor, fake: torch.Tensor, k: int) -> dict[str, float]:
    """The prdc package on the same features, in float64 (it prints the sample counts: silenced)."""
    with contextlib.redirect_stdout(io.StringIO()):
        out = prdc_package.compute_prdc(real.double().numpy(), fake.double().numpy(), nearest_k=k)
    return {s: float(out[s]) for s in STATISTICS}


def features(seed: int, n_real: int = 600, n_fake: int = 500, dim: int = 12):
    """Continuous random features (a distance equal to a radius has probability 0), the fakes shifted and
    spread so that every statistic lies strictly between its extremes."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n_real, dim, generator=g), torch.randn(n_fake, dim, generator=g) * 1.15 + 0.25


@pytest.mark.parametrize("seed,k", [(0, 3), (1, 5), (2, 10)])
def test_all_four_equal_the_prdc_package(seed, k):
    real, fake = features(seed)
    ours, ref = prdc(real, fake, k), reference(real, fake, k)
    for s in STATISTICS:
        assert ours[s] == pytest.approx(ref[s], abs=1e-6), s
    assert 0 < ours["precision"] < 1 and 0 < ours["recall"] < 1 and 0 < ours["coverage"] < 1
    assert 0 < ours["density"] < 2


def test_precision_recall_and_density_coverage_take_their_own_k():
    """k = 3 for precision/recall (Kynkaanniemi et al.) with k = 5 for density/coverage (Naeem et al.) is
    prdc's precision/recall at 3 and its density/coverage at 5."""
    real, fake = features(3)
    ours, at3, at5 = prdc(real, fake, k=3, dc_k=5), reference(real, fake, 3), reference(real, fake, 5)
    assert (ours["precision"], ours["recall"]) == pytest.approx((at3["precision"], at3["recall"]), abs=1e-6)
    assert (ours["density"], ours["coverage"]) == pytest.approx((at5["density"], at5["coverage"]), abs=1e-6)


@pytest.mark.parametrize("block_rows", [1, 7, 64, 600])
def test_blocks_of_any_size_give_identical_numbers(block_rows):
    """Distances in blocks of 1, 7 (the last block short), 64 rows, or all 600 at once (unblocked: one n x n
    matrix): bit-identical, and the prdc package's numbers."""
    real, fake = features(4)
    unblocked = prdc(real, fake, 3, 5, block_rows=len(real))
    assert prdc(real, fake, 3, 5, block_rows=block_rows) == unblocked
    ref3, ref5 = reference(real, fake, 3), reference(real, fake, 5)
    assert unblocked == pytest.approx({**{s: ref3[s] for s in STATISTICS[:2]},
                                       **{s: ref5[s] for s in STATISTICS[2:]}}, abs=1e-6)


def test_a_tie_counts_inside_for_precision_recall_outside_for_density_coverage():
    """Integer points on a line, distances exact in float64. The real point 0's nearest neighbour (k = 1)
    is 1 away, and a fake at -1 lies exactly on that ball's surface: Kynkaanniemi et al. (and genexp) count it
    in precision (<=), the prdc package does not (<); density and coverage count it out in both."""
    real = torch.tensor([[0.0], [1.0], [3.0], [7.0]])
    fake = torch.tensor([[-1.0], [20.0], [22.0]])
    ours, ref = prdc(real, fake, k=1), reference(real, fake, 1)
    assert ours["precision"] == pytest.approx(1 / 3) and ref["precision"] == 0.0  # the only difference
    # the fake at -1 reaches 21 (to 20): every real point is strictly inside its ball, no tie for recall
    assert ours["recall"] == ref["recall"] == 1.0
    assert ours["density"] == ref["density"] == 0.0 and ours["coverage"] == ref["coverage"] == 0.0
    # one step inside the ball, both agree again
    inside = torch.tensor([[-0.5], [20.0], [22.0]])
    assert prdc(real, inside, k=1) == pytest.approx(reference(real, inside, 1))


def test_too_few_samples_for_k_is_refused():
    real, fake = features(5, n_real=5, n_fake=50)
    with pytest.raises(ValueError, match="k=5 nearest neighbours need more than 5 samples"):
        prdc(real, fake, k=3, dc_k=5)


def test_the_prdc_metric_reports_four_keys_higher_is_better_and_equals_the_package():
    data = DigitsDataset(resolution=16)
    cfg = OmegaConf.load(CONF / "metrics" / "prdc.yaml")
    cfg.merge_with({"num_samples": 400, "allow_small": False})
    suite = MetricSuite(OmegaConf.create({"prdc": cfg}), data, OmegaConf.create({"name": "digits", "kind": "image"}),
                        torch.device("cpu"), print)
    noise = suite.compute(lambda n, g: torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, seed=0)
    assert set(noise) == {f"{s}/digits_lenet@400" for s in STATISTICS}
    assert all(registry.direction_of_key(key) == registry.MAX for key in noise)
    m = suite.metrics[0]
    real, fake = torch.cat(m.metric.real_features), torch.cat(m.metric.fake_features)
    at3, at5 = reference(real, fake, 3), reference(real, fake, 5)
    expected = {"precision": at3["precision"], "recall": at3["recall"],
                "density": at5["density"], "coverage": at5["coverage"]}
    assert {key.split("/")[0]: v for key, v in noise.items()} == pytest.approx(expected, abs=1e-6)
    assert noise["coverage/digits_lenet@400"] < 0.1
    protocol = suite.protocol()["pr/digits_lenet@400"]
    assert protocol["k"] == 3 and protocol["density_coverage_k"] == 5


def test_metrics_prdc_composes_as_the_pr_kind_with_density_coverage():
    cfg = compose("eval", ["data=digits", "metrics=[fid,prdc]"]).metrics
    assert cfg.prdc.kind == "pr" and cfg.prdc.density_coverage and (cfg.prdc.k, cfg.prdc.density_coverage_k) == (3, 5)
    assert not OmegaConf.load(CONF / "metrics" / "pr.yaml").density_coverage  # pr keeps its two keys
