"""Images from a folder or a zip (the stylegan2-ada-pytorch dataset_tool layout), decoded lazily."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from genexp.data.base import UNLABELED, uint8_to_unit
from genexp.errors import UserError

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
LABELS_FILE = "dataset.json"
LABELS_EXAMPLE = '{"labels": [["00000/img00000000.png", 6], ...]}'


class ImageFolderDataset(Dataset):
    kind = "image"

    def __init__(self, path: str, resolution: int, channels: int = 3, use_labels: bool = True,
                 key: str = "data.path"):
        """``key``: the setting that named ``path``, for error messages (data.path, or eval's fake)."""
        if channels not in (1, 3):
            raise UserError(f"data.channels={channels}: image folders load as 1 (gray) or 3 (RGB) channels; "
                            "set data.channels to 1 or 3")
        self.path, self.resolution, self.channels, self.key = str(path), resolution, channels, key
        self._zip: zipfile.ZipFile | None = None
        self._zip_pid: int | None = None
        p = Path(path)
        if not p.exists():
            raise UserError(f"{key}={path}: no such file or folder; point {key} at an image folder "
                            "or a dataset zip")
        self._is_zip = not p.is_dir()
        read = files_read(p, key)
        self.files = [n for n in read if n != LABELS_FILE]
        if not self.files:
            where = "in the zip" if self._is_zip else "in all sub-folders"
            exts = ", ".join(EXTENSIONS)
            raise UserError(f"{key}={path}: holds no images (looked for {exts}, any case, {where}); "
                            f"point {key} at a folder or zip of images")
        labels = self._read_labels() if use_labels and LABELS_FILE in read else None
        self.labels = labels if labels is not None else [UNLABELED] * len(self.files)
        self.num_classes = max(self.labels) + 1 if labels is not None else 0

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i):
        name = self.files[i]
        try:
            with Image.open(io.BytesIO(self._read(name))) as img:
                img = img.convert("L" if self.channels == 1 else "RGB")
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, zipfile.BadZipFile) as e:
            why = " ".join(f"{type(e).__name__}: {e}".split())
            raise UserError(f"{self.key}={self.path}: image {name} is corrupt or unreadable ({why}); "
                            "remove or replace that file") from e
        return _to_tensor(_square(img, self.resolution)), torch.tensor(self.labels[i], dtype=torch.long)

    def __getstate__(self):
        # A zip handle must not cross processes: DataLoader workers reopen their own.
        state = self.__dict__.copy()
        state["_zip"], state["_zip_pid"] = None, None
        return state

    def _read(self, name: str) -> bytes:
        if not self._is_zip:
            return (Path(self.path) / name).read_bytes()
        # After a fork the inherited handle shares its file offset with the parent's: reopen per process.
        if self._zip is None or self._zip_pid != os.getpid():
            self._zip, self._zip_pid = zipfile.ZipFile(self.path), os.getpid()
        return self._zip.read(name)

    def _read_labels(self) -> list[int] | None:
        labels = _parse_labels(self._read(LABELS_FILE), f"{self.key}={self.path}: {LABELS_FILE}")
        if labels is None:
            return None
        present = set(self.files)
        ghosts = sorted(n for n in labels if n not in present)
        if ghosts:
            raise UserError(f"{self.key}={self.path}: {LABELS_FILE} labels {len(ghosts)} file(s) that do not "
                            f"exist (first: {ghosts[0]}); fix {LABELS_FILE} or rebuild the dataset with "
                            "dataset_tool.py")
        missing = [n for n in self.files if n not in labels]
        if missing:
            raise UserError(f"{self.key}={self.path}: {LABELS_FILE} has no label for {len(missing)} image(s) "
                            f"(first: {missing[0]}); add them, or set data.use_labels=false")
        return [labels[n] for n in self.files]


def list_entries(p: Path, key: str = "data.path") -> list[str]:
    """Every file of a folder (all sub-folders) or a zip, as posix paths inside it."""
    if p.is_dir():
        return [f.relative_to(p).as_posix() for f in p.rglob("*") if f.is_file()]
    try:
        with zipfile.ZipFile(p) as z:
            return [n for n in z.namelist() if not n.endswith("/")]
    except (zipfile.BadZipFile, OSError) as e:
        raise UserError(f"{key}={p}: not a folder nor a valid zip archive ({e}); point "
                        f"{key} at an image folder or a zip made by dataset_tool.py") from e


def image_files(names: list[str]) -> list[str]:
    """The images the dataset serves, in the order it serves them."""
    return sorted(n for n in names if _is_image(n))


def files_read(p: Path, key: str = "data.path") -> list[str]:
    """Every file the dataset reads (its images and dataset.json): the one listing the dataset serves
    from and the reference-statistics cache fingerprints, so the two cannot disagree on what the data are."""
    names = list_entries(p, key)
    return image_files(names) + ([LABELS_FILE] if LABELS_FILE in names else [])


def _is_image(name: str) -> bool:
    # Skip hidden entries: macOS zips carry __MACOSX/._img.png resource forks that are not images.
    parts = name.split("/")
    if any(part.startswith(".") or part == "__MACOSX" for part in parts):
        return False
    return name.lower().endswith(EXTENSIONS)


def _parse_labels(raw: bytes, where: str) -> dict[str, int] | None:
    """{relative path: label} from dataset.json, None when it says "labels": null."""
    try:
        doc = json.loads(raw)
        entries = doc["labels"]
        if entries is None:
            return None
        labels = {}
        for name, label in entries:
            good = isinstance(name, str) and isinstance(label, int) and not isinstance(label, bool)
            if not good or label < 0:
                raise ValueError(f"entry {[name, label]} is not [path, non-negative int]")
            labels[name.replace("\\", "/")] = label
        return labels
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        why = " ".join(f"{type(e).__name__}: {e}".split())
        raise UserError(f"{where} is unreadable ({why}); it must look like {LABELS_EXAMPLE}, "
                        "or set data.use_labels=false") from e


def _square(img: Image.Image, resolution: int) -> Image.Image:
    w, h = img.size
    if w != h:
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size[0] != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return img


def _to_tensor(img: Image.Image) -> torch.Tensor:
    a = np.array(img, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return uint8_to_unit(torch.from_numpy(np.ascontiguousarray(a)))
