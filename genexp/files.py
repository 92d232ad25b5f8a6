"""Every file genexp writes (checkpoints, run.json, .hydra/, metrics.jsonl, sample images and tensors,
the statistics cache, reports) is written here, so that none can be left torn.

Whole files go to a temporary file beside the target, are flushed to disk and renamed over it: a kill
or a full disk leaves the old file or the new one, never a mix. Lines are appended with one write each,
and a write the disk cut short is cut back off, so a reader never meets half a line.

A failed write raises OSError. torch reports its writer's I/O errors (a full disk among them) as
RuntimeError; those are turned into OSError here so that a caller has one thing to catch.
"""

from __future__ import annotations

import errno
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], shared: bool = False) -> None:
    """Call ``write(file)`` on a temporary file, then rename it over ``path``. ``shared``: the folder
    may have other writers (a cache), so the temporary name carries the pid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A run dir has one writer (genexp.rundir holds its lock): a fixed name lets the next save reuse
    # the space of a temporary file that a kill left behind, instead of piling them up.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp" if shared else f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, RuntimeError) and not isinstance(exc, OSError):
            raise write_error(exc, path) from exc
        raise
    sync_dir(path.parent)


def write_error(exc: RuntimeError, path: Path) -> OSError:
    """torch.save's RuntimeError as the OSError it stands for (the cause's errno where there is one)."""
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError):
        return OSError(cause.errno, cause.strerror or str(cause), str(path))
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return OSError(errno.EIO, f"write failed: {text[:160]}", str(path))


def sync_dir(folder: Path) -> None:
    """The rename itself reaches the disk (without this a power cut may undo it). Not every
    platform or file system can open a folder for this; the rename stands all the same."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes, shared: bool = False) -> None:
    atomic_write(path, lambda f: f.write(data), shared)


def atomic_write_text(path: str | Path, text: str, shared: bool = False) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), shared)


def save_torch(obj: Any, path: str | Path, shared: bool = False) -> None:
    import torch

    atomic_write(path, lambda f: torch.save(obj, f), shared)


def save_npz(path: str | Path, **arrays) -> None:
    import numpy as np

    atomic_write(path, lambda f: np.savez(f, **arrays))


def save_image(image, path: str | Path, **options) -> None:
    """A PIL image (format from the suffix, or ``format=``; ``save_all=`` etc. for GIFs)."""
    path = Path(path)
    options.setdefault("format", {".jpg": "JPEG", ".jpeg": "JPEG", ".gif": "GIF"}.get(path.suffix.lower(), "PNG"))
    buffer = io.BytesIO()  # PIL may seek while it writes: encode in memory, then one atomic write
    image.save(buffer, **options)
    atomic_write_bytes(path, buffer.getvalue())


class AppendFile:
    """A log that only grows (metrics.jsonl): each line is one write with O_APPEND, unbuffered, so a
    kill leaves whole lines; a line the disk cut short is removed again before the error is raised."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)

    def write_line(self, text: str) -> None:
        if self.fd is None:
            raise ValueError(f"{self.path} is closed")
        data = (text.rstrip("\n") + "\n").encode("utf-8")
        size = os.fstat(self.fd).st_size
        try:
            written = os.write(self.fd, data)
            if written != len(data):  # the disk filled up within the line
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
        except OSError:
            try:
                os.ftruncate(self.fd, size)
            except OSError:
                pass
            raise

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
