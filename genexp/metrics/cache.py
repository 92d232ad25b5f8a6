"""Reference (real-data) statistics cached on disk, so a later evaluation computes only the fakes.

A file's name is the hash of everything that decides the statistics: the data config (and the
size and mtime of its files), the resize filter, the metric kind, its extractor's name and weight
hash, the real sample count and options such as k. A changed key is a different file, never a
stale one. ``GENEXP_CACHE`` moves the cache (default ~/.cache/genexp); ``GENEXP_CACHE=off`` turns
it off.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import torch

from genexp.data.base import RESIZE_FILTER

FORMAT = 1
# Data settings that change how data are served, not what they are.
NOT_CONTENT = ("batch_size", "num_workers", "download")


def cache_dir() -> Path | None:
    where = os.environ.get("GENEXP_CACHE", "")
    if where.lower() in ("off", "0", "false", "none"):
        return None
    return Path(where or Path.home() / ".cache" / "genexp") / "stats"


def files_fingerprint(location: str | None) -> list:
    """Sizes and mtimes of the data files (a folder's direct entries), so replaced files miss."""
    if not location:
        return []
    path = Path(str(location)).expanduser()
    if path.is_file():
        return [[path.name, path.stat().st_size, int(path.stat().st_mtime)]]
    if path.is_dir():
        return sorted([p.name, p.stat().st_size, int(p.stat().st_mtime)] for p in path.iterdir() if p.is_file())
    return []


def reference_key(data: dict, kind: str, protocol: dict) -> str:
    content = {k: v for k, v in data.items() if k not in NOT_CONTENT}
    identity = {
        "format": FORMAT, "data": content, "resize": RESIZE_FILTER, "kind": kind,
        "files": files_fingerprint(data.get("path")) + files_fingerprint(data.get("root")),
        "protocol": {k: v for k, v in protocol.items() if k != "num_fake"},
    }
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def real_states(metric) -> dict[str, torch.Tensor]:
    """A torchmetrics metric's real-side states (FID sums, KID / PR features), lists concatenated."""
    out = {}
    for name in metric._defaults:
        if name.startswith("real_"):
            value = getattr(metric, name)
            out[name] = torch.cat(value) if isinstance(value, list) else value
    return {k: v.detach().cpu() for k, v in out.items()}


def load_real_states(metric, states: dict[str, torch.Tensor]) -> None:
    device = metric.device
    for name, value in states.items():
        current = getattr(metric, name)
        setattr(metric, name, [value.to(device)] if isinstance(current, list) else value.to(device))


def load(path: Path) -> dict[str, torch.Tensor] | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError):
        return None  # absent or unreadable: computed again and rewritten


def save(path: Path, states: dict[str, torch.Tensor]) -> str | None:
    """Atomic write; a failure is returned as one line (the evaluation goes on without the cache)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(states, tmp)
        os.replace(tmp, path)
    except OSError as exc:
        return f"reference statistics not cached ({exc.strerror or exc}): {path.parent}"
    return None
