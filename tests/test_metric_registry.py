"""The metric registry, and numbers that say how far they can be trusted (issue 15 items 1 and 6)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.digits import DigitsDataset
from genexp.errors import UserError
from genexp.metrics import registry
from genexp.metrics.registry import MAX, MetricKind, count_label
from genexp.metrics.suite import MetricSuite, over_seeds

from .test_bad_input import one_error_line
from .test_eval_images import write_pngs

DATA_CFG = OmegaConf.create({"name": "digits", "kind": "image"})


def suite(metrics: dict, dataset, notes=None, **kw):
    return MetricSuite(OmegaConf.create(metrics), dataset, DATA_CFG, torch.device("cpu"),
                       (notes.append if notes is not None else print), **kw)


def from_data(dataset):
    def sample(n, g):
        return dataset.x[torch.randint(len(dataset), (n,), generator=g)]
    return sample


class MeanBrightness(MetricKind):
    """A toy metric: the mean pixel value of the samples."""

    kind = "toy_brightness"
    directions = {"brightness/": MAX}

    def __init__(self, name, cfg, ctx):
        super().__init__(name, cfg, ctx)
        self.num_samples = int(ctx.num_samples or cfg.num_samples)
        self.key, self.protocol = f"brightness/pixels@{count_label(self.num_samples)}", {"num_fake": self.num_samples}

    def reset_fake(self):
        self.total, self.count = 0.0, 0

    def update_fake(self, x, start, batch):
        self.total, self.count = self.total + float(x.double().sum()), self.count + x.numel()

    def compute(self):
        return {self.key: self.total / self.count}


@pytest.fixture
def toy_registered(monkeypatch):
    registry.registered()  # the built-in kinds first, so the toy one is removed again after the test
    monkeypatch.setitem(registry._KINDS, MeanBrightness.kind, MeanBrightness)
    yield


def test_a_new_metric_is_one_registered_class(toy_registered):
    data = DigitsDataset(resolution=16)
    s = suite({"bright": {"kind": "toy_brightness", "num_samples": 40}}, data)
    result = s.compute(lambda n, g: torch.full((n, 1, 16, 16), 0.25))
    assert result == {"brightness/pixels@40": 0.25}
    assert registry.direction("toy_brightness") == "maximize" and registry.better("brightness/pixels@40", 2.0, 1.0)
    from genexp.config.prepare import objective_direction
    from genexp.metrics.suite import HIGHER_IS_BETTER

    assert objective_direction("brightness") == "maximize" and "brightness/" in HIGHER_IS_BETTER


def test_every_shipped_yaml_names_a_registered_kind_and_directions_hold():
    from genexp.config.prepare import objective_direction

    kinds = registry.registered()
    yamls = sorted((Path(__file__).parents[1] / "conf" / "metrics").glob("*.yaml"))
    assert len(yamls) >= 10 and all(OmegaConf.load(path).kind in kinds for path in yamls)
    expected = {"fid": "minimize", "kid": "minimize", "kid_x1e3": "minimize", "is": "maximize", "pr": "maximize",
                "precision": "maximize", "modes": None, "modes/captured": "maximize", "modes/reverse_kl": "minimize",
                "stacked_modes": None, "nll": "minimize", "bpd": "minimize", "ppl": "minimize",
                "lpips_diversity": "maximize"}
    assert {name: objective_direction(name) for name in expected} == expected


def test_an_unregistered_metric_is_refused_in_one_line(run, tmp_path):
    with pytest.raises(UserError) as err:
        suite({"mine": {"kind": "sharpness", "num_samples": 10}}, DigitsDataset(resolution=16))
    line = str(err.value)
    assert "\n" not in line and "sharpness" in line and "registered: fid, is, kid" in line
    line = one_error_line(run("eval", "data=digits", "stats_only=true", "metrics=[fid]", "metrics.fid.kind=sharpness",
                              f"hydra.run.dir={tmp_path}"))
    assert "metrics.fid.kind=sharpness: not a registered metric" in line


def test_too_few_samples_are_refused_unless_allowed():
    data = DigitsDataset(resolution=16)
    fid = {"kind": "fid", "num_samples": 100, "extractor": "auto"}
    with pytest.raises(UserError, match=r"fid/digits_lenet@100: 100 generated and 100 real samples, under the "
                                        r"minimum of 256 .*metrics\.fid\.allow_small=true"):
        suite({"fid": fid}, data, small="refuse")
    with pytest.raises(UserError, match="under the minimum of 128"):
        suite({"kid": {"kind": "kid", "num_samples": 100, "subsets": 5, "subset_size": 50}}, data, small="refuse")
    with pytest.raises(UserError, match="under the minimum of 128"):
        suite({"pr": {"kind": "pr", "num_samples": 100, "k": 3}}, data, small="refuse")
    allowed = suite({"fid": {**fid, "allow_small": True}}, data, small="refuse")
    assert math.isfinite(allowed.compute(from_data(data))["fid/digits_lenet@100"])
    assert allowed.protocol()["fid/digits_lenet@100"]["allow_small"] is True
    notes = []
    noted = suite({"fid": fid}, data, notes=notes)  # training: the trend goes on, with one line
    noted.compute(from_data(data))
    noted.compute(from_data(data))
    assert len(notes) == 1 and "not a number to quote" in notes[0]
    assert noted.protocol()["fid/digits_lenet@100"]["below_minimum"] is True


def test_eval_of_two_images_is_refused(run, tmp_path):
    """The issue's case: FID from 2 generated images against 2 reals, exit 0."""
    folder = write_pngs(tmp_path / "two", torch.rand(2, 1, 16, 16) * 2 - 1)
    line = one_error_line(run("eval", f"fake={folder}", "data=digits", "metrics=[fid]",
                              f"hydra.run.dir={tmp_path / 'e'}"))
    assert "fid/digits_lenet@2: 2 generated and 2 real samples, under the minimum of 256" in line


