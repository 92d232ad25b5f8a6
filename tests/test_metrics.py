"""The metric suite: keys name what was measured, numbers behave, missing extractors skip in one line."""

from __future__ import annotations

import json
import math

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
                         "kid_x1e3/digits_lenet@1k", "kid_x1e3_std/digits_lenet@1k"}
    # real vs real: FID and KID near zero, IS near the class count; noise: far worse on all three
    assert real["fid/digits_lenet@1k"] < 0.05 * noise["fid/digits_lenet@1k"]
    assert abs(real["kid_x1e3/digits_lenet@1k"]) < 0.01 * noise["kid_x1e3/digits_lenet@1k"]
    assert real["is/digits_lenet@1k"] > 8.5 and noise["is/digits_lenet@1k"] < 3
    # the same suite, the same seed: the same numbers (real statistics are kept, not recomputed)
    assert s.compute(from_data(data), seed=0) == real


def test_default_metrics_that_do_not_fit_the_data_are_left_out_quietly():
    notes = []
    s = MetricSuite(OmegaConf.create({"fid": {"kind": "fid", "num_samples": 10}}), None,
                    OmegaConf.create({"name": "ring", "kind": "points"}), torch.device("cpu"), notes.append,
                    chosen=False)
    assert not s and notes == [] and "fid" in s.skipped


def test_metrics_skip_on_points_with_one_line():
    notes = []
    s = MetricSuite(OmegaConf.create({"fid": {"kind": "fid", "num_samples": 10}}), None,
                    OmegaConf.create({"name": "ring", "kind": "points"}), torch.device("cpu"), notes.append)
    assert not s and len(notes) == 1 and "do not apply to data=ring" in notes[0]


def test_inception_and_lpips_skip_with_what_to_provide_when_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no Inception or LPIPS weights there
    notes = []
    suite({"fid": {"kind": "fid", "num_samples": 10, "extractor": "inception"},
               "lpips": {"kind": "lpips", "num_samples": 10, "net": "alex"}}, DigitsDataset(), notes=notes)
    assert len(notes) == 2 and all("\n" not in n for n in notes)
    assert "metric fid skipped" in notes[0] and "weights-inception-2015-12-05-6726825d.pth" in notes[0]
    assert "metric lpips skipped" in notes[1] and str(tmp_path / "checkpoints" / "alexnet-owt-7be5be79.pth") in notes[1]
    assert "metrics.lpips.weights=" in notes[1]


def test_missing_weight_file_names_it():
    with pytest.raises(MetricUnavailable, match="nope.pt"):
        build_extractor("digits_lenet", "features", weights="/nope.pt")


def test_mode_statistics_by_hand():
    from genexp.metrics.modes import mode_statistics

    modes = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    samples = torch.tensor([[0.1, 0.0], [0.0, 0.2], [10.0, 0.1], [6.0, 5.2], [0.0, 9.0]])
    stats = mode_statistics(samples, modes, std=0.1, hq_sigmas=3.0)
    # high quality: the first three (within 0.3); modes 0 and 1 captured; nearest modes 0,0,1,3,2
    assert stats["captured"] == 2 and stats["hq_percent"] == pytest.approx(60.0)
    p = torch.tensor([2, 1, 1, 1]) / 5
    assert stats["reverse_kl"] == pytest.approx(float((p * (p * 4).log()).sum()))


def test_mode_metric_on_the_ring():
    from genexp.data.toy import RingDataset

    ring = RingDataset(num_samples=20000)
    cfg = OmegaConf.create({"name": "ring", "kind": "points"})
    s = MetricSuite(OmegaConf.create({"modes": {"kind": "modes", "num_samples": 2500, "hq_sigmas": 3.0},
                                      "fid": {"kind": "fid", "num_samples": 10}}), ring, cfg,
                    torch.device("cpu"), print)
    real = s.compute(from_data(ring), seed=0)
    assert real["modes/captured@2.5k"] == 8
    assert real["modes/hq_percent@2.5k"] == pytest.approx(100 * (1 - math.exp(-4.5)), abs=0.6)
    assert real["modes/reverse_kl@2.5k"] < 0.01
    collapsed = s.compute(lambda n, g: ring.modes[0] + 0.01 * torch.randn(n, 2, generator=g), seed=0)
    assert collapsed["modes/captured@2.5k"] == 1
    assert collapsed["modes/reverse_kl@2.5k"] == pytest.approx(math.log(8))


