"""Checkpoints: everything needed to continue bit-exactly, written atomically, read safely.

Loading uses ``weights_only=True``: a checkpoint from someone else can hold tensors and
plain containers, never code.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from genexp.errors import UserError

FORMAT = "genexp-checkpoint"
VERSION = 1


def save_checkpoint(payload: dict, path: Path) -> None:
    """Write to a temporary file beside ``path`` and rename it over: a kill leaves either the
    old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save({"genexp": {"format": FORMAT, "version": VERSION}, **payload}, f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:  # a full disk, a kill: drop the partial file, keep the old checkpoint
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def step_of(path: Path) -> int | None:
    """step_000500.pt -> 500; other names -> None."""
    stem = path.stem
    return int(stem[5:]) if stem.startswith("step_") and stem[5:].isdigit() else None


def newest_good_checkpoint(ckpt_dir: Path, note=print) -> tuple[Path, dict] | None:
    """The newest checkpoint in ``ckpt_dir`` that loads (last.pt, then step files newest first); a torn
    or unreadable one is skipped with a note. None when there is none."""
    if not ckpt_dir.is_dir():
        return None
    steps = sorted((p for p in ckpt_dir.glob("step_*.pt") if step_of(p) is not None), key=step_of, reverse=True)
    candidates = ([ckpt_dir / "last.pt"] if (ckpt_dir / "last.pt").is_file() else []) + steps
    best: tuple[Path, dict] | None = None
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
        except UserError as exc:
            note(f"skipped {exc}")
            continue
        if best is None or int(ckpt["step"]) > int(best[1]["step"]):
            best = (path, ckpt)
        if path.name != "last.pt":  # step files come newest first: the first good one is the newest
            break
    return best


def prune_steps(ckpt_dir: Path, keep: int) -> None:
    """Keep the newest ``keep`` step_*.pt files (last.pt and best.pt are never removed)."""
    steps = sorted((p for p in ckpt_dir.glob("step_*.pt") if step_of(p) is not None), key=step_of, reverse=True)
    for old in steps[keep:]:
        old.unlink(missing_ok=True)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist: give the path of a .pt file in a run's checkpoints/")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} cannot be read (torn, corrupt or not a torch file: {reason})") from None
    meta = ckpt.get("genexp") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UserError(f"checkpoint {path} was not written by genexp train (no genexp marker): "
                        "give a checkpoint from a genexp run dir")
    if int(meta.get("version", 0)) > VERSION:
        raise UserError(f"checkpoint {path} has format version {meta['version']}; this genexp reads up to "
                        f"{VERSION}: upgrade genexp")
    return ckpt


def locate_resume(target: str) -> tuple[Path, Path | None]:
    """`resume=` takes a run dir (its checkpoints/last.pt) or a checkpoint file; returns the
    checkpoint and the run dir it belongs to (None for a loose file)."""
    path = Path(target)
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise UserError(f"resume={target}: no checkpoints/last.pt in that directory (is it a genexp run dir?)")
        return ckpt, path
    if path.is_file():
        run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
        return path, run_dir
    raise UserError(f"resume={target}: no such run directory or checkpoint")
