"""Images from a folder or a zip (the stylegan2-ada-pytorch dataset_tool layout), decoded lazily."""

from __future__ import annotations

import io
import json
import os
import sys
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
                 key: str = "data.path", scan: bool = False, mixed: str = "refuse", num_classes: int = 0):
        """``key``: the setting that named ``path``, for error messages (data.path, or eval's fake).
        ``scan``: read every image's header now (see scan_images) and refuse what would fail or mislead
        later; ``mixed``: images of several sizes or of gray and color together are refused ("refuse")
        or each converted to data.resolution / data.channels with a note ("convert").
        ``num_classes``: when > 0, the labels dataset.json may hold are 0..num_classes-1."""
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
        if mixed not in MIXED:
            raise UserError(f"data.mixed={mixed}: use one of {', '.join(MIXED)}")
        labels = self._read_labels() if use_labels and LABELS_FILE in read else None
        if labels is not None:
            check_labels(labels, self.files, int(num_classes or 0), f"{key}={path}: {LABELS_FILE}")
        if scan:
            scan_images(self, mixed)
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


MIXED = ("refuse", "convert")
# Classes are one-hot encoded or embedded: a label of 10^9 would ask for terabytes.
MAX_CLASSES = 100_000
GRAY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")
SHOWN = 3  # files named in a message


def scan_images(ds: ImageFolderDataset, mixed: str = "refuse", note=None, info=None) -> dict:
    """Every image's header (size and mode, nothing decoded), read at start-up so that what would fail
    hours in, or train on something else than the user thinks, stops now in one line: unreadable and
    empty files; several sizes (a 1-pixel image among 16-pixel ones included) or gray and color
    together unless ``mixed="convert"``. A folder of one size other than ``resolution``, or of the other
    color mode than ``channels``, is converted with a note. Prints one summary line; returns
    {"sizes": {(w, h): count}, "gray": n, "color": n}."""
    import time

    from genexp import distributed

    main = distributed.from_env().main
    note = note or ((lambda line: print(f"genexp: {line}", file=sys.stderr, flush=True)) if main else
                    (lambda line: None))
    info = info or ((lambda line: print(line, flush=True)) if main else (lambda line: None))
    where = f"{ds.key}={ds.path}"
    start = time.perf_counter()
    sizes: dict[tuple[int, int], list[str]] = {}
    modes: dict[str, list[str]] = {"gray": [], "color": []}
    empty, bad = [], []
    archive = zipfile.ZipFile(ds.path) if ds._is_zip else None
    try:
        infos = {i.filename: i for i in archive.infolist()} if archive else {}
        for name in ds.files:
            try:
                if archive is not None:
                    if infos[name].file_size == 0:
                        empty.append(name)
                        continue
                    handle = archive.open(name)
                else:
                    full = Path(ds.path) / name
                    if full.stat().st_size == 0:
                        empty.append(name)
                        continue
                    handle = open(full, "rb")
                with handle, Image.open(handle) as img:  # reads the header only: size and mode
                    size, mode = img.size, img.mode
            except (OSError, UnidentifiedImageError, SyntaxError, ValueError, zipfile.BadZipFile,
                    EOFError, KeyError) as e:
                why = "not an image file PIL can read" if isinstance(e, UnidentifiedImageError) else \
                    " ".join(f"{type(e).__name__}: {e}".split())[:100]
                bad.append((name, why))
                continue
            sizes.setdefault(size, []).append(name)
            modes["gray" if mode in GRAY_MODES else "color"].append(name)
    finally:
        if archive is not None:
            archive.close()
    if empty:
        raise UserError(f"{where}: {len(empty)} empty (0-byte) image file(s): {_first(empty)}; "
                        "remove or replace them")
    if bad:
        raise UserError(f"{where}: {len(bad)} image file(s) cannot be read: {bad[0][0]} ({bad[0][1]})"
                        f"{', ' + _first([n for n, _ in bad[1:]]) if len(bad) > 1 else ''}; remove or replace them")
    gray, color = len(modes["gray"]), len(modes["color"])
    by_count = sorted(sizes.items(), key=lambda kv: (-len(kv[1]), kv[0]))
    size_list = ", ".join(f"{w}x{h}: {len(names):,}" + (f" ({_first(names)})" if len(names) <= SHOWN else "")
                          for (w, h), names in by_count)
    elapsed = time.perf_counter() - start
    if len(sizes) > 1 and mixed != "convert":
        raise UserError(f"{where}: images of {len(sizes)} sizes ({size_list}); make them one size, or set "
                        f"data.mixed=convert to center-crop and resize each to data.resolution={ds.resolution}")
    if gray and color and mixed != "convert":
        few = modes["gray"] if gray <= color else modes["color"]
        raise UserError(f"{where}: {gray:,} gray and {color:,} color images (the fewer: {_first(few)}); "
                        "make them one mode, or set data.mixed=convert to convert each to "
                        f"data.channels={ds.channels}")
    mode_text = "gray" if not color else "RGB" if not gray else f"{gray:,} gray and {color:,} RGB"
    if len(sizes) == 1:
        (w, h), = sizes
        info(f"scanned {len(ds.files):,} images in {elapsed:.1f} s: all {w}x{h}"
             f"{' ' if gray * color == 0 else ', '}{mode_text}")
    else:
        info(f"scanned {len(ds.files):,} images in {elapsed:.1f} s: {mode_text}, sizes {size_list}")
    target = ds.resolution
    for (w, h), names in by_count:
        if (w, h) != (target, target):
            crop = "center-cropping and " if w != h else ""
            count = "" if len(sizes) == 1 else f"{len(names):,} "
            keep = f" (data.resolution={w} keeps their size)" if len(sizes) == 1 and w == h else ""
            note(f"{crop}resizing {count}{w}x{h} images to data.resolution={target}{keep}")
    want = "gray" if ds.channels == 1 else "color"
    other = modes["color" if want == "gray" else "gray"]
    if other:
        note(f"converting {len(other):,} {'RGB' if want == 'gray' else 'gray'} image(s) to "
             f"{'gray' if want == 'gray' else 'RGB'} (data.channels={ds.channels})")
    return {"sizes": {k: len(v) for k, v in sizes.items()}, "gray": gray, "color": color}


def check_labels(labels: list[int], files: list[str], num_classes: int, where: str) -> None:
    """Labels are class indices 0..K-1 of a sensible K: a label of 10^9 would one-hot into terabytes."""
    top = max(labels)
    name = files[labels.index(top)]
    if num_classes > 0 and top >= num_classes:
        raise UserError(f"{where}: label {top:,} (of {name}) but data.num_classes={num_classes}: labels are "
                        f"0..{num_classes - 1}; fix {LABELS_FILE} or raise data.num_classes")
    if top >= MAX_CLASSES:
        raise UserError(f"{where}: label {top:,} (of {name}) is beyond {MAX_CLASSES:,} classes: labels are class "
                        f"indices 0..K-1; renumber them in {LABELS_FILE}, or set data.use_labels=false")
    distinct = len(set(labels))
    if not num_classes and top + 1 > max(2 * distinct, distinct + 100):
        raise UserError(f"{where}: {distinct:,} distinct labels but the largest is {top:,} (of {name}): labels are "
                        f"class indices 0..K-1; renumber them 0..{distinct - 1} in {LABELS_FILE}, or set "
                        "data.use_labels=false")


def _first(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


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