def brute_force_precision_recall(real, fake, k):
    """The paper's definition, one sample at a time, in float64."""
    def radii(x):
        return [sorted(float((a - b).norm()) for b in x)[k] for a in x]  # [0] is the sample itself

    def share(queries, support, r):
        return sum(any(float((q - s).norm()) <= ri for s, ri in zip(support, r)) for q in queries) / len(queries)

    real, fake = real.double(), fake.double()
    return share(fake, real, radii(real)), share(real, fake, radii(fake))


def test_precision_recall_matches_the_definition():
    from genexp.metrics.precision_recall import precision_recall

    g = torch.Generator().manual_seed(0)
    real = torch.randn(60, 5, generator=g)
    fake = torch.randn(50, 5, generator=g) + 1.0
    p, r = precision_recall(real, fake, k=3)
    assert (p, r) == pytest.approx(brute_force_precision_recall(real, fake, 3))
    assert 0 < p < 1 and 0 < r < 1
    # identical sets: everything is covered; a generator stuck on one real point: precise, no recall
    assert precision_recall(real, real.clone(), k=3) == (1.0, 1.0)
    collapsed = real[:1].repeat(40, 1) + 1e-4 * torch.randn(40, 5, generator=g)
    p, r = precision_recall(real, collapsed, k=3)
    assert p == 1.0 and r < 0.1
    with pytest.raises(ValueError, match="need more than 3 samples"):
        precision_recall(real[:3], fake, k=3)


def test_precision_recall_is_the_same_in_small_distance_blocks(monkeypatch):
    """Memory stays flat because distances come in fixed-size blocks: block edges change nothing."""
    import genexp.metrics.precision_recall as pr

    g = torch.Generator().manual_seed(1)
    real, fake = torch.randn(70, 4, generator=g), torch.randn(55, 4, generator=g) * 1.3
    whole = pr.precision_recall(real, fake, k=3)
    monkeypatch.setattr(pr, "BLOCK_ENTRIES", 7 * 70)  # 7 rows a block, the last one short
    assert pr.precision_recall(real, fake, k=3) == whole == pytest.approx(brute_force_precision_recall(real, fake, 3))


def test_precision_recall_in_the_suite_tells_noise_from_digits():
    data = DigitsDataset(resolution=16)
    s = suite({"pr": {"kind": "pr", "num_samples": 500, "k": 3, "extractor": "auto"}}, data)
    real = s.compute(from_data(data), seed=0)
    noise = s.compute(lambda n, g: torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, seed=0)
    assert set(real) == {"precision/digits_lenet@500", "recall/digits_lenet@500"}
    assert real["precision/digits_lenet@500"] > 0.6 and real["recall/digits_lenet@500"] > 0.6
    assert noise["precision/digits_lenet@500"] < 0.1
    assert s.protocol()["pr/digits_lenet@500"]["k"] == 3


CACHED = {"fid": {"kind": "fid", "num_samples": 300, "extractor": "auto"},
          "kid": {"kind": "kid", "num_samples": 300, "subsets": 5, "subset_size": 100, "extractor": "auto"},
          "pr": {"kind": "pr", "num_samples": 300, "k": 3, "extractor": "auto"}}


def cached_suite(tmp_path, dataset, data_cfg=DATA_CFG, metrics=None, notes=None):
    return MetricSuite(OmegaConf.create(metrics or CACHED), dataset, data_cfg, torch.device("cpu"),
                       (notes.append if notes is not None else print), cache_dir=tmp_path / "stats")


def test_cached_reference_statistics_give_the_same_numbers(tmp_path, monkeypatch):
    data = DigitsDataset(resolution=16)
    fresh = cached_suite(tmp_path, data).compute(from_data(data), seed=3)
    files = sorted(p.name for p in (tmp_path / "stats").iterdir())
    assert len(files) == 3 and all(f.endswith(".pt") for f in files)
    second = cached_suite(tmp_path, data)

    def no_real_pass(*_):
        raise AssertionError("the real data were read again")
    monkeypatch.setattr(second, "_compute_real", no_real_pass)
    assert second.compute(from_data(data), seed=3) == fresh
    assert str(tmp_path / "stats") in second.protocol()["fid/digits_lenet@300"]["reference_cache"]
    # uncached, the same numbers again
    assert suite(CACHED, data).compute(from_data(data), seed=3) == fresh


