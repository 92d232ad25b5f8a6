"""Reference (real-data) statistics cached on disk, so a later evaluation computes only the fakes.

A file's name is the hash of everything that decides the statistics: the data config, every file
the dataset reads (each with its size and mtime in nanoseconds, or its content hash under
``GENEXP_CACHE_HASH=content``), genexp's preprocessing version, the metric kind and its protocol
(the extractor's name and weight hash, the resize filter, the real sample count, options such as
k). A changed key is a different file, never a stale one. A file is also checked when loaded
against what it claims (the key, the extractor, the count, the shapes, finite values and a
checksum of its arrays written at save time); one that does not fit is recomputed with one note.
``GENEXP_CACHE`` moves the cache (default ~/.cache/genexp); ``GENEXP_CACHE=off`` turns it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from genexp.data.base import RESIZE_FILTER
from genexp.files import save_torch

FORMAT = 2
# Bump when genexp changes how images become extractor inputs (decoding, cropping, resizing, the
# [-1, 1] mapping): statistics computed by an older pipeline then miss instead of being reused.
PREPROCESSING_VERSION = 2  # 2: bicubic antialiased when growing too (PIL's)
# Data settings that change how data are served, not what they are.
NOT_CONTENT = ("batch_size", "num_workers", "download")
HASH_ENV = "GENEXP_CACHE_HASH"


def cache_dir() -> Path | None:
    where = os.environ.get("GENEXP_CACHE", "")
    if where.lower() in ("off", "0", "false", "none"):
        return None
    return Path(where or Path.home() / ".cache" / "genexp") / "stats"


def content_hashing() -> bool:
    return os.environ.get(HASH_ENV, "").lower() == "content"


def _file_entry(path: Path, name: str) -> list:
    if content_hashing():
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return [name, h.hexdigest()]
    st = path.stat()
    return [name, st.st_size, st.st_mtime_ns]


def files_fingerprint(location: str | None) -> list:
    """Every file the dataset reads under ``location``: an image folder or zip through the listing the
    image dataset itself serves from (sub-folders and zip members included), any other folder (the
    idx / CIFAR roots) recursively; so a replaced, added or removed file misses."""
    if not location:
        return []
    path = Path(str(location)).expanduser()
    if not path.exists():
        return []
    from genexp.data.images import files_read

    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            infos = {i.filename: i for i in z.infolist()}
        members = [[n, infos[n].CRC, infos[n].file_size] for n in files_read(path) if n in infos]
        return [_file_entry(path, path.name), members]
    if path.is_file():
        return [_file_entry(path, path.name)]
    try:
        names = files_read(path)
    except Exception:  # no images: a dataset root of other files (idx, CIFAR batches)
        names = []
    if not names:
        names = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    return [_file_entry(path / n, n) for n in names]


def data_fingerprint(data: dict) -> list:
    return files_fingerprint(data.get("path")) + files_fingerprint(data.get("root"))


def reference_key(data: dict, kind: str, protocol: dict, files: list | None = None) -> str:
    """``files``: data_fingerprint(data) when the caller already has it (one listing for several metrics)."""
    content = {k: v for k, v in data.items() if k not in NOT_CONTENT}
    identity = {
        "format": FORMAT, "preprocessing": PREPROCESSING_VERSION, "data": content, "resize": RESIZE_FILTER,
        "kind": kind, "hash": "content" if content_hashing() else "stat",
        "files": data_fingerprint(data) if files is None else files,
        "protocol": {k: v for k, v in protocol.items() if k != "num_fake"},
    }
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def checksum(states: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(states):
        value = states[name].detach().cpu().contiguous()
        h.update(f"{name}:{value.dtype}:{tuple(value.shape)}".encode())
        h.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return h.hexdigest()


def claims(key: str, kind: str, protocol: dict) -> dict:
    """What a cache file says it holds, stored beside its arrays and compared when it is loaded."""
    return {"format": FORMAT, "key": key, "kind": kind, "extractor": protocol.get("extractor"),
            "num_real": protocol.get("num_real")}


def load(path: Path, expected: dict, shapes: dict[str, tuple]) -> tuple[dict[str, torch.Tensor] | None, str | None]:
    """(states, None) when the file fits; (None, why) when it exists and does not; (None, None) when absent."""
    if not path.exists():
        return None, None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        return None, f"unreadable ({type(exc).__name__})"
    if not isinstance(blob, dict) or not isinstance(blob.get("states"), dict) or not isinstance(blob.get("meta"), dict):
        return None, "not a genexp statistics file"
    meta, states = blob["meta"], blob["states"]
    for field, want in expected.items():
        if json.dumps(meta.get(field), sort_keys=True, default=str) != json.dumps(want, sort_keys=True, default=str):
            return None, f"its {field} is {meta.get(field)!r}, not {want!r}"
    if set(states) != set(shapes):
        return None, f"it holds {sorted(states)}, not {sorted(shapes)}"
    for name, shape in shapes.items():
        if not isinstance(states[name], torch.Tensor) or tuple(states[name].shape) != tuple(shape):
            got = tuple(states[name].shape) if isinstance(states[name], torch.Tensor) else type(states[name]).__name__
            return None, f"{name} has shape {got}, not {tuple(shape)}"
        if states[name].is_floating_point() and not bool(torch.isfinite(states[name]).all()):
            return None, f"{name} holds NaN or inf"
    if meta.get("checksum") != checksum(states):
        return None, "its arrays do not match the checksum written with them"
    return states, None


def save(path: Path, states: dict[str, torch.Tensor], meta: dict) -> str | None:
    """Atomic write (genexp/files.py; shared: other processes use the same cache); a failure is
    returned as one line and the evaluation goes on without the cache."""
    try:
        save_torch({"states": states, "meta": {**meta, "checksum": checksum(states)}}, path, shared=True)
    except OSError as exc:
        return f"reference statistics not cached ({exc.strerror or exc}): {path.parent}"
    return None
