"""One feature pass per image for every metric that reads the same extractor (metrics/featured.py)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.digits import DigitsDataset
from genexp.metrics.extractors import ClassifierFeatures
from genexp.metrics.suite import MetricSuite

DATA_CFG = OmegaConf.create({"name": "digits", "kind": "image"})
N = 300
THREE = {"fid": {"kind": "fid", "num_samples": N, "extractor": "digits_lenet"},
         "kid": {"kind": "kid", "num_samples": N, "subsets": 3, "subset_size": 100, "extractor": "digits_lenet"},
         "pr": {"kind": "pr", "num_samples": N, "k": 3, "density_coverage": True, "extractor": "digits_lenet"}}


@pytest.fixture
def images_through_the_extractor(monkeypatch):
    """Counts every image that goes through genexp's classifiers, per output (features / logits)."""
    seen = {"features": 0, "logits": 0}
    forward = ClassifierFeatures.forward

    def counted(self, x):
        seen[self.output] += len(x)
        return forward(self, x)

    monkeypatch.setattr(ClassifierFeatures, "forward", counted)
    return seen


def noise(n, g):
    return torch.rand(n, 1, 16, 16, generator=g) * 2 - 1


def evaluate(metrics: dict, sample=noise) -> dict[str, float]:
    suite = MetricSuite(OmegaConf.create(metrics), DigitsDataset(resolution=16), DATA_CFG, torch.device("cpu"),
                        lambda _: None, batch_size=128)
    return suite.compute(sample, seed=0)


def test_fid_kid_and_pr_on_one_extractor_see_each_image_once(images_through_the_extractor):
    together = evaluate(THREE)
    # 300 real images and 300 generated ones, each once: not once per metric (3 x 600 before).
    assert images_through_the_extractor == {"features": 2 * N, "logits": 0}
    apart = {}
    for name, cfg in THREE.items():
        apart.update(evaluate({name: cfg}))
    assert images_through_the_extractor["features"] == 2 * N * (1 + len(THREE))
    assert together == apart


def test_a_smaller_metric_reads_a_leading_slice_of_the_same_batch(images_through_the_extractor):
    metrics = {"fid": THREE["fid"], "pr": {**THREE["pr"], "num_samples": 200}}
    evaluate(metrics)
    assert images_through_the_extractor["features"] == 2 * N


def test_a_batch_rewritten_in_place_is_extracted_again(images_through_the_extractor):
    """A sampler that returns one buffer, rewritten for every batch: the same address each time, but the
    in-place writes bump its version, so no metric gets the previous batch's features."""
    buffer = torch.empty(128, 1, 16, 16)

    def into_one_buffer(n, g):
        return buffer[:n].copy_(noise(n, g))

    assert evaluate(THREE, into_one_buffer) == evaluate(THREE)
    assert images_through_the_extractor["features"] == 2 * (2 * N)


def test_other_weights_or_filters_are_other_passes(images_through_the_extractor):
    metrics = {"fid": THREE["fid"], "kid": {**THREE["kid"], "resize": "box"}}
    evaluate(metrics)
    assert images_through_the_extractor["features"] == 2 * (2 * N)
