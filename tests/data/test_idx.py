from __future__ import annotations

import gzip
import hashlib
import io
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from genexp.data import idx
from genexp.data.idx import IdxDataset
from genexp.errors import UserError

# ../shared/data beside the repo root (tests/data/ is two levels below it).
REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"


def idx_bytes(array: np.ndarray) -> bytes:
    array = np.asarray(array, dtype=np.uint8)
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> Path:
    data = idx_bytes(array)
    path = path.with_name(path.name + ".gz") if gz else path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def tiny(n: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    return images, np.arange(n, dtype=np.uint8) % 10


def write_split(folder: Path, split: str = "train", gz: bool = True, n: int = 5, seed: int = 0):
    images, labels = tiny(n, seed)
    prefix = "train" if split == "train" else "t10k"
    write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels, gz)
    return images, labels


def one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("gz", [True, False])
def test_reads_tiny_files(tmp_path, gz):
    images, labels = write_split(tmp_path, gz=gz)
    ds = IdxDataset(str(tmp_path), resolution=28, download=False)
    assert (ds.kind, ds.num_classes, ds.resolution, ds.channels, len(ds)) == ("image", 10, 28, 1, 5)
    x, y = ds[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and ds.y.tolist() == labels.tolist()
    assert x[0, 0, 0] == -1.0 and x[0, 0, 1] == 1.0
    assert torch.allclose(ds.x[:, 0], torch.from_numpy(images).float() / 127.5 - 1)


def test_test_split_resize_and_rgb(tmp_path):
    write_split(tmp_path, "train", seed=0)
    images, labels = write_split(tmp_path, "test", n=3, seed=1)
    ds = IdxDataset(str(tmp_path), split="test", resolution=32, channels=3, download=False)
    assert ds.x.shape == (3, 3, 32, 32) and ds.y.tolist() == labels.tolist()
    assert ds.x.min() >= -1 and ds.x.max() <= 1
    assert torch.equal(ds.x[:, 0], ds.x[:, 2])
    # Upscaling keeps the mean close to the source's.
    assert abs(ds.x.mean().item() - (images / 127.5 - 1).mean()) < 0.02


@pytest.mark.parametrize("sub", ["raw", "mnist", "MNIST/raw"])
def test_finds_common_layouts(tmp_path, sub):
    write_split(tmp_path / sub)
    ds = IdxDataset(str(tmp_path), download=False)
    assert Path(ds.root) == tmp_path / sub and len(ds) == 5


def test_fashion_layout(tmp_path):
    write_split(tmp_path / "fashion-mnist")
    assert len(IdxDataset(str(tmp_path), variant="fashion_mnist", download=False)) == 5


def test_missing_files_without_download(tmp_path):
    with pytest.raises(UserError) as err:
        IdxDataset(str(tmp_path), download=False)
    msg = one_line(err)
    assert str(tmp_path) in msg and "train-images-idx3-ubyte[.gz]" in msg and "train-labels-idx1-ubyte" in msg


@pytest.mark.parametrize("damage, why", [
    (lambda b: b"\x00\x00\x09\x03" + b[4:], "magic"),
    (lambda b: b[:-7], "header promises"),
    (lambda b: b[:6], "shorter than its header"),
])
def test_corrupt_images_file(tmp_path, damage, why):
    write_split(tmp_path, gz=False)
    f = tmp_path / "train-images-idx3-ubyte"
    f.write_bytes(damage(f.read_bytes()))
    with pytest.raises(UserError) as err:
        IdxDataset(str(tmp_path), download=False)
    msg = one_line(err)
    assert str(f) in msg and why in msg


def test_broken_gzip_and_count_mismatch(tmp_path):
    write_split(tmp_path)
    gz = tmp_path / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(UserError, match="train-labels-idx1-ubyte.gz: not a valid idx file"):
        IdxDataset(str(tmp_path), download=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4))
    with pytest.raises(UserError, match="5 images but .* 4 labels"):
        IdxDataset(str(tmp_path), download=False)


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, fail_after: int | None = None):
        super().__init__(data)
        self.fail_after = fail_after

    def read(self, n=-1):
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise ConnectionResetError("connection reset by peer")
        return super().read(self.fail_after if self.fail_after is not None else n)