def test_a_changed_key_misses_the_cache_and_a_broken_file_is_rebuilt(tmp_path):
    data16 = DigitsDataset(resolution=16)
    fid = {"fid": CACHED["fid"]}
    cached_suite(tmp_path, data16, metrics=fid).compute(from_data(data16), seed=0)
    data32 = DigitsDataset(resolution=32)
    cfg32 = OmegaConf.create({"name": "digits", "kind": "image", "resolution": 32})
    cached_suite(tmp_path, data32, cfg32, metrics=fid).compute(from_data(data32), seed=0)
    fewer = {"fid": {**CACHED["fid"], "num_samples": 200}}
    cached_suite(tmp_path, data16, metrics=fewer).compute(from_data(data16), seed=0)
    box = {"fid": {**CACHED["fid"], "resize": "box"}}  # the extractor's resize filter
    cached_suite(tmp_path, data16, metrics=box).compute(from_data(data16), seed=0)
    files = sorted((tmp_path / "stats").iterdir())
    assert len(files) == 4  # resolution, sample count and resize filter are part of the key
    for f in files:
        f.write_bytes(b"not a checkpoint")
    again = cached_suite(tmp_path, data16, metrics=fid).compute(from_data(data16), seed=0)
    assert again == suite(fid, data16).compute(from_data(data16), seed=0)


def test_cache_keys_follow_the_extractor_and_the_data_files(tmp_path):
    from genexp.metrics.cache import reference_key

    data = {"name": "mnist", "kind": "image", "root": str(tmp_path), "resolution": 28, "batch_size": 64}
    protocol = {"extractor": {"name": "mnist_lenet", "sha256": "aaaa"}, "num_real": 100, "num_fake": 100}
    key = reference_key(data, "fid", protocol)
    assert reference_key({**data, "batch_size": 8}, "fid", {**protocol, "num_fake": 5}) == key
    assert reference_key(data, "fid", {**protocol, "extractor": {"name": "mnist_lenet", "sha256": "bbbb"}}) != key
    assert reference_key(data, "kid", protocol) != key
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"new data")
    assert reference_key(data, "fid", protocol) != key


def test_an_unwritable_cache_is_one_note_and_the_evaluation_goes_on(tmp_path):
    (tmp_path / "stats").write_text("a file where the cache folder should be")
    notes: list[str] = []
    data = DigitsDataset(resolution=16)
    result = cached_suite(tmp_path, data, metrics={"fid": CACHED["fid"]}, notes=notes).compute(from_data(data))
    assert "fid/digits_lenet@300" in result
    assert len(notes) == 1 and notes[0].startswith("reference statistics not cached")


def test_paired_lpips_compares_each_image_with_its_original(tmp_path):
    """The pairing, through LPIPS-alex on random backbone weights (tests/test_lpips.py checks the numbers)."""
    import genexp.metrics.suite as suite_module

    from .test_lpips import write_weights

    weights = str(write_weights("alex", tmp_path))
    data = DigitsDataset(resolution=16)
    cfg = {"lpips": {"kind": "lpips", "mode": "paired", "num_samples": 300, "net": "alex", "weights": weights}}
    position = {"i": 0}

    def in_order(shift):
        def sample(n, g):
            i = position["i"]
            position["i"] += n
            return data.x[(torch.arange(i, i + n) + shift) % len(data)]
        return sample

    s = suite(cfg, data)
    exact = s.compute(in_order(0))
    position["i"] = 0
    shifted = s.compute(in_order(1))
    assert exact == {"lpips_recon/alex-64px@300": 0.0}  # 16 px digits: under AlexNet's 31 px, seen at 64
    assert shifted["lpips_recon/alex-64px@300"] > 0.05
    with pytest.raises(Exception, match="mode=sideways"):
        suite_module.MetricSuite(OmegaConf.create({"lpips": {**cfg["lpips"], "mode": "sideways"}}), data, DATA_CFG,
                                 torch.device("cpu"), lambda line: (_ for _ in ()).throw(ValueError(line)))


def test_non_finite_samples_give_nan_not_a_crash():
    """A diverged generator's NaN images: FID's matrix square root of NaN features can kill the
    process (oneMKL), so the suite reports nan for every sampled metric instead, with one note."""
    data = DigitsDataset(resolution=16)
    notes: list[str] = []
    s = suite({"fid": {"kind": "fid", "num_samples": 64}, "is": {"kind": "is", "num_samples": 64, "splits": 2}},
              data, notes=notes)
    nan_images = lambda n, g: torch.full((n, 1, 16, 16), float("nan"))  # noqa: E731
    results = s.compute(nan_images)
    assert set(results) == {"fid/digits_lenet@64", "is/digits_lenet@64", "is_std/digits_lenet@64"}
    assert all(math.isnan(v) for v in results.values())
    assert any("not finite" in n for n in notes)
    assert math.isfinite(s.compute(from_data(data))["fid/digits_lenet@64"])  # the next evaluation is whole
