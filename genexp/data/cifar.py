"""CIFAR-10 from the official "python version" batches, unpickled with only numpy allowed in."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from genexp.data.base import ArrayDataset, convert_channels, resize, uint8_to_unit
from genexp.errors import UserError

try:  # numpy >= 2 (numpy.core still resolves there, but warns)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray
    from numpy.core import numeric as _numeric

SPLITS = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
SUBDIR = "cifar-10-batches-py"
SOURCE = "https://www.cs.toronto.edu/~kriz/cifar.html"
NUM_CLASSES = 10
PIXELS = 3 * 32 * 32


def _latin1(text: str, encoding: str = "utf-8") -> bytes:
    # Protocol <= 2 pickles written by Python 3 spell bytes as _codecs.encode(text, "latin1"); nothing else.
    if encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# Everything an array-holding dict can need, whichever numpy or pickle protocol wrote it.
_SAFE_GLOBALS = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}
for _mod in ("numpy.core", "numpy._core"):
    _SAFE_GLOBALS[(f"{_mod}.multiarray", "_reconstruct")] = _multiarray._reconstruct
    _SAFE_GLOBALS[(f"{_mod}.multiarray", "scalar")] = _multiarray.scalar
    _SAFE_GLOBALS[(f"{_mod}.numeric", "_frombuffer")] = _numeric._frombuffer


class _Refused(pickle.UnpicklingError):
    pass


class SafeUnpickler(pickle.Unpickler):
    """Pickles can run any code on load; a CIFAR batch only needs numpy arrays, so nothing else resolves."""

    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None


class Cifar10Dataset(ArrayDataset):
    def __init__(self, root: str, split: str = "train", resolution: int = 32, channels: int = 3):
        if split not in SPLITS:
            raise UserError(f"data.split={split}: unknown CIFAR-10 split; use one of {', '.join(SPLITS)}")
        folder = find_folder(Path(root), SPLITS[split])
        if folder is None:
            expected = ", ".join(SPLITS[split])
            raise UserError(f"data.root={root}: CIFAR-10 batches not found (expected {expected} in it or in "
                            f"its {SUBDIR}/); download the CIFAR-10 python version (cifar-10-python.tar.gz) "
                            f"from {SOURCE}, extract it and point data.root at it")
        images, labels = zip(*(read_batch(folder / name) for name in SPLITS[split]), strict=True)
        x = uint8_to_unit(torch.from_numpy(np.concatenate(images)).view(-1, 3, 32, 32))
        x = convert_channels(resize(x, resolution), channels)
        super().__init__(x, torch.from_numpy(np.concatenate(labels)), num_classes=NUM_CLASSES)
        self.split, self.resolution, self.channels = split, resolution, channels
        self.root = str(folder)


def find_folder(root: Path, names) -> Path | None:
    for folder in (root, root / SUBDIR):
        if all((folder / n).is_file() for n in names):
            return folder
    return None


def read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3072) uint8 pixels, channel-major, and (N,) int64 labels of one batch file."""
    try:
        with open(path, "rb") as f:
            batch = SafeUnpickler(f, encoding="bytes").load()
    except _Refused as e:
        raise UserError(f"{path}: refused to unpickle it, it asks for {e}, which a CIFAR-10 batch never "
                        f"needs (it may be malicious); replace it with the official python version "
                        f"from {SOURCE}") from None
    except Exception as e:  # unpickling garbage fails in many ways (EOFError, ValueError, KeyError, ...)
        raise _corrupt(path, f"cannot unpickle it: {type(e).__name__}: {e}") from e
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise _corrupt(path, "expected a dict with b'data' and b'labels'")
    data = batch[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (PIXELS,)):
        raise _corrupt(path, f"b'data' must be a uint8 array of shape (N, {PIXELS})")
    try:
        labels = np.asarray(batch[b"labels"], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError) as e:
        raise _corrupt(path, f"b'labels' is not a list of integers: {e}") from e
    if len(labels) != len(data):
        raise _corrupt(path, f"{len(data)} images but {len(labels)} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise _corrupt(path, f"labels outside 0..{NUM_CLASSES - 1}")
    return data, labels


def _corrupt(path: Path, why: str) -> UserError:
    why = " ".join(why.split())
    return UserError(f"{path}: not a valid CIFAR-10 batch ({why}); replace it with the official python "
                     f"version from {SOURCE}")
