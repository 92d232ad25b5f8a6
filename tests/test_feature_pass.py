"""One feature pass per image for every metric that reads the same extractor (metrics/featured.py):
FID, KID and PR read the features, IS the logits of the same network, all from one forward pass."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.digits import DigitsDataset
from genexp.metrics.classifiers import SmallClassifier
from genexp.metrics.extractors import build_extractor
from genexp.metrics.featured import SharedPass
from genexp.metrics.inception import FIDInceptionV3
from genexp.metrics.suite import MetricSuite

DATA_CFG = OmegaConf.create({"name": "digits", "kind": "image"})
N = 300
THREE = {"fid": {"kind": "fid", "num_samples": N, "extractor": "digits_lenet"},
         "kid": {"kind": "kid", "num_samples": N, "subsets": 3, "subset_size": 100, "extractor": "digits_lenet"},
         "pr": {"kind": "pr", "num_samples": N, "k": 3, "density_coverage": True, "extractor": "digits_lenet"}}
FOUR = {**THREE, "is": {"kind": "is", "num_samples": N, "splits": 2, "extractor": "digits_lenet"}}


def count_images(monkeypatch, cls, method: str) -> dict[str, int]:
    """Counts every image that goes through ``cls.method`` (a network's body, the forward pass that its
    features and logits share)."""
    seen = {"images": 0}
    body = getattr(cls, method)

    def counted(self, x):
        seen["images"] += len(x)
        return body(self, x)

    monkeypatch.setattr(cls, method, counted)
    return seen


@pytest.fixture
def images_through_the_extractor(monkeypatch):
    return count_images(monkeypatch, SmallClassifier, "features")


def noise(n, g):
    return torch.rand(n, 1, 16, 16, generator=g) * 2 - 1


def evaluate(metrics: dict, sample=noise) -> dict[str, float]:
    suite = MetricSuite(OmegaConf.create(metrics), DigitsDataset(resolution=16), DATA_CFG, torch.device("cpu"),
                        lambda _: None, batch_size=128)
    # KID's subsets and IS's split order come from a stream of each metric's own (suite.metric_seed):
    # a metric's value does not depend on which others run beside it, which the tests below compare.
    return suite.compute(sample, seed=0)


def test_fid_kid_and_pr_on_one_extractor_see_each_image_once(images_through_the_extractor):
    together = evaluate(THREE)
    # 300 real images and 300 generated ones, each once: not once per metric (3 x 600 before).
    assert images_through_the_extractor == {"images": 2 * N}
    apart = {}
    for name, cfg in THREE.items():
        apart.update(evaluate({name: cfg}))
    assert images_through_the_extractor["images"] == 2 * N * (1 + len(THREE))
    assert together == apart


def test_a_smaller_metric_reads_a_leading_slice_of_the_same_batch(images_through_the_extractor):
    metrics = {"fid": THREE["fid"], "pr": {**THREE["pr"], "num_samples": 200}}
    evaluate(metrics)
    assert images_through_the_extractor["images"] == 2 * N


def test_a_batch_rewritten_in_place_is_extracted_again(images_through_the_extractor):
    """A sampler that returns one buffer, rewritten for every batch: the same address each time, but the
    in-place writes bump its version, so no metric gets the previous batch's features."""
    buffer = torch.empty(128, 1, 16, 16)

    def into_one_buffer(n, g):
        return buffer[:n].copy_(noise(n, g))

    assert evaluate(THREE, into_one_buffer) == evaluate(THREE)
    assert images_through_the_extractor["images"] == 2 * (2 * N)


def test_other_weights_or_filters_are_other_passes(images_through_the_extractor):
    metrics = {"fid": THREE["fid"], "kid": {**THREE["kid"], "resize": "box"}}
    evaluate(metrics)
    assert images_through_the_extractor["images"] == 2 * (2 * N)


def test_is_reads_the_logits_of_the_same_pass_as_fid_kid_and_pr(images_through_the_extractor):
    together = evaluate(FOUR)
    # 300 real images (FID, KID, PR) and 300 generated ones (all four), each once: 2 x 600 before, when IS
    # ran a pass of its own on the generated images.
    assert images_through_the_extractor["images"] == 2 * N
    apart = {}
    for name, cfg in FOUR.items():
        apart.update(evaluate({name: cfg}))
    assert images_through_the_extractor["images"] == 2 * N + 2 * N * len(THREE) + N
    assert together == apart and set(together) >= {"fid/digits_lenet@300", "is/digits_lenet@300"}


def test_the_shared_logits_are_the_classifiers_own(images_through_the_extractor):
    """Both outputs from one pass are what the network computes on its own: its body, and its forward
    (body then head), bit for bit."""
    module, _ = build_extractor("digits_lenet", "features")
    shared = SharedPass(module, "features")
    features, logits = shared.reader("features"), shared.reader("logits")
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    assert logits.num_features == 10 and features.num_features == 128
    got = logits(x), features(x)
    assert images_through_the_extractor["images"] == len(x)
    with torch.no_grad():
        assert torch.equal(got[0], module.net(x)) and torch.equal(got[1], module.net.features(x))


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """Random FID Inception weights (He init, so that signal survives 94 layers) in a weight file."""
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, value in FIDInceptionV3().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("conv.weight"):
            state[key] = torch.randn(value.shape, generator=g) * math.sqrt(2.0 / value[0].numel())
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = 1 + 0.1 * torch.rand(value.shape, generator=g)
        else:
            state[key] = 0.01 * torch.randn(value.shape, generator=g)
    path = tmp_path_factory.mktemp("weights") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def images_through_inception(monkeypatch):
    return count_images(monkeypatch, FIDInceptionV3, "pool_features")


def test_inception_gives_pool_features_and_is_logits_from_one_pass(inception_file, images_through_inception):
    both, _ = build_extractor("inception", "features", weights=str(inception_file))
    shared = SharedPass(both, "features")
    features, logits = shared.reader("features"), shared.reader("logits")
    x = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    got = features(x), logits(x)
    assert images_through_inception["images"] == 1 and (features.num_features, logits.num_features) == (2048, 1008)
    alone, _ = build_extractor("inception", "logits", weights=str(inception_file))
    # The single-output extractor the metrics read before, and the network's own (features, logits).
    assert torch.equal(got[1], alone(x)) and torch.equal(got[0], both(x))
    assert torch.equal(got[1], got[0] @ alone.net.fc.weight.T)


@pytest.mark.slow
def test_fid_kid_pr_and_is_on_inception_see_each_generated_image_once(inception_file, images_through_inception):
    n, weights = 6, str(inception_file)
    four = {"fid": {"kind": "fid", "num_samples": n, "allow_small": True},
            "kid": {"kind": "kid", "num_samples": n, "subsets": 2, "subset_size": 3},
            "pr": {"kind": "pr", "num_samples": n, "k": 2},
            "is": {"kind": "is", "num_samples": n, "splits": 2}}
    four = {name: {**cfg, "extractor": "inception", "weights": weights} for name, cfg in four.items()}

    def run(metrics):
        suite = MetricSuite(OmegaConf.create(metrics), DigitsDataset(resolution=16), DATA_CFG, torch.device("cpu"),
                            lambda _: None, batch_size=4)
        return suite.compute(noise, seed=0)

    together = run(four)
    assert images_through_inception["images"] == 2 * n  # reals once, fakes once (3 n with IS's own pass)
    apart = {}
    for name, cfg in four.items():
        apart.update(run({name: cfg}))
    assert together == apart and all(math.isfinite(v) for k, v in together.items() if "_std" not in k)
