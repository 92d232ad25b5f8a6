"""`genexp sample n=50000 out=fid_samples/` (or `out=samples.zip`): n samples as individual image files
000000.png, 000001.png, ..., the layout `genexp eval fake=`, clean-fid and torch-fidelity read;
generated in batches and written as they come, with a progress line every few seconds.

A folder is filled under a hidden temporary name beside it and renamed into place when complete; a zip
is written to a temporary file and renamed (genexp.files): a killed run leaves the old target or none,
never a half-filled one that an evaluation would count. An existing target is replaced only with
overwrite=true, and only when it holds nothing but such samples (a mistyped out= never deletes data).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from genexp.errors import UserError
from genexp.files import atomic_write, sync_dir
from genexp.logger.console import Counter

# format= -> PIL's format and options. PNG is lossless: FID tools read it as the generator drew it;
# JPEG compression alone moves FID (clean-fid, Parmar et al. 2022), so jpg is for looking, not scoring.
FORMATS = {"png": ("PNG", {}), "jpg": ("JPEG", {"quality": 95})}
LABELS_FILE = "dataset.json"  # stylegan2-ada-pytorch's labels, as genexp's image data reads them
SAMPLE_NAME = re.compile(r"^\d{6,}\.(png|jpg)$")
# Names that look like a file, not a folder: out=x.tar would otherwise become a folder called x.tar.
FILE_SUFFIXES = {".tar", ".gz", ".tgz", ".npz", ".npy", ".pt", ".png", ".jpg", ".jpeg", ".gif", ".json"}
SHOWN = 3


@dataclass(frozen=True)
class Target:
    path: Path
    is_zip: bool
    fmt: str
    overwrite: bool

    def name(self, i: int) -> str:
        return f"{i:06d}.{self.fmt}"


def check_target(out, fmt, overwrite) -> Target:
    """out= / format= / overwrite=, checked before the checkpoint is even read."""
    fmt = str(fmt).lower()
    if fmt not in FORMATS:
        raise UserError(f"format={fmt}: use {' or '.join(FORMATS)} (png is lossless, what FID tools expect)")
    path = Path(str(out)).expanduser()
    suffix = path.suffix.lower()
    if suffix in FILE_SUFFIXES:
        raise UserError(f"out={out}: give a folder (out=samples/) or a zip file (out=samples.zip)")
    is_zip = suffix == ".zip"
    if is_zip and path.is_dir():
        raise UserError(f"out={out} is a folder: a zip target names a file; pick another name")
    if not is_zip and path.exists() and not path.is_dir():
        raise UserError(f"out={out} is a file: give a folder (out=samples/) or a .zip name")
    existing = sample_entries(path, is_zip) if path.exists() else None
    if existing:  # a non-empty folder, or any existing zip
        if not overwrite:
            raise UserError(f"out={out} already holds {len(existing):,} file(s): pick a new "
                            f"{'name' if is_zip else 'folder'}, or set overwrite=true to replace its samples")
        foreign = [n for n in existing if not (SAMPLE_NAME.match(n) or n == LABELS_FILE)]
        if foreign:
            raise UserError(f"out={out} holds files that are not genexp samples ({', '.join(foreign[:SHOWN])}"
                            f"{', ...' if len(foreign) > SHOWN else ''}); overwrite=true replaces only samples: "
                            "pick another out=")
    return Target(path, is_zip, fmt, bool(overwrite))


def sample_entries(path: Path, is_zip: bool) -> list[str]:
    """What an existing target holds (a sub-folder counts as a foreign entry)."""
    if not is_zip:
        return sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if path.stat().st_size == 0:
        return []
    try:
        with zipfile.ZipFile(path) as z:
            return z.namelist() or ["(an empty zip)"]
    except (zipfile.BadZipFile, OSError):
        return [f"{path.name} is not a zip"]


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    """One H x W x C uint8 image: gray (C = 1) as a 1-channel L image, colour as RGB."""
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3) or pixels.dtype != np.uint8:
        raise ValueError(f"an image is H x W x 1 or 3 uint8, not {pixels.shape} {pixels.dtype}")
    image = Image.fromarray(pixels[..., 0], "L") if pixels.shape[-1] == 1 else Image.fromarray(pixels, "RGB")
    pil_format, options = FORMATS[fmt]
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **options)
    return buffer.getvalue()


def write_samples(target: Target, images: Iterable[np.ndarray], n: int, labels: list[int] | None,
                  progress: Counter) -> None:
    """``images``: n H x W x C uint8 arrays, drawn lazily (a batch at a time); ``labels``: each image's
    class for a conditional model (written to dataset.json), else None."""
    files = ((target.name(i), encode(pixels, target.fmt)) for i, pixels in enumerate(counted(images, n, progress)))
    label_doc = None if labels is None else \
        json.dumps({"labels": [[target.name(i), int(c)] for i, c in enumerate(labels)]}).encode()
    if target.is_zip:
        atomic_write(target.path, lambda f: write_zip(f, files, label_doc))
    else:
        write_folder(target.path, files, label_doc)


def counted(images: Iterable[np.ndarray], n: int, progress: Counter) -> Iterator[np.ndarray]:
    done = 0
    for pixels in images:
        yield pixels
        done += 1
        progress.update(done)
    if done != n:  # a bug in the caller, not the user's mistake
        raise RuntimeError(f"{done} images drawn, {n} asked for")


def write_zip(f, files: Iterable[tuple[str, bytes]], label_doc: bytes | None) -> None:
    # PNG is compressed already: stored entries cost nothing to read back.
    with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in files:
            z.writestr(name, data)
        if label_doc is not None:
            z.writestr(LABELS_FILE, label_doc)


def write_folder(path: Path, files: Iterable[tuple[str, bytes]], label_doc: bytes | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{os.getpid()}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, data in files:
            (tmp / name).write_bytes(data)
        if label_doc is not None:
            (tmp / LABELS_FILE).write_bytes(label_doc)
        replace_folder(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_folder(new: Path, path: Path) -> None:
    """``new`` becomes ``path``; an old ``path`` (empty, or checked to hold only samples) goes."""
    if path.is_dir() and not any(path.iterdir()):
        path.rmdir()
    old = path.parent / f".{path.name}.{os.getpid()}.old"
    if path.exists():
        os.replace(path, old)
    os.replace(new, path)
    sync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
