"""Fan-out of scalars and images to metrics.jsonl, the console and (optionally) W&B.

W&B is a guest: if it fails to start or to log, the run says so once and goes on
without it. ``logger.wandb.mode=auto`` goes online only when credentials exist.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from genexp.files import AppendFile, atomic_write_text
from genexp.logger.console import Console
from genexp.logger.wandb_mode import INIT_TIMEOUT_S, wandb_mode


class RunLogger:
    def __init__(self, run_dir: Path, console: Console, logger_cfg: DictConfig | None = None,
                 config: DictConfig | None = None, name: str | None = None, resume_from_step: int | None = None,
                 group: str | None = None):
        self.run_dir, self.console = Path(run_dir), console
        self.jsonl_path = self.run_dir / "metrics.jsonl"
        if resume_from_step is not None:
            drop_after(self.jsonl_path, resume_from_step)
        self.jsonl = AppendFile(self.jsonl_path)
        self.unwritten = 0  # lines a full disk refused
        self.wandb = None
        self.model = OmegaConf.select(config, "model.name", default=None) if config is not None else None
        wandb_cfg = logger_cfg.get("wandb") if logger_cfg is not None else None
        if wandb_cfg is not None:
            self._start_wandb(wandb_cfg, config, name, group)

    def _start_wandb(self, cfg: DictConfig, config: DictConfig | None, name: str | None,
                     group: str | None = None) -> None:
        mode = wandb_mode(cfg.get("mode", "auto"), self.console.note)
        if mode == "disabled":
            return
        try:
            import wandb

            id_file = self.run_dir / ".wandb_id"
            run_id = id_file.read_text().strip() if id_file.is_file() else secrets.token_hex(4)
            if not id_file.is_file():
                atomic_write_text(id_file, run_id)
            self.wandb = wandb.init(
                dir=str(self.run_dir), project=cfg.get("project"), entity=cfg.get("entity"),
                group=group or cfg.get("group"), tags=list(cfg.get("tags") or []), name=name, id=run_id, resume="allow",
                mode=mode, config=OmegaConf.to_container(config, resolve=True) if config is not None else None,
                settings=wandb.Settings(silent=True, console="off", init_timeout=INIT_TIMEOUT_S),
            )
            self.log_images = bool(cfg.get("log_images", True))
            if mode == "offline":
                self.console.note(f"W&B offline: logs in {self.run_dir}/wandb (wandb sync to upload)")
        except Exception as exc:  # a tracker must never stop a run
            self._drop_wandb(exc)

    def _drop_wandb(self, exc: Exception) -> None:
        self.console.note(f"W&B failed ({type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''}); "
                          "continuing without it")
        self.wandb = None

    def log(self, step: int, values: dict[str, float]) -> None:
        try:
            self.jsonl.write_line(json.dumps({"step": step, **values}))
        except OSError as exc:  # a full disk: the run goes on; the note comes once, with the first lost line
            self.unwritten += 1
            if self.unwritten == 1:
                self.console.note(f"metrics.jsonl: step {step} not logged ({exc.strerror or exc}); training goes "
                                  "on, and lines are lost until there is space again")
        if self.wandb is not None:
            try:
                self.wandb.log(values, step=step)
            except Exception as exc:
                self._drop_wandb(exc)

    def image(self, step: int, key: str, image: np.ndarray) -> None:
        """``image``: uint8 (H, W) or (H, W, C) in [0, 255], as W&B wants it."""
        if self.wandb is None or not self.log_images:
            return
        try:
            import wandb

            caption = f"step {step}" + (f" · {self.model}" if self.model else "")
            self.wandb.log({key: wandb.Image(image, caption=caption)}, step=step)
        except Exception as exc:
            self._drop_wandb(exc)

    def close(self) -> None:
        self.jsonl.close()
        if self.wandb is not None:
            try:
                self.wandb.finish()
            except Exception as exc:
                self._drop_wandb(exc)
            self.wandb = None


def drop_after(path: Path, step: int) -> None:
    """On resume from ``step``, lines logged after it by the interrupted run are replaced by
    the resumed run's; rewrite the file atomically without them."""
    if not path.is_file():
        return
    lines = path.read_text().splitlines(keepends=True)
    kept = [line for line in lines if logged_step(line) is not None and logged_step(line) <= step]
    if kept != lines:
        atomic_write_text(path, "".join(kept))


def logged_step(line: str) -> int | None:
    """A line's step; None for a line that is not a whole JSON record (written by something else)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return int(record.get("step", 0)) if isinstance(record, dict) else None


class SilentLogger:
    """A data-parallel rank other than 0 logs nothing: no metrics.jsonl, no W&B run."""

    def log(self, step: int, values: dict[str, float]) -> None:
        pass

    def image(self, step: int, key: str, image) -> None:
        pass

    def close(self) -> None:
        pass
