"""A reference-statistics cache that cannot be stale, and imported reference statistics (issue 15 item 2)."""

from __future__ import annotations

import math
import os
import zipfile

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.digits import DigitsDataset
from genexp.data.images import ImageFolderDataset
from genexp.errors import UserError
from genexp.metrics import cache
from genexp.metrics.suite import MetricSuite

from .test_bad_input import one_error_line
from .test_eval_images import write_pngs

DIGITS = DigitsDataset(resolution=16)
FID = {"fid": {"kind": "fid", "num_samples": 300, "extractor": "digits_lenet"}}
KEY = "fid/digits_lenet@300"


def fakes(n, g):
    return DIGITS.x[-n:]


def images_cfg(path):
    return OmegaConf.create({"name": "images", "kind": "image", "path": str(path), "resolution": 16, "channels": 1})


def fid_of(path, cache_dir, notes=None, metrics=FID):
    dataset = ImageFolderDataset(str(path), 16, 1)
    s = MetricSuite(OmegaConf.create(metrics), dataset, images_cfg(path), torch.device("cpu"),
                    notes.append if notes is not None else print, cache_dir=cache_dir)
    return s.compute(fakes), s


def nested(root, images):
    """The stylegan2-ada-pytorch layout: 00000/img00000000.png, ..."""
    return write_pngs(root / "00000", images).parent


