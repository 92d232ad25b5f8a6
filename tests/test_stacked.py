"""Stacked MNIST: the data, the MNIST classifier genexp ships, and the 1,000-mode count."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.stacked import StackedMnistDataset
from genexp.metrics.extractors import asset_path, build_extractor
from genexp.metrics.modes import kl_to_uniform, stacked_mode_statistics
from genexp.metrics.suite import MetricSuite

from .data.test_idx import write_split

SHARED_MNIST = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mnist"
needs_mnist = pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="../shared/data/mnist is not here")


def test_stacked_samples_are_three_digits_and_their_mode(tmp_path):
    images, labels = write_split(tmp_path, n=6)
    data = StackedMnistDataset(str(tmp_path), num_samples=20, resolution=28, download=False)
    x, y = data.get_batch(torch.arange(20))
    assert x.shape == (20, 3, 28, 28) and len(data) == 20 and data.num_classes == 1000
    for i in range(20):
        a, b, c = data.triples[i].tolist()
        assert int(y[i]) == int(labels[a]) * 100 + int(labels[b]) * 10 + int(labels[c])
        expected = torch.from_numpy(images[[a, b, c]]).float() / 127.5 - 1
        assert torch.allclose(x[i], expected)
    assert torch.equal(data[3][0], x[3])
    again = StackedMnistDataset(str(tmp_path), num_samples=20, resolution=28, download=False)
    assert torch.equal(again.triples, data.triples)  # a fixed draw for a fixed seed


def test_stacked_statistics_by_hand():
    modes = torch.tensor([0, 0, 1, 999])
    stats = stacked_mode_statistics(modes)
    assert stats["modes"] == 3
    assert stats["kl"] == pytest.approx(kl_to_uniform(torch.bincount(modes, minlength=1000)))
    assert stats["kl"] == pytest.approx(0.5 * torch.log(torch.tensor(500.0)).item() + 2 * 0.25 *
                                        torch.log(torch.tensor(250.0)).item())


@needs_mnist
def test_shipped_mnist_classifier_reaches_its_stated_accuracy():
    from genexp.data.idx import IdxDataset

    info = json.loads(asset_path("mnist_lenet.json").read_text())
    net, _ = build_extractor("mnist_lenet", "logits")
    test = IdxDataset(str(SHARED_MNIST), "mnist", "test", resolution=28, download=False)
    with torch.no_grad():
        pred = torch.cat([net(chunk).argmax(1) for chunk in test.x.split(2000)])
    acc = (pred == test.y).float().mean().item()
    assert acc == pytest.approx(info["test_accuracy"], abs=1e-4) and acc >= 0.99


@needs_mnist
@pytest.mark.slow
def test_real_stacked_mnist_covers_the_modes():
    data = StackedMnistDataset(str(SHARED_MNIST), split="test", num_samples=5000, download=False)
    suite = MetricSuite(OmegaConf.create({"stacked_modes": {"kind": "stacked_modes", "num_samples": 5000}}), data,
                        OmegaConf.create({"name": "stacked_mnist", "kind": "image"}), torch.device("cpu"), print)

    taken = []

    def real(n, g):  # every triple once, in order
        start = sum(taken)
        taken.append(n)
        return data.get_batch(torch.arange(start, start + n))[0]
    got = suite.compute(real, seed=0)
    # 5,000 draws from 1,000 equally likely modes: about 993 seen, KL near (k - 1) / 2n = 0.1
    assert got["stacked/modes@5k"] > 950 and got["stacked/kl@5k"] < 0.2
    collapsed = suite.compute(lambda n, g: data.get_batch(torch.zeros(n, dtype=torch.long))[0], seed=0)
    assert collapsed["stacked/modes@5k"] == 1 and collapsed["stacked/kl@5k"] == pytest.approx(6.9078, abs=1e-3)
