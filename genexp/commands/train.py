"""genexp train: build data, method, metrics and logger from the config, then run the loop."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from genexp import distributed, rundir
from genexp.commands.common import metrics_chosen, run_dir, task_overrides, wandb_names
from genexp.commands.transfer import init_from
from genexp.data import build_dataset
from genexp.data.loader import InfiniteLoader
from genexp.errors import Stopped, UserError, first_line
from genexp.logger import Console, QuietConsole, RunLogger, SilentLogger
from genexp.methods import build_method
from genexp.metrics.cache import cache_dir
from genexp.metrics.suite import MetricSuite
from genexp.training.checkpoint import NoReadableCheckpoint, load_checkpoint, newest_good_checkpoint
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
    max_steps = int(cfg.trainer.max_steps)
    if max_steps < 1:
        raise UserError(f"trainer.max_steps={cfg.trainer.max_steps} trains nothing: give the number of steps to "
                        "train (to look at a checkpoint, use genexp eval or genexp sample)")
    seed = int(cfg.trainer.seed)
    seed_everything(seed, bool(cfg.trainer.deterministic))
    ckpt, resumed_from, auto = checkpoint_to_resume(cfg, out, console)
    if ckpt is not None and int(ckpt["step"]) >= max_steps:
        # Nothing to train: say so before anything in the run dir (or a new one) is touched.
        if not same_run(resumed_from, out, auto):
            raise UserError(f"resume={resumed_from} is at step {ckpt['step']} and trainer.max_steps={max_steps}: a "
                            f"new run from it would train nothing; pass trainer.max_steps=<more than {ckpt['step']}>")
        console.note(f"the run is already at step {ckpt['step']} >= trainer.max_steps={max_steps}: nothing to do; "
                     "pass a larger trainer.max_steps to train on")
        return objective(dict(ckpt.get("best_metrics", {})), cfg.trainer.get("objective"))

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
    trainer = Trainer(cfg.trainer, method, loader, SilentLogger(), console, out, suite, reference,
                      meta=config_meta(cfg, task_overrides()))
    if ckpt is not None:
        # Checked against the method this config builds before the run dir is touched: a resume that
        # does not fit changes nothing in the run it read.
        try:
            trainer.restore(ckpt)
        except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise UserError(f"resume={resumed_from}: the checkpoint does not fit the model this config builds "
                            f"({first_line(exc)[:160]}); nothing was changed: resume with the run's own model and "
                            "data settings") from None
    elif cfg.get("init"):
        init_from(method, str(cfg.init), cfg, console.info)
    if world.main:
        rundir.write_hydra_files()
        name, group = wandb_names(out, OmegaConf.select(cfg, "logger.wandb.group", default=None))
        logger = RunLogger(out, console, cfg.get("logger"), cfg, name=name, group=group,
                           resume_from_step=int(ckpt["step"]) if ckpt else (0 if auto else None))
    else:
        logger = SilentLogger()
    trainer.logger = logger
    status = RunStatus(out, max_steps, task_overrides(), enabled=world.main, note=console.note)
    try:
        if ckpt is not None:
            console.info(f"resumed from {resumed_from} at step {trainer.step}")
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
    if trainer.saved_step == trainer.step:
        console.info(f"done: {out}/checkpoints/last.pt")
    else:  # checkpoints off (trainer.ckpt_every), or the disk refused the last ones
        kept = f"the newest checkpoint is step {trainer.saved_step}" if trainer.saved_step >= 0 else "no checkpoint"
        console.info(f"done at step {trainer.step} in {out} ({kept})")
    value = objective(trainer.best_metrics, cfg.trainer.get("objective"))
    if value is not None:
        console.info(f"objective {cfg.trainer.objective}: best {value:.6g} over the run's evaluations")
    return value


def checkpoint_to_resume(cfg: DictConfig, out: Path, console: Console) -> tuple[dict | None, str | None, bool]:
    """The checkpoint to continue from (or None), where it came from, and whether resume=auto chose it."""
    if cfg.get("resume") != "auto":
        return (load_checkpoint(cfg.resume) if cfg.get("resume") else None), cfg.get("resume"), False
    # a restarted job: the newest checkpoint of this run dir that loads, if any
    try:
        found = newest_good_checkpoint(out / "checkpoints", console.note)
    except NoReadableCheckpoint as exc:
        if not cfg.get("resume_from_scratch"):
            raise
        console.note(f"{str(exc).split(';')[0]}; resume_from_scratch=true: training from step 0")
        found = None
    return (found[1], str(found[0]), True) if found else (None, None, True)


def same_run(resumed_from: str | None, out: Path, auto: bool) -> bool:
    """Does the checkpoint belong to the run dir this job works in (a continuation, not a branch)?"""
    if auto:
        return True
    path = Path(str(resumed_from))
    if path.is_dir():
        return path.resolve() == out.resolve()
    return path.parent.name == "checkpoints" and path.parent.parent.resolve() == out.resolve()


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
    discrete data, recon for a model with an encoder, and diversity LPIPS on images when its AlexNet
    file is already on this machine (never downloaded for a default; a list the user gives is taken as
    it is)."""
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
    if cfg.data.get("kind", "image") == "image" and "lpips" not in metrics:
        from genexp.metrics.extractors import MetricUnavailable
        from genexp.metrics.lpips_net import backbone_file

        lpips = OmegaConf.load(conf_dir() / "metrics" / "lpips.yaml")
        try:
            backbone_file(str(lpips.net), None, False, "metrics.lpips.weights")
        except MetricUnavailable:
            return metrics
        lpips.download = False
        metrics.lpips = lpips
    return metrics



def objective(best: dict[str, float], name: str | None) -> float | None:
    """The value a Hydra sweeper (e.g. Optuna) optimises: the run's best value of the first metric
    named ``name`` (a kind such as ``fid``, or a key such as ``modes/captured``)."""
    if not name:
        return None
    from genexp.metrics.registry import names_key

    for key, value in best.items():
        if names_key(str(name), key):
            return value
    return None