def test_kid_is_per_mille_and_its_spread_only_where_subsets_differ():
    data = DigitsDataset(resolution=16)
    same = suite({"kid": {"kind": "kid", "num_samples": 150, "subsets": 10, "subset_size": 1000}}, data)
    result = same.compute(from_data(data))
    assert set(result) == {"kid_x1e3/digits_lenet@150"}  # every subset is the whole set: no spread to show
    differ = suite({"kid": {"kind": "kid", "num_samples": 150, "subsets": 10, "subset_size": 50}}, data)
    result = differ.compute(from_data(data))
    assert set(result) == {"kid_x1e3/digits_lenet@150", "kid_x1e3_std/digits_lenet@150"}
    assert result["kid_x1e3_std/digits_lenet@150"] > 0
    assert differ.protocol()["kid_x1e3/digits_lenet@150"]["unit"] == "KID x 10^3"


def test_kid_value_is_torchmetrics_times_1000():
    from torchmetrics.image.kid import KernelInceptionDistance

    from genexp.metrics.extractors import build_extractor

    data = DigitsDataset(resolution=16)
    s = suite({"kid": {"kind": "kid", "num_samples": 150, "subsets": 1, "subset_size": 150}}, data)
    ours = s.compute(lambda n, g: data.x[-n:])["kid_x1e3/digits_lenet@150"]
    net, _ = build_extractor("digits_lenet", "features")
    kid = KernelInceptionDistance(feature=net, subsets=1, subset_size=150)
    order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:150]
    kid.update(data.x[order], real=True)
    kid.update(data.x[-150:], real=False)
    assert ours == pytest.approx(1e3 * float(kid.compute()[0]), rel=1e-5)


def test_inception_score_is_finite_with_a_zero_probability_class():
    from torchmetrics.image.inception import InceptionScore

    from genexp.metrics.kinds.inception_score import float64_inception_score, inception_score

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(40, 10, generator=g) * 3
    logits[:, 9] = -200.0  # exp(-200) is 0 in float32: torchmetrics multiplies 0 by log 0
    assert float(torch.softmax(logits, 1)[:, 9].max()) == 0.0

    class Identity(torch.nn.Module):
        num_features = 10

        def forward(self, x):
            return x

    tm = InceptionScore(feature=Identity(), splits=1)
    tm.update(logits)
    assert math.isnan(float(tm.compute()[0]))
    ours = float64_inception_score(Identity(), splits=1)
    ours.update(logits)
    mean, _ = ours.compute()
    p = torch.softmax(logits.double(), 1).numpy()
    py = p.mean(0)
    reference = math.exp(np.mean([sum(pi * math.log(pi / q) for pi, q in zip(row, py) if pi > 0) for row in p]))
    assert float(mean) == pytest.approx(reference, rel=1e-9)
    # where float32 is finite, the two agree
    tm2, ours2 = InceptionScore(feature=Identity(), splits=4), float64_inception_score(Identity(), splits=4)
    finite = torch.randn(80, 10, generator=g)
    tm2.update(finite)
    ours2.update(finite)
    torch.manual_seed(1)
    a = tm2.compute()
    torch.manual_seed(1)
    b = ours2.compute()
    assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-5) and float(a[1]) == pytest.approx(float(b[1]), rel=1e-3)
    assert inception_score(finite, 1)[0] > 1


