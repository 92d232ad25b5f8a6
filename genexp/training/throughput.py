"""How fast a run goes, for its logs: images seen (kimg), images/s, s/kimg, each optimizer's lr and the
peak memory, logged under train/ with the losses (metrics.jsonl, W&B) and shown on the console.

Images seen are the real images drawn from the data, as StyleGAN's kimg counts the reals shown to D:
a GAN with k D steps per G step (WGAN-GP: 5) sees k batches per step, so kimg, not steps, is the
budget that compares objectives. The loader's checkpointed position gives the count exactly, across
resumes and data-parallel ranks (its batch is the global batch).
"""

from __future__ import annotations

import resource
import sys
import time

import torch


def images_seen(loader) -> int:
    """Real images drawn so far by every rank together."""
    return (loader.epoch * loader.batches_per_epoch + loader.index) * loader.batch_size


def peak_memory_mb(device: torch.device) -> float:
    """The device's peak allocated memory (CUDA), else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux


class Throughput:
    """Rates between two log lines (so a slow evaluation in between does not count as training time)."""

    def __init__(self, loader, optimizers: dict, device: torch.device):
        self.loader, self.optimizers, self.device = loader, optimizers, device
        self.mark()

    def mark(self) -> None:
        """Start timing from here (after an evaluation, a checkpoint ...)."""
        self.images, self.time = images_seen(self.loader), time.perf_counter()

    def values(self) -> dict[str, float]:
        images, now = images_seen(self.loader), time.perf_counter()
        rate = (images - self.images) / max(now - self.time, 1e-9)
        out = {"train/kimg": images / 1000, "train/images_per_s": rate}
        if rate > 0:
            out["train/s_per_kimg"] = 1000 / rate
        for name, opt in self.optimizers.items():
            if opt.param_groups:
                out[f"train/lr/{name}"] = float(opt.param_groups[0]["lr"])
        out["train/peak_mem_mb"] = peak_memory_mb(self.device)
        self.images, self.time = images, now
        return out


def rate_text(per_s: float, unit: str = "it") -> str:
    """12.3 it/s, or 4.2 s/it when slower than one a second (never '0.0 it/s')."""
    if per_s <= 0:
        return f"- {unit}/s"
    return f"{per_s:.1f} {unit}/s" if per_s >= 1 else f"{1 / per_s:.1f} s/{unit}"


def duration(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600} h {s // 60 % 60} min" if s >= 3600 else f"{s // 60} min {s % 60} s" if s >= 60 else f"{s} s"
