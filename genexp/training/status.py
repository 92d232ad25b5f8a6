"""run.json: where a run stands (running, done, stopped, failed), its steps, wall time and metrics.

Written atomically at the start and the end of every `genexp train`, so `genexp report` can read a
sweep folder while it runs; a run killed outright keeps saying "running" (the report checks its age).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from genexp.files import atomic_write_text


class RunStatus:
    def __init__(self, run_dir: Path, max_steps: int, overrides: list[str], enabled: bool = True, note=None):
        self.enabled = enabled  # data-parallel: rank 0 alone writes
        self.note = note or (lambda line: print(f"genexp: {line}", file=sys.stderr))
        self.path = Path(run_dir) / "run.json"
        self.max_steps, self.overrides = max_steps, overrides
        self.started = time.time()
        self.before = 0.0  # wall time of earlier sessions of this run (resumed in place)
        try:
            self.before = float(json.loads(self.path.read_text()).get("wall_s", 0.0))
        except (OSError, ValueError):
            pass

    def write(self, status: str, trainer=None, message: str | None = None) -> None:
        if not self.enabled:
            return
        record = {"status": status, "step": getattr(trainer, "step", 0), "max_steps": self.max_steps,
                  "wall_s": round(self.before + time.time() - self.started, 2), "updated": time.time(),
                  "pid": os.getpid(), "overrides": self.overrides,
                  "final": dict(getattr(trainer, "last_metrics", {}) or {}),
                  "best": dict(getattr(trainer, "best_metrics", {}) or {})}
        if message:
            record["message"] = message
        try:
            atomic_write_text(self.path, json.dumps(record, indent=2) + "\n")
        except OSError as exc:  # a full disk: the previous run.json stays; training goes on
            self.note(f"run.json not updated to '{status}' ({exc.strerror or exc})")
