"""genexp train: build data, method, metrics and logger from the config, then run the loop."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from genexp import distributed
from genexp.commands.common import metrics_chosen, run_dir, task_overrides
from genexp.data import build_dataset
from genexp.data.loader import InfiniteLoader
from genexp.errors import Stopped, UserError, first_line
from genexp.logger import Console, QuietConsole, RunLogger, SilentLogger
from genexp.methods import build_method
from genexp.metrics.cache import cache_dir
from genexp.metrics.suite import MetricSuite
from genexp.training.checkpoint import load_checkpoint, newest_good_checkpoint
from genexp.training.loop import Trainer, config_meta
from genexp.training.runtime import resolve_device, seed_everything
from genexp.training.status import RunStatus


def run(cfg: DictConfig) -> float | None:
    world, device = distributed.setup(resolve_device(cfg.trainer.device))
    try:
        return train(cfg, world, device)
    except Stopped as exc:
        if world.main:
            raise
        raise Stopped("", exc.code) from None  # rank 0 says why, once
    finally:
        distributed.teardown()


def train(cfg: DictConfig, world: distributed.World, device: torch.device) -> float | None:
    out = run_dir()
    if world.enabled:  # every rank works in rank 0's run dir (torchrun starts each with its own clock)
        own, out = out, Path(distributed.broadcast_object(str(out)))
        if own != out and not any(own.iterdir()):
            own.rmdir()  # the throwaway dir genexp.cli gave Hydra on this rank
    console = Console(cfg.trainer.progress) if world.main else QuietConsole(cfg.trainer.progress)
    seed = int(cfg.trainer.seed)
    seed_everything(seed, bool(cfg.trainer.deterministic))
    auto = cfg.get("resume") == "auto"
    if auto:  # a restarted job: the newest checkpoint of this run dir that loads, if any
        found = newest_good_checkpoint(out / "checkpoints", console.note)
        ckpt = found[1] if found else None
        resumed_from = found[0] if found else None
    else:
        ckpt = load_checkpoint(cfg.resume) if cfg.get("resume") else None
        resumed_from = cfg.get("resume")

    dataset = build_dataset(cfg.data)
    classes = int(cfg.model.get("num_classes", 0) or 0)
    if classes and getattr(dataset, "num_classes", 0) != classes:
        raise UserError(f"model.num_classes={classes} but the data at hand has {getattr(dataset, 'num_classes', 0)} "
                        "labelled classes (an image folder takes its labels from dataset.json)")
    # data.batch_size is the global batch of one optimizer step: split into trainer.accumulate
    # micro-batches, each split over the ranks.
    accumulate = int(cfg.trainer.get("accumulate", 1) or 1)
    loader = InfiniteLoader(dataset, int(cfg.data.batch_size) // accumulate, seed, device,
                            int(cfg.data.get("num_workers", 0)), world.rank, world.size)
    method = build_method(cfg, device)
    distributed.broadcast_module(method)  # one model on every rank, whatever the init did
    if not world.main:  # rank 0 keeps the run's seed: with one process it is the same run as before
        seed_everything(distributed.rank_seed(seed, world.rank), bool(cfg.trainer.deterministic))
    speed_options(cfg.trainer, method, loader, console)
    suite = MetricSuite(default_held_out(cfg, method), dataset, cfg.data, device, console.note,
                        num_samples=cfg.trainer.get("eval_samples"), chosen=metrics_chosen(), cache_dir=cache_dir())
    reference = dataset.x[:2500] if getattr(dataset, "kind", "image") == "points" else None
    if world.main:
        logger = RunLogger(out, console, cfg.get("logger"), cfg, name=f"{out.name}",
                           resume_from_step=int(ckpt["step"]) if ckpt else (0 if auto else None))
    else:
        logger = SilentLogger()
    status = RunStatus(out, int(cfg.trainer.max_steps), task_overrides(), enabled=world.main)
    trainer = None
    try:
        trainer = Trainer(cfg.trainer, method, loader, logger, console, out, suite, reference,
                          meta=config_meta(cfg, task_overrides()))
        if ckpt is not None:
            trainer.restore(ckpt)
            console.info(f"resumed from {resumed_from} at step {trainer.step}")
            if trainer.step >= int(cfg.trainer.max_steps):
                console.note(f"the run is already at step {trainer.step} >= trainer.max_steps="
                             f"{cfg.trainer.max_steps}: pass a larger trainer.max_steps to train on")
        params = {k: sum(p.numel() for p in m.parameters()) for k, m in method.named_children()
                  if any(True for _ in m.parameters()) and not k.endswith("_ema")}
        where = f"{device}" if not world.enabled else f"{world.size} processes ({device.type}), " \
            f"{int(cfg.data.batch_size) // world.size // accumulate} images per process per micro-batch"
        console.info(f"run dir {out} | {cfg.model.name} on {cfg.data.name} with {cfg.loss.name} | {where} | "
                     + ", ".join(f"{k} {v / 1e6:.2f}M params" for k, v in params.items()))
        status.write("running", trainer)
        trainer.fit()
        status.write("done", trainer)
    except Stopped as exc:
        status.write("stopped", trainer, str(exc))
        raise
    except BaseException as exc:
        status.write("failed", trainer, first_line(exc))
        raise
    finally:
        logger.close()
    console.info(f"done: {out}/checkpoints/last.pt")
    value = objective(trainer.best_metrics, cfg.trainer.get("objective"))
    if value is not None:
        console.info(f"objective {cfg.trainer.objective}: best {value:.6g} over the run's evaluations")
    return value


def speed_options(trainer: DictConfig, method, loader: InfiniteLoader, console: Console) -> None:
    """trainer.channels_last and trainer.compile, on the built method (before any step)."""
    if trainer.get("channels_last"):
        method.to(memory_format=torch.channels_last)
        loader.channels_last = True
    if trainer.get("compile"):
        targets = method.compile_targets()
        left = sorted(k for k, m in method.named_children() if k not in targets and not k.endswith("_ema")
                      and any(True for _ in m.parameters()))
        for name in targets:
            getattr(method, name).compile()
        console.info(f"torch.compile: {', '.join(targets) or 'nothing'}"
                     + (f" (eager: {', '.join(left)}; their regularizers differentiate twice)" if left else ""))


def default_held_out(cfg: DictConfig, method):
    """The default metrics, plus the held-out ones this model has: nll for a likelihood model on
    discrete data, recon for a model with an encoder (a list the user gives is taken as it is)."""
    metrics = cfg.get("metrics")
    if metrics_chosen():
        return metrics
    from omegaconf import OmegaConf

    from genexp.cli import conf_dir

    metrics = OmegaConf.create(OmegaConf.to_container(metrics) if metrics is not None else {})
    if hasattr(method, "nll") and cfg.data.get("levels"):
        metrics.nll = OmegaConf.load(conf_dir() / "metrics" / "nll.yaml")
    if hasattr(method, "reconstruct"):
        metrics.recon = OmegaConf.load(conf_dir() / "metrics" / "recon.yaml")
    return metrics



def objective(best: dict[str, float], name: str | None) -> float | None:
    """The value a Hydra sweeper (e.g. Optuna) optimises: the run's best value of the first metric
    named ``name`` (a kind such as ``fid``, or a key such as ``modes/captured``)."""
    if not name:
        return None
    for key, value in best.items():
        if key.split("/", 1)[0] == name or key.split("@", 1)[0] == name:
            return value
    return None

