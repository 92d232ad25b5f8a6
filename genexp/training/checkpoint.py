"""Checkpoints: everything needed to continue bit-exactly, written atomically, read safely.

Loading uses ``weights_only=True``: a checkpoint from someone else can hold tensors and
plain containers, never code.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from genexp.errors import UserError
from genexp.files import save_torch

FORMAT = "genexp-checkpoint"
# 2: StyleGAN2's up-sampling convolution became the official true convolution (version 1 files are
# migrated on load, see migrate).
VERSION = 2


def save_checkpoint(payload: dict, path: Path) -> None:
    """Atomic (genexp/files.py): a kill or a full disk leaves the old file or the new one, never a
    torn one. A failed write raises OSError."""
    save_torch({"genexp": {"format": FORMAT, "version": VERSION}, **payload}, path)


class CheckpointUnreadable(UserError):
    """The file is there but is not a checkpoint genexp can use (torn, corrupt, foreign, too new)."""


class CheckpointReadError(UserError):
    """Reading the file failed (an I/O error, no permission): the file itself may be whole."""


class NoReadableCheckpoint(UserError):
    """resume=auto: the run dir has checkpoints, and not one of them reads."""


def step_of(path: Path) -> int | None:
    """step_000500.pt -> 500; other names -> None."""
    stem = path.stem
    return int(stem[5:]) if stem.startswith("step_") and stem[5:].isdigit() else None


def newest_good_checkpoint(ckpt_dir: Path, note=print) -> tuple[Path, dict] | None:
    """The newest checkpoint in ``ckpt_dir`` that loads (last.pt, then step files newest first); a torn
    or corrupt one is skipped with a note. None when there is no checkpoint at all;
    NoReadableCheckpoint when there are some and none loads. A read error (CheckpointReadError) is
    raised, not skipped: going back to an older checkpoint over a file that may be whole loses work."""
    if not ckpt_dir.is_dir():
        return None
    steps = sorted((p for p in ckpt_dir.glob("step_*.pt") if step_of(p) is not None), key=step_of, reverse=True)
    candidates = ([ckpt_dir / "last.pt"] if (ckpt_dir / "last.pt").is_file() else []) + steps
    best: tuple[Path, dict] | None = None
    skipped = []
    for path in candidates:
        try:
            ckpt = load_checkpoint(path)
        except CheckpointUnreadable as exc:
            note(f"skipped {exc}")
            skipped.append(path.name)
            continue
        if best is None or int(ckpt["step"]) > int(best[1]["step"]):
            best = (path, ckpt)
        if path.name != "last.pt":  # step files come newest first: the first good one is the newest
            break
    if best is None and skipped:
        raise NoReadableCheckpoint(
            f"resume=auto: none of the {len(skipped)} checkpoints in {ckpt_dir} reads ({', '.join(skipped[:4])}"
            f"{', ...' if len(skipped) > 4 else ''}); nothing was changed: restore them, or pass "
            "resume_from_scratch=true to train this run dir again from step 0")
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
    except OSError as exc:
        raise CheckpointReadError(f"checkpoint {path} could not be read ({exc.strerror or exc}): a read error, not "
                                  "a torn file; nothing was changed: try again once the file can be read") from None
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
        raise CheckpointUnreadable(f"checkpoint {path} cannot be read (torn, corrupt or not a torch file: "
                                   f"{reason})") from None
    meta = ckpt.get("genexp") if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointUnreadable(f"checkpoint {path} was not written by genexp train (no genexp marker): "
                                   "give a checkpoint from a genexp run dir")
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointUnreadable(f"checkpoint {path} has format version {meta['version']}; this genexp reads "
                                   f"up to {VERSION}: upgrade genexp")
    return migrate(ckpt, int(meta.get("version", 1)))


STYLEGAN2_G = "genexp.models.stylegan2.Generator"


def migrate(ckpt: dict, version: int) -> dict:
    """A checkpoint of an older format as this genexp reads it. Version 1 StyleGAN2 generators were
    trained with the up-sampling convolution as a cross-correlation: their kernels are flipped so
    that they compute what they computed (up to the one-pixel border; the Adam moments of those
    kernels stay as they were, so a resumed v1 run is close to, not bit-equal with, its old self)."""
    if version >= 2:
        return ckpt
    model = (ckpt.get("config") or {}).get("model") or {}
    modules = (ckpt.get("method") or {}).get("modules")
    if (model.get("generator") or {}).get("_target_") == STYLEGAN2_G and isinstance(modules, dict):
        from genexp.models.stylegan2 import flip_up_convolutions

        for net in ("G.", "G_ema."):
            part = {k: v for k, v in modules.items() if k.startswith(net)}
            modules.update(flip_up_convolutions(part))
    ckpt["genexp"] = {**ckpt["genexp"], "version": VERSION, "migrated_from": version}
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