def serve(monkeypatch, files: dict[str, bytes], fail_after: int | None = None) -> list[str]:
    """Route idx's urlopen to ``files`` (by basename) and make their md5s the official ones."""
    asked = []

    def fake_urlopen(url, timeout):
        asked.append(url)
        assert timeout <= 60
        return FakeResponse(files[url.rsplit("/", 1)[1]], fail_after)

    monkeypatch.setattr(idx, "urlopen", fake_urlopen)
    for name, data in files.items():
        monkeypatch.setitem(idx.SOURCES["mnist"][1], name, hashlib.md5(data).hexdigest())
    return asked


def tiny_archives(tmp_path) -> dict[str, bytes]:
    src = tmp_path / "src"
    write_split(src, "test", n=4)
    return {p.name: p.read_bytes() for p in src.iterdir()}


def test_download_into_new_root(tmp_path, monkeypatch):
    asked = serve(monkeypatch, tiny_archives(tmp_path))
    root = tmp_path / "new" / "root"
    ds = IdxDataset(str(root), split="test", resolution=28)
    assert len(ds) == 4 and ds.y.tolist() == [0, 1, 2, 3]
    assert asked == ["https://ossci-datasets.s3.amazonaws.com/mnist/t10k-images-idx3-ubyte.gz",
                     "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz"]
    assert sorted(p.name for p in root.iterdir()) == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    # Present now: a second load does not download.
    IdxDataset(str(root), split="test")
    assert len(asked) == 2


def test_interrupted_download_leaves_nothing(tmp_path, monkeypatch):
    serve(monkeypatch, tiny_archives(tmp_path), fail_after=10)
    root = tmp_path / "root"
    with pytest.raises(UserError) as err:
        IdxDataset(str(root), split="test")
    assert "connection reset" in one_line(err)
    assert list(root.iterdir()) == []


def test_bad_checksum_tries_next_mirror_then_fails(tmp_path, monkeypatch):
    asked = serve(monkeypatch, tiny_archives(tmp_path))
    monkeypatch.setitem(idx.SOURCES["mnist"][1], "t10k-images-idx3-ubyte.gz", "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(UserError) as err:
        IdxDataset(str(root), split="test")
    assert "md5" in one_line(err) and len(asked) == len(idx.SOURCES["mnist"][0])
    assert list(root.iterdir()) == []


def test_unreachable_download(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(idx, "urlopen", offline)
    with pytest.raises(UserError) as err:
        IdxDataset(str(tmp_path), variant="fashion_mnist")
    msg = one_line(err)
    assert msg.startswith(f"data.root={tmp_path}: Fashion-MNIST files not found")
    assert "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]" in msg
    assert "name resolution" in msg and "point data.root at the folder" in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(not (SHARED / "mnist").exists(), reason="real MNIST not at ../shared/data")
def test_real_mnist_test_split():
    ds = IdxDataset(str(SHARED), split="test", resolution=28, channels=1, download=False)
    assert len(ds) == 10000 and ds.x.shape == (10000, 1, 28, 28)
    assert sorted(ds.y.unique().tolist()) == list(range(10))
    mean = ((ds.x.double() + 1) / 2).mean().item()  # == mean of uint8 / 255
    assert abs(mean - 0.1325) < 1e-3


def test_unknown_variant_or_split(tmp_path):
    with pytest.raises(UserError, match="variant=kmnist: unknown idx dataset; use one of mnist"):
        IdxDataset(str(tmp_path), variant="kmnist")
    with pytest.raises(UserError, match="split=val: unknown split"):
        IdxDataset(str(tmp_path), split="val")
