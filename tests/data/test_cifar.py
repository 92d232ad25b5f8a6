from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from genexp.data.cifar import Cifar10Dataset
from genexp.errors import UserError

TRAIN = [f"data_batch_{i}" for i in range(1, 6)]


def write_batch(path: Path, n: int, seed: int, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict:
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"fake batch",
        b"labels": [int(v) for v in rng.integers(0, 10, n)],
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    return batch


def write_cifar(folder: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> list[dict]:
    batches = [write_batch(folder / name, 2 + i, i, protocol) for i, name in enumerate(TRAIN)]
    return batches + [write_batch(folder / "test_batch", 3, 99, protocol)]


def one_line(err: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_train_split(tmp_path, protocol):
    batches = write_cifar(tmp_path, protocol)
    ds = Cifar10Dataset(str(tmp_path))
    assert (ds.kind, ds.num_classes, ds.resolution, ds.channels) == ("image", 10, 32, 3)
    assert len(ds) == 2 + 3 + 4 + 5 + 6 and ds.x.shape == (20, 3, 32, 32) and ds.x.dtype == torch.float32
    assert ds.y.dtype == torch.int64 and ds.y.tolist() == sum((b[b"labels"] for b in batches[:5]), [])
    # Rows are channel-major: byte c*1024 + h*32 + w is pixel (c, h, w).
    raw = batches[1][b"data"][0]
    x, _ = ds[2]
    for c, h, w in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert x[c, h, w].item() == pytest.approx(raw[c * 1024 + h * 32 + w] / 127.5 - 1)
    assert ds.x.min() >= -1 and ds.x.max() <= 1


def test_test_split_in_subfolder_resized_gray(tmp_path):
    batches = write_cifar(tmp_path / "cifar-10-batches-py")
    ds = Cifar10Dataset(str(tmp_path), split="test", resolution=16, channels=1)
    assert ds.x.shape == (3, 1, 16, 16) and ds.y.tolist() == batches[-1][b"labels"]
    assert ds.x.min() >= -1 and ds.x.max() <= 1


def test_missing_batches(tmp_path):
    write_batch(tmp_path / "data_batch_1", 2, 0)
    with pytest.raises(UserError) as err:
        Cifar10Dataset(str(tmp_path))
    msg = one_line(err)
    assert f"data.root={tmp_path}" in msg and "data_batch_5" in msg and "python version" in msg
    with pytest.raises(UserError, match="test_batch"):
        Cifar10Dataset(str(tmp_path), split="test")


class Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused(tmp_path):
    write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [Exploit(marker)]}
    (tmp_path / "data_batch_3").write_bytes(pickle.dumps(evil))
    with pytest.raises(UserError) as err:
        Cifar10Dataset(str(tmp_path))
    msg = one_line(err)
    assert "data_batch_3" in msg and "refused" in msg and "system" in msg
    assert not marker.exists()


def test_codecs_only_for_latin1(tmp_path):
    write_cifar(tmp_path)
    # _codecs.encode is allowed for protocol-2 bytes, but only as a latin1 encoder.
    (tmp_path / "test_batch").write_bytes(
        b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(UserError, match="test_batch: not a valid CIFAR-10 batch"):
        Cifar10Dataset(str(tmp_path), split="test")


def test_numpy1_pickles(tmp_path):
    # The official files name numpy.core.multiarray (numpy 1.x); numpy 2 writes numpy._core.
    batches = write_cifar(tmp_path, protocol=2)
    f = tmp_path / "test_batch"
    f.write_bytes(f.read_bytes().replace(b"cnumpy._core.", b"cnumpy.core."))
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in f.read_bytes()
    ds = Cifar10Dataset(str(tmp_path), split="test")
    assert ds.y.tolist() == batches[-1][b"labels"]
    assert torch.equal(ds.x[0].flatten(), torch.from_numpy(batches[-1][b"data"][0]).float() / 127.5 - 1)


@pytest.mark.parametrize("content, why", [
    (b"\x80\x04\x95garbage", "cannot unpickle"),
    (pickle.dumps([1, 2, 3]), "expected a dict"),
    (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "uint8 array"),
    (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "2 images but 1 labels"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}), "labels outside"),
])
def test_corrupt_batch(tmp_path, content, why):
    write_cifar(tmp_path)
    (tmp_path / "test_batch").write_bytes(content)
    with pytest.raises(UserError) as err:
        Cifar10Dataset(str(tmp_path), split="test")
    msg = one_line(err)
    assert str(tmp_path / "test_batch") in msg and why in msg


def test_unknown_split(tmp_path):
    with pytest.raises(UserError, match="split=val: unknown CIFAR-10 split"):
        Cifar10Dataset(str(tmp_path), split="val")
