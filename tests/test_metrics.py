"""The metric suite: keys name what was measured, numbers behave, missing extractors skip in one line."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.digits import DigitsDataset
from genexp.metrics.extractors import MetricUnavailable, asset_path, build_extractor
from genexp.metrics.suite import MetricSuite, count_label

DATA_CFG = OmegaConf.create({"name": "digits", "kind": "image"})


def suite(metrics: dict, dataset, n=None, notes=None):
    return MetricSuite(OmegaConf.create(metrics), dataset, DATA_CFG, torch.device("cpu"),
                       (notes.append if notes is not None else print), num_samples=n)


def from_data(dataset):
    """A 'generator' that returns real images in a seeded order."""
    def sample(n, g):
        idx = torch.randint(len(dataset), (n,), generator=g)
        return dataset.x[idx]
    return sample


def test_count_labels():
    assert [count_label(n) for n in (2000, 2500, 1797, 50000, 64)] == ["2k", "2.5k", "1797", "50k", "64"]


def test_shipped_digits_classifier_reaches_its_stated_accuracy():
    from sklearn.model_selection import train_test_split

    info = json.loads(asset_path("digits_lenet.json").read_text())
    net, _ = build_extractor("digits_lenet", "logits")
    data = DigitsDataset(resolution=16)
    _, test_idx = train_test_split(torch.arange(len(data)).numpy(), test_size=0.25, random_state=0,
                                   stratify=data.y.numpy())
    acc = (net(data.x[test_idx]).argmax(1) == data.y[test_idx]).float().mean().item()
    assert acc == pytest.approx(info["held_out_accuracy"], abs=1e-4) and acc >= 0.99


def test_real_digits_score_like_real_data():
    data = DigitsDataset(resolution=16)
    metrics = {"fid": {"kind": "fid", "num_samples": 1000, "extractor": "auto"},
               "is": {"kind": "is", "num_samples": 1000, "splits": 5, "extractor": "auto"},
               "kid": {"kind": "kid", "num_samples": 1000, "subsets": 20, "subset_size": 200, "extractor": "auto"}}
    s = suite(metrics, data)
    real = s.compute(from_data(data), seed=0)
    noise = s.compute(lambda n, g: torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, seed=0)
    assert set(real) == {"fid/digits_lenet@1k", "is/digits_lenet@1k", "is_std/digits_lenet@1k",
                         "kid/digits_lenet@1k", "kid_std/digits_lenet@1k"}
    # real vs real: FID and KID near zero, IS near the class count; noise: far worse on all three
    assert real["fid/digits_lenet@1k"] < 0.05 * noise["fid/digits_lenet@1k"]
    assert abs(real["kid/digits_lenet@1k"]) < 0.01 * noise["kid/digits_lenet@1k"]
    assert real["is/digits_lenet@1k"] > 8.5 and noise["is/digits_lenet@1k"] < 3
    # the same suite, the same seed: the same numbers (real statistics are kept, not recomputed)
    assert s.compute(from_data(data), seed=0) == real


def test_metrics_skip_on_points_with_one_line():
    notes = []
    s = MetricSuite(OmegaConf.create({"fid": {"kind": "fid", "num_samples": 10}}), None,
                    OmegaConf.create({"name": "ring", "kind": "points"}), torch.device("cpu"), notes.append)
    assert not s and len(notes) == 1 and "image data" in notes[0]


def test_inception_and_lpips_skip_with_what_to_install_when_unavailable():
    try:
        import torch_fidelity  # noqa: F401
        pytest.skip("torch-fidelity is installed here")
    except ImportError:
        pass
    notes = []
    s = suite({"fid": {"kind": "fid", "num_samples": 10, "extractor": "inception"},
               "lpips": {"kind": "lpips", "num_samples": 10, "net": "alex"}}, DigitsDataset(), notes=notes)
    assert not s and len(notes) == 2
    assert all("\n" not in n for n in notes)
    assert "genexp[gpu]" in notes[0] and "genexp[gpu]" in notes[1]


def test_missing_weight_file_names_it():
    with pytest.raises(MetricUnavailable, match="nope.pt"):
        build_extractor("digits_lenet", "features", weights="/nope.pt")
