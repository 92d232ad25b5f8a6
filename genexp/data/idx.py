"""MNIST and Fashion-MNIST from the official idx files (gzip or raw), downloaded when missing."""

from __future__ import annotations

import gzip
import hashlib
import zlib
from http.client import HTTPException
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import torch

from genexp.data.base import ArrayDataset, convert_channels, resize, uint8_to_unit
from genexp.errors import UserError
from genexp.files import atomic_write

# variant -> (mirrors tried in order, md5 of each official .gz archive)
SOURCES: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {
    "mnist": (
        ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        {
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion_mnist": (
        ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        {
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
# Sub-folders people keep these files in: our own names, the shared-data name and torchvision's.
SUBDIRS = {"mnist": ("mnist", "MNIST"), "fashion_mnist": ("fashion_mnist", "fashion-mnist", "FashionMNIST")}
PREFIX = {"train": "train", "test": "t10k"}
TIMEOUT_S = 20.0
NUM_CLASSES = 10


class IdxDataset(ArrayDataset):
    def __init__(self, root: str, variant: str = "mnist", split: str = "train", resolution: int = 32,
                 channels: int = 1, download: bool = True):
        if variant not in SOURCES:
            raise UserError(f"data.dataset.variant={variant}: unknown idx dataset; "
                            f"use one of {', '.join(SOURCES)}")
        if split not in PREFIX:
            raise UserError(f"data.split={split}: unknown split; use one of {', '.join(PREFIX)}")
        names = split_files(split)
        folder = find_folder(Path(root), variant, names)
        if folder is None and not download:
            raise UserError(f"data.root={root}: {TITLES[variant]} files not found (expected "
                            f"{_expected(names)}); point data.root at the folder holding them, "
                            "or set data.download=true on a machine with a network")
        if folder is None:
            folder = fetch(Path(root), variant, names)
        images = read_idx(_existing(folder / names[0]), ndim=3)
        labels = read_idx(_existing(folder / names[1]), ndim=1)
        if len(images) != len(labels):
            raise UserError(f"data.root={root}: {names[0]} holds {len(images)} images but {names[1]} "
                            f"{len(labels)} labels; replace both with the official {TITLES[variant]} files")
        if labels.size and labels.max() >= NUM_CLASSES:
            raise UserError(f"data.root={root}: {names[1]} holds labels above {NUM_CLASSES - 1}; "
                            f"replace it with the official {TITLES[variant]} file")
        x = uint8_to_unit(torch.from_numpy(images).unsqueeze(1))
        x = convert_channels(resize(x, resolution), channels)
        super().__init__(x, torch.from_numpy(labels.astype(np.int64)), num_classes=NUM_CLASSES)
        self.variant, self.split = variant, split
        self.resolution, self.channels = resolution, channels
        self.root = str(folder)


def split_files(split: str) -> tuple[str, str]:
    p = PREFIX[split]
    return f"{p}-images-idx3-ubyte", f"{p}-labels-idx1-ubyte"


def _expected(names) -> str:
    return ", ".join(f"{n}[.gz]" for n in names)


def _existing(stem: Path) -> Path:
    # The raw file wins: it is what torchvision extracts next to the archive, and is cheaper to read.
    return stem if stem.is_file() else stem.with_name(stem.name + ".gz")


def find_folder(root: Path, variant: str, names) -> Path | None:
    candidates = [root, root / "raw"]
    for sub in SUBDIRS[variant]:
        candidates += [root / sub, root / sub / "raw"]
    for folder in candidates:
        if all(_existing(folder / n).is_file() for n in names):
            return folder
    return None


def fetch(root: Path, variant: str, names) -> Path:
    """Download the missing archives into ``root``, or raise the UserError that says what to put there."""
    mirrors, md5s = SOURCES[variant]
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _download_failed(root, variant, names, f"cannot create the folder: {e.strerror or e}") from e
    for name in names:
        if _existing(root / name).is_file():
            continue
        gz = name + ".gz"
        errors = []
        for mirror in mirrors:
            errors.append(download_file(mirror + gz, root / gz, md5s.get(gz)))
            if errors[-1] is None:
                break
        else:
            raise _download_failed(root, variant, names, errors[0])
    return root


def _download_failed(root: Path, variant: str, names, why: str) -> UserError:
    why = " ".join(why.split())
    return UserError(f"data.root={root}: {TITLES[variant]} files not found (expected {_expected(names)}) "
                    f"and downloading them failed ({why}); point data.root at the folder holding them, "
                    "or run with a network so genexp can download them")


def download_file(url: str, dest: Path, md5: str | None) -> str | None:
    """Fetch ``url`` to ``dest``; None when done, else why it failed."""
    digest = hashlib.md5()

    def fetch(out):
        with urlopen(url, timeout=TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5:
            raise WrongDownload(f"{url} served a file whose md5 is {digest.hexdigest()}, not the official {md5}")

    # Written beside dest then renamed (genexp/files.py): an interrupted or wrong download never leaves a
    # file under the real name; shared: parallel ranks may fetch the same file at once.
    try:
        atomic_write(dest, fetch, shared=True)
        return None
    except WrongDownload as e:
        return str(e)
    # URLError, HTTPError and timeouts are OSErrors; a connection cut mid-body is an HTTPException.
    except (OSError, ValueError, HTTPException) as e:
        return f"{url}: {getattr(e, 'reason', None) or e}"


class WrongDownload(Exception):
    """The server sent a file other than the one asked for."""


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """A uint8 idx file (``ndim`` dimensions) as an array; UserError naming the file when it is damaged."""
    try:
        with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise _corrupt(path, f"cannot read it: {e}") from e
    # Header: two zero bytes, a type code (0x08 = uint8), the number of dims, then each dim as big-endian u32.
    head = 4 + 4 * ndim
    if len(data) < head:
        raise _corrupt(path, f"{len(data)} bytes, shorter than its header")
    if data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise _corrupt(path, f"magic number {data[:4].hex()}, expected 000008{ndim:02x}")
    dims = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    size = int(np.prod(dims))
    if len(data) - head != size:
        raise _corrupt(path, f"header promises {'x'.join(map(str, dims))} = {size} bytes of data, "
                       f"file holds {len(data) - head}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims).copy()


def _corrupt(path: Path, why: str) -> UserError:
    why = " ".join(str(why).split())
    return UserError(f"{path}: not a valid idx file ({why}); delete it so genexp downloads it again, "
                    "or replace it with the official file")
