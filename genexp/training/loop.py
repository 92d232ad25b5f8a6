"""The training loop shared by every method. It knows steps, not GANs.

Order within a step, fixed so that a resumed run replays an uninterrupted one:
train step -> log -> sample grid -> evaluate -> checkpoint. Sampling and evaluation
use their own seeded generators and never touch the training RNG.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from genexp.data.loader import InfiniteLoader
from genexp.logger import Console, RunLogger
from genexp.methods.base import Method
from genexp.metrics.suite import MetricSuite, best_of
from genexp.training.checkpoint import save_checkpoint
from genexp.training.runtime import rng_state, set_rng_state
from genexp.viz import picture, save_png


def due(step: int, every: int | None, last: bool) -> bool:
    return bool(every) and (step % int(every) == 0 or last)


class Trainer:
    def __init__(self, cfg: DictConfig, method: Method, loader: InfiniteLoader, logger: RunLogger,
                 console: Console, run_dir: Path, suite: MetricSuite | None = None,
                 reference: torch.Tensor | None = None, meta: dict | None = None):
        self.cfg, self.method, self.loader, self.logger = cfg, method, loader, logger
        self.console, self.run_dir, self.suite, self.reference = console, Path(run_dir), suite, reference
        self.meta = meta or {}  # config and overrides, stored in every checkpoint
        self.step = 0
        self.last_metrics: dict[str, float] = {}
        self.best_metrics: dict[str, float] = {}  # each metric's best value over the run's evaluations

    def state(self) -> dict:
        return {"step": self.step, "method": self.method.state_dict_all(), "data": self.loader.state_dict(),
                "rng": rng_state(), "last_metrics": dict(self.last_metrics),
                "best_metrics": dict(self.best_metrics), **self.meta}

    def restore(self, ckpt: dict) -> None:
        self.method.load_state_dict_all(ckpt["method"])
        self.loader.load_state_dict(ckpt["data"])
        set_rng_state(ckpt["rng"])
        self.step = int(ckpt["step"])
        self.last_metrics = dict(ckpt.get("last_metrics", {}))
        self.best_metrics = dict(ckpt.get("best_metrics", {}))

    def fit(self) -> dict[str, float]:
        cfg, max_steps = self.cfg, int(self.cfg.max_steps)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        self.method.train()
        with self.console.progress(max_steps, self.step) as bar:
            while self.step < max_steps:
                scalars = self.method.train_step(self.loader, self.step)
                self.step += 1
                last = self.step == max_steps
                for k, v in scalars.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                count += 1
                bar.advance()
                logged: dict[str, float] = {}
                if due(self.step, cfg.log_every, last):
                    # Means over the steps since the last log; one device sync per log, not per step.
                    logged = {k: float(v) / count for k, v in sums.items()}
                    sums, count = {}, 0
                    bar.report(self.step, logged)
                if due(self.step, cfg.sample_every, last):
                    self.sample_grid()
                if self.suite and due(self.step, cfg.eval_every, last):
                    self.last_metrics = self.evaluate()
                    self.best_metrics = best_of(self.best_metrics, self.last_metrics)
                    logged.update(self.last_metrics)
                if logged:
                    self.logger.log(self.step, logged)
                if due(self.step, cfg.ckpt_every, last):
                    self.save()
        return self.last_metrics

    def sample_grid(self) -> None:
        self.method.eval()
        g = torch.Generator().manual_seed(int(self.cfg.seed))
        samples = self.method.sample(int(self.cfg.grid_samples), generator=g)
        self.method.train()
        image = picture(samples, self.reference, nrow=self.method.num_classes or None)  # a column per class
        save_png(image, self.run_dir / "samples" / f"step_{self.step:06d}.png")
        self.logger.image(self.step, "samples", image)
        if hasattr(self.method, "reconstruct") and getattr(self.loader.dataset, "kind", "image") == "image":
            self.reconstruction_grid()

    def reconstruction_grid(self) -> None:
        """The same real images every time (the first of the data), each row followed by its reconstruction."""
        dataset = self.loader.dataset
        nrow = max(1, int(min(int(self.cfg.grid_samples) // 2, len(dataset)) ** 0.5))
        n = nrow * nrow  # full rows only, so each real row sits right above its reconstruction
        real = torch.stack([dataset[i][0] for i in range(n)])
        labels = torch.stack([torch.as_tensor(dataset[i][1]) for i in range(n)])
        device = next(self.method.parameters()).device
        self.method.eval()
        with torch.no_grad():
            recon = self.method.reconstruct(real.to(device), labels.to(device) if bool((labels >= 0).all()) else None)
        self.method.train()
        rows = [t for start in range(0, n, nrow) for t in (real[start:start + nrow], recon[start:start + nrow].cpu())]
        image = picture(torch.cat(rows).clamp(-1, 1), nrow=nrow)
        save_png(image, self.run_dir / "samples" / f"recon_{self.step:06d}.png")
        self.logger.image(self.step, "reconstructions", image)

    def evaluate(self) -> dict[str, float]:
        self.method.eval()
        start = time.perf_counter()
        results = self.suite.compute(lambda n, g: self.method.sample(n, generator=g), seed=int(self.cfg.seed),
                                     model=(self.method, True))
        self.method.train()
        self.console.table(f"step {self.step} ({time.perf_counter() - start:.1f}s)", results)
        return results

    def save(self) -> None:
        state = self.state()
        ckpt_dir = self.run_dir / "checkpoints"
        save_checkpoint(state, ckpt_dir / f"step_{self.step:06d}.pt")
        save_checkpoint(state, ckpt_dir / "last.pt")


def config_meta(cfg: DictConfig, overrides: list[str]) -> dict:
    return {"config": OmegaConf.to_container(cfg, resolve=True), "overrides": list(overrides)}