class Scaled(torch.nn.Module):
    """A user encoder: channel means on a grid, times a learnt scale."""

    def __init__(self, cells: int = 4):
        super().__init__()
        self.cells = cells
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, self.cells).flatten(1) * self.scale


def test_two_custom_extractors_of_one_class_get_different_keys(tmp_path):
    data = DigitsDataset(resolution=16)
    torch.save({"scale": torch.tensor([3.0])}, tmp_path / "other.pt")
    spec = {"_target_": f"{__name__}.Scaled"}
    s = suite({"a": {"kind": "fid", "num_samples": 64, "extractor": spec},
               "b": {"kind": "fid", "num_samples": 64, "extractor": spec, "weights": str(tmp_path / "other.pt")},
               "c": {"kind": "fid", "num_samples": 64, "extractor": {**spec, "cells": 2}}}, data)
    keys = list(s.protocol())
    assert len(set(keys)) == 3 and all(k.startswith("fid/Scaled-") for k in keys), keys
    assert len(s.compute(from_data(data))) == 3


def test_repeats_report_the_mean_and_spread_over_seeds(run, tmp_path):
    data = DigitsDataset(resolution=16)
    s = suite({"fid": {"kind": "fid", "num_samples": 300}, "is": {"kind": "is", "num_samples": 300, "splits": 2}}, data)
    per_seed = [s.compute(from_data(data), seed=seed) for seed in (0, 1, 2)]
    out = over_seeds(per_seed)
    values = [r["fid/digits_lenet@300"] for r in per_seed]
    assert len(set(values)) == 3  # the seeds draw different fakes
    assert out["fid/digits_lenet@300"] == pytest.approx(np.mean(values))
    assert out["fid_std/digits_lenet@300"] == pytest.approx(np.std(values, ddof=1))
    assert out["is_std/digits_lenet@300"] == pytest.approx(np.std([r["is/digits_lenet@300"] for r in per_seed], ddof=1))
    assert set(out) == {"fid/digits_lenet@300", "fid_std/digits_lenet@300", "is/digits_lenet@300",
                        "is_std/digits_lenet@300"}
    folder = write_pngs(tmp_path / "imgs", data.x[:300])
    line = one_error_line(run("eval", f"fake={folder}", "data=digits", "metrics=[fid]", "metrics.repeats=3",
                              f"hydra.run.dir={tmp_path / 'e'}"))
    assert "metrics.repeats=3" in line and "ckpt=" in line


@pytest.mark.slow  # make test under 10 min; repeats' mean and spread: test_repeats_report_the_mean_and_spread_over_seeds
def test_eval_repeats_over_seeds_from_a_checkpoint(run, tmp_path):
    import json

    from .conftest import TINY

    res = run("train", *TINY, "trainer.eval_every=0", f"hydra.run.dir={tmp_path / 'train'}")
    assert res.code == 0, res
    out = tmp_path / "eval"
    res = run("eval", f"ckpt={tmp_path / 'train/checkpoints/last.pt'}", "metrics=[fid]", "n=300", "metrics.repeats=3",
              "trainer.progress=plain", f"hydra.run.dir={out}")
    assert res.code == 0, res
    record = json.loads((out / "metrics.json").read_text())
    values = [r["metrics"]["fid/digits_lenet@300"] for r in record["per_seed"]]
    assert [r["seed"] for r in record["per_seed"]] == [0, 1, 2] and len(set(values)) == 3
    assert record["metrics"]["fid/digits_lenet@300"] == pytest.approx(np.mean(values))
    assert record["metrics"]["fid_std/digits_lenet@300"] == pytest.approx(np.std(values, ddof=1))
    assert record["protocol"]["repeats"]["seeds"] == [0, 1, 2]


def test_an_objective_names_keys_by_kind_or_prefix():
    """trainer.objective=kid finds KID's key, whose text is kid_x1e3/... (keep_best and sweeps use this)."""
    from genexp.commands.train import objective
    from genexp.metrics.registry import names_key

    assert names_key("kid", "kid_x1e3/digits_lenet@2k") and names_key("kid_x1e3", "kid_x1e3/digits_lenet@2k")
    assert not names_key("kid", "kid_x1e3_std/digits_lenet@2k") and not names_key("fid", "kid_x1e3/x@2k")
    best = {"fid/digits_lenet@2k": 50.0, "kid_x1e3/digits_lenet@2k": 12.0}
    assert objective(best, "kid") == 12.0 and objective(best, "fid") == 50.0 and objective(best, "is") is None