def test_replacing_the_images_of_a_nested_folder_misses_the_cache(tmp_path):
    noise = torch.rand(300, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    data = nested(tmp_path / "data", noise)
    before, _ = fid_of(data, tmp_path / "stats")
    nested(tmp_path / "data", DIGITS.x[:300])  # the same 300 names, other pixels
    after, s = fid_of(data, tmp_path / "stats")
    fresh, _ = fid_of(data, None)
    assert after == fresh and after[KEY] < 0.2 * before[KEY]  # measured: 1304.6 stale, 71.7 fresh
    assert len(list((tmp_path / "stats").iterdir())) == 2


def test_the_key_follows_every_file_the_dataset_reads(tmp_path):
    data = nested(tmp_path / "data", DIGITS.x[:4])
    cfg = OmegaConf.to_container(images_cfg(data))
    protocol = {"extractor": {"name": "digits_lenet", "sha256": "aa"}, "num_real": 4}
    key = cache.reference_key(cfg, "fid", protocol)
    (data / "00000" / "notes.txt").write_text("not read by the dataset")
    assert cache.reference_key(cfg, "fid", protocol) == key
    (data / "00001").mkdir()
    write_pngs(data / "00001", DIGITS.x[4:5])
    assert cache.reference_key(cfg, "fid", protocol) != key
    # inside a zip: a member replaced by another of the same size
    archive = tmp_path / "data.zip"
    keys = []
    for fill in ("a", "b"):
        with zipfile.ZipFile(archive, "w") as z:
            for i in range(2):
                z.writestr(zipfile.ZipInfo(f"00000/img{i:08d}.png", (2020, 1, 1, 0, 0, 0)), fill * 64)
        os.utime(archive, ns=(10**18, 10**18))  # the same mtime as before, and the same size
        keys.append(cache.reference_key({**cfg, "path": str(archive)}, "fid", protocol))
    assert keys[0] != keys[1]


def test_a_same_size_rewrite_within_one_second_misses(tmp_path, monkeypatch):
    data = nested(tmp_path / "data", DIGITS.x[:3])
    target = data / "00000" / "img00001.png"
    second = 1_700_000_000 * 10**9
    os.utime(target, ns=(second + 100, second + 100))
    cfg = OmegaConf.to_container(images_cfg(data))
    protocol = {"num_real": 3}
    key = cache.reference_key(cfg, "fid", protocol)
    raw = bytearray(target.read_bytes())
    raw[-20] ^= 0xFF  # same size, other bytes
    target.write_bytes(bytes(raw))
    os.utime(target, ns=(second + 200, second + 200))  # within the same second
    assert cache.reference_key(cfg, "fid", protocol) != key
    # a rewrite that keeps size and mtime to the nanosecond: only content hashing sees it
    os.utime(target, ns=(second + 100, second + 100))
    assert cache.reference_key(cfg, "fid", protocol) == key
    monkeypatch.setenv(cache.HASH_ENV, "content")
    hashed = cache.reference_key(cfg, "fid", protocol)
    raw[-20] ^= 0xFF
    target.write_bytes(bytes(raw))
    os.utime(target, ns=(second + 100, second + 100))
    assert cache.reference_key(cfg, "fid", protocol) != hashed


def test_the_preprocessing_version_is_in_the_key(monkeypatch):
    key = cache.reference_key({"name": "digits"}, "fid", {})
    monkeypatch.setattr(cache, "PREPROCESSING_VERSION", cache.PREPROCESSING_VERSION + 1)
    assert cache.reference_key({"name": "digits"}, "fid", {}) != key


def cached_file(stats):
    (path,) = stats.iterdir()
    return path


def test_a_tampered_file_is_computed_again_with_one_note(tmp_path):
    data = nested(tmp_path / "data", DIGITS.x[:300])
    fresh, _ = fid_of(data, tmp_path / "stats")
    path = cached_file(tmp_path / "stats")
    blob = torch.load(path, weights_only=True)
    blob["states"]["real_features_sum"].zero_()  # the zeroed sum: FID moved, exit 0
    torch.save(blob, path)
    notes = []
    again, _ = fid_of(data, tmp_path / "stats", notes)
    assert again == fresh
    assert len(notes) == 1 and "do not fit" in notes[0] and "checksum" in notes[0]
    assert cache.load(path, {"kind": "fid"}, {k: tuple(v.shape) for k, v in blob["states"].items()})[1] is None


def test_a_foreign_file_of_the_right_shapes_is_not_taken(tmp_path):
    data = nested(tmp_path / "data", DIGITS.x[:300])
    other = nested(tmp_path / "other", torch.rand(300, 1, 16, 16) * 2 - 1)
    fresh, _ = fid_of(data, tmp_path / "stats")
    mine = cached_file(tmp_path / "stats")
    fid_of(other, tmp_path / "stats2")
    mine.write_bytes(cached_file(tmp_path / "stats2").read_bytes())  # another dataset's file under this name
    notes = []
    again, _ = fid_of(data, tmp_path / "stats", notes)
    assert again == fresh and len(notes) == 1 and "its key is" in notes[0]


def test_a_wrong_shape_is_computed_again_not_a_crash(tmp_path):
    data = nested(tmp_path / "data", DIGITS.x[:300])
    fresh, _ = fid_of(data, tmp_path / "stats")
    path = cached_file(tmp_path / "stats")
    blob = torch.load(path, weights_only=True)
    states = {**blob["states"], "real_features_sum": torch.zeros(64, dtype=torch.float64)}
    torch.save({"states": states, "meta": {**blob["meta"], "checksum": cache.checksum(states)}}, path)
    notes = []
    again, _ = fid_of(data, tmp_path / "stats", notes)
    assert again == fresh and len(notes) == 1 and "real_features_sum has shape (64,), not (128,)" in notes[0]
    path.write_bytes(b"not a checkpoint")
    notes.clear()
    assert fid_of(data, tmp_path / "stats", notes)[0] == fresh and "unreadable" in notes[0]


def test_a_read_only_cache_warns_once_and_goes_on(tmp_path, monkeypatch):
    stats = tmp_path / "stats"
    stats.mkdir()
    stats.chmod(0o555)
    if os.geteuid() == 0:  # root writes anyway: refuse the rename as a read-only file system would
        def read_only(*_):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(cache.os, "replace", read_only)
    metrics = {**FID, "kid": {"kind": "kid", "num_samples": 300, "subsets": 5, "subset_size": 100,
                              "extractor": "digits_lenet"},
               "pr": {"kind": "pr", "num_samples": 300, "k": 3, "extractor": "digits_lenet"}}
    notes = []
    data = nested(tmp_path / "data", DIGITS.x[:300])
    result, s = fid_of(data, stats, notes, metrics)
    s.compute(fakes)
    assert len(result) == 5 and all(math.isfinite(v) for v in result.values())
    assert len(notes) == 1 and notes[0].startswith("reference statistics not cached (Permission denied)")
    assert list(stats.iterdir()) == []  # no temporary file left behind
    stats.chmod(0o755)


def mu_sigma(data):
    """The real-side mean and covariance a FID over ``data`` fits, from its torchmetrics states."""
    s = MetricSuite(OmegaConf.create(FID), data, images_cfg("x"), torch.device("cpu"), print)
    s.prepare_reference()
    st = s.metrics[0].real_states()
    n = float(st["real_features_num_samples"])
    mu = st["real_features_sum"] / n
    return mu.numpy(), ((st["real_features_cov_sum"] - n * torch.outer(mu, mu)) / (n - 1)).numpy()


def test_fid_against_imported_mu_sigma_equals_fid_against_the_data(tmp_path):
    data = nested(tmp_path / "data", DIGITS.x[:300])
    dataset = ImageFolderDataset(str(data), 16, 1)
    mu, sigma = mu_sigma(dataset)
    np.savez(tmp_path / "ref.npz", mu=mu, sigma=sigma)
    direct, _ = fid_of(data, None)
    spec = {"fid": {**FID["fid"], "reference": str(tmp_path / "ref.npz")}}
    imported, s = fid_of(data, tmp_path / "stats", metrics=spec)
    assert imported[KEY] == pytest.approx(direct[KEY], rel=1e-6)
    protocol = s.protocol()[KEY]
    assert protocol["reference"]["file"] == str(tmp_path / "ref.npz") and "reference_cache" not in protocol
    assert not (tmp_path / "stats").exists()  # nothing computed on the real side, nothing cached


def test_a_bad_reference_npz_is_one_line(run, tmp_path):
    np.savez(tmp_path / "no_sigma.npz", mu=np.zeros(128))
    np.savez(tmp_path / "dims.npz", mu=np.zeros(2048), sigma=np.eye(2048))
    (tmp_path / "junk.npz").write_bytes(b"junk")
    for name, expected in (("no_sigma", "no sigma array (it holds mu)"),
                           ("dims", "mu (2048,) and sigma (2048, 2048), but the extractor gives 128 features"),
                           ("junk", "not a readable npz")):
        spec = {"fid": {**FID["fid"], "reference": str(tmp_path / f"{name}.npz")}}
        with pytest.raises(UserError, match=expected.replace("(", r"\(").replace(")", r"\)")):
            MetricSuite(OmegaConf.create(spec), DIGITS, OmegaConf.create({"name": "digits", "kind": "image"}),
                        torch.device("cpu"), print)
    folder = write_pngs(tmp_path / "fake", DIGITS.x[:300])
    line = one_error_line(run("eval", f"fake={folder}", "data=digits", "metrics=[fid]",
                              f"metrics.fid.reference={tmp_path / 'dims.npz'}", f"hydra.run.dir={tmp_path / 'e'}"))
    assert "metrics.fid.reference=" in line and "gives 128 features" in line
