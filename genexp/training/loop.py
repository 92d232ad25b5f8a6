"""The training loop shared by every method. It knows steps, not GANs.

Order within a step, fixed so that a resumed run replays an uninterrupted one:
train step -> log -> sample grid -> evaluate -> checkpoint. Sampling and evaluation
use their own seeded generators and never touch the training RNG.

Faults: SIGTERM, SIGINT and SIGUSR1 (SLURM's warning before preemption) finish the current step,
write a checkpoint and stop; a non-finite loss stops the run before it can be checkpointed (or,
with ``on_nan=skip``, optimizer steps with non-finite gradients are skipped); a checkpoint that
cannot be written (a full disk) leaves the previous one as it was and training goes on.

Data-parallel (genexp/distributed.py): every rank runs this loop in step; decisions that end or
shape the run (a stop signal on any rank, a non-finite loss in the ranks' mean) are taken on values
all ranks share, so no rank is left waiting in a collective. Rank 0 writes and logs; evaluation is
spread over all ranks.
"""

from __future__ import annotations

import contextlib
import math
import signal
import time
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from genexp import distributed
from genexp.data.loader import InfiniteLoader
from genexp.errors import Stopped
from genexp.files import save_torch
from genexp.logger import Console, RunLogger
from genexp.methods.base import Method
from genexp.metrics.registry import names_key
from genexp.metrics.suite import MetricSuite, best_of, better
from genexp.training.checkpoint import prune_steps, save_checkpoint
from genexp.training.phema import PowerEMA, snapshot_path
from genexp.training.runtime import rng_state, set_rng_state
from genexp.training.throughput import Throughput, images_seen
from genexp.viz import picture, reconstruction_figure, save_png


def due(step: int, every: int | None, last: bool) -> bool:
    return bool(every) and (step % int(every) == 0 or last)


STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1") if hasattr(signal, name))


@contextlib.contextmanager
def signals_noted(trainer: Trainer):
    """While training, a stop signal is noted (trainer.stop_signal) and acted on between steps."""
    def note(signum, frame):
        trainer.stop_signal = signum

    try:
        previous = {sig: signal.signal(sig, note) for sig in STOP_SIGNALS}
    except ValueError:  # not the main thread (e.g. some launchers): signals stay as they are
        yield
        return
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def skip_nonfinite_steps(optimizer: torch.optim.Optimizer, counter: list[int]) -> None:
    """on_nan=skip: an optimizer step whose gradients are not all finite changes nothing (every
    gradient is dropped, so Adam's moments and step count stay too), and is counted."""
    def hook(opt, args, kwargs):
        grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            for group in opt.param_groups:
                for p in group["params"]:
                    p.grad = None
            counter[0] += 1

    optimizer.register_step_pre_hook(hook)


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
        self.stop_signal: int | None = None
        self.saved_step = -1  # the step of the newest checkpoint written
        self.on_nan = str(cfg.get("on_nan", "stop"))
        self.skipped = [0]  # optimizer steps skipped for non-finite gradients (on_nan=skip)
        self.world = distributed.world()
        self.precision = str(cfg.get("precision", "32"))
        self.device_type = next(method.parameters()).device.type
        method.accumulate = int(cfg.get("accumulate", 1) or 1)
        if self.world.enabled:  # gradients averaged over ranks after the backward passes of a step
            method.grad_sync = distributed.average_gradients
        self.scaler = None
        if self.precision == "16":  # float16's narrow range: dynamic loss scaling
            self.scaler = method.scaler = torch.amp.GradScaler(self.device_type)
        if self.on_nan == "skip":
            for optimizer in method.optimizers.values():
                skip_nonfinite_steps(optimizer, self.skipped)
        self.phema = PowerEMA.from_config(cfg.get("phema"), method)  # post-hoc EMA tracks (None: off)

    def state(self) -> dict:
        """The checkpoint. Data-parallel: a collective (every rank's random state is gathered, so a
        resumed run with as many ranks replays each rank's noise)."""
        rng = rng_state()
        state = {"step": self.step, "method": self.method.state_dict_all(), "data": self.loader.state_dict(),
                 "rng": rng, "last_metrics": dict(self.last_metrics),
                 "best_metrics": dict(self.best_metrics), "skipped_steps": self.skipped[0], **self.meta}
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        if self.phema is not None:
            state["phema"] = self.phema.state_dict()
        if self.world.enabled:
            state["rng_ranks"] = distributed.gather_objects(rng)
            # a record that the ranks trained in step (and a loud note if they did not)
            state["rank_checksums"] = distributed.gather_objects(distributed.checksum(self.method))
            if len(set(state["rank_checksums"])) > 1:
                self.console.note(f"step {self.step}: the ranks' weights differ ({state['rank_checksums']}): "
                                  "a model or method that updates weights outside the optimizer step is not "
                                  "data-parallel safe")
        return state

    def restore(self, ckpt: dict) -> None:
        self.method.load_state_dict_all(ckpt["method"])
        self.loader.load_state_dict(ckpt["data"])
        ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        if len(ranks) == self.world.size:
            set_rng_state(ranks[self.world.rank])
        else:  # another number of ranks: rank 0 goes on with the saved stream, the others start anew
            set_rng_state(ckpt["rng"])
            if not self.world.main:
                torch.manual_seed(distributed.rank_seed(int(self.cfg.seed) + int(ckpt["step"]), self.world.rank))
        if self.scaler is not None and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.phema is not None:
            self.phema.load_state_dict(ckpt.get("phema"))
        self.step = int(ckpt["step"])
        self.last_metrics = dict(ckpt.get("last_metrics", {}))
        self.best_metrics = dict(ckpt.get("best_metrics", {}))
        self.skipped[0] = int(ckpt.get("skipped_steps", 0))
        self.saved_step = self.step

    def fit(self) -> dict[str, float]:
        cfg, max_steps = self.cfg, int(self.cfg.max_steps)
        sums: dict[str, torch.Tensor] = {}
        count = 0
        self.method.train()
        out_of_time = time_budget(cfg)
        speed = Throughput(self.loader, self.method.optimizers, next(self.method.parameters()).device)
        with self.console.progress(max_steps, self.step) as bar, signals_noted(self):
            while self.step < max_steps:
                with self.autocast():
                    scalars = self.method.train_step(self.loader, self.step)
                self.step += 1
                if self.phema is not None:
                    self.phema.update(self.step)
                last = self.step == max_steps
                if not last and cfg.get("max_kimg") and images_seen(self.loader) >= 1000 * float(cfg.max_kimg):
                    last = True  # the same on every rank: the loader's position is global
                    self.console.note(f"trainer.max_kimg={cfg.max_kimg} reached: training stops at step {self.step} "
                                      f"({images_seen(self.loader):,} images drawn)")
                if not last and out_of_time is not None and distributed.any_rank(out_of_time()):
                    last = True  # the budget ends the run here, as max_steps would
                    self.console.note(f"trainer.max_time_s={cfg.max_time_s} ({cfg.get('time_clock', 'process')} "
                                      f"clock) reached: training stops at step {self.step}")
                for k, v in scalars.items():
                    sums[k] = sums[k] + v if k in sums else v.clone()
                count += 1
                bar.advance()
                logged: dict[str, float] = {}
                if due(self.step, cfg.log_every, last):
                    # Means over the steps since the last log (and the ranks); one device sync per log.
                    logged = distributed.mean_values({k: float(v) / count for k, v in sums.items()})
                    if self.on_nan == "skip":
                        logged["train/skipped_steps"] = float(self.skipped[0])
                    self.check_finite(logged)
                    logged.update(speed.values())  # kimg, images/s, s/kimg, lr, peak memory
                    sums, count = {}, 0
                    bar.report(self.step, logged)
                stopping = distributed.any_rank(self.stop_signal is not None)
                saving = due(self.step, cfg.ckpt_every, last) or stopping
                if self.world.enabled and (saving or due(self.step, cfg.sample_every, last)
                                           or (self.suite and due(self.step, cfg.eval_every, last))):
                    # buffers that training updates per rank (running statistics, w_avg): rank 0's
                    distributed.broadcast_module(self.method, buffers_only=True)
                if due(self.step, cfg.sample_every, last) and self.world.main:
                    self.sample_grid()
                if self.suite and due(self.step, cfg.eval_every, last):
                    self.last_metrics = self.evaluate()
                    self.best_metrics = self.keep_best(self.last_metrics)
                    logged.update(self.last_metrics)
                if logged:
                    self.logger.log(self.step, logged)
                if self.phema is not None and due(self.step, self.phema.every, last) and self.world.main:
                    self.write_phema_snapshot()
                if saving:
                    # steps not logged yet
                    self.check_finite(distributed.mean_values({k: float(v) for k, v in sums.items()}))
                    self.save()
                if logged or saving:
                    speed.mark()  # the next rates time training, not the evaluation or writes just done
                if stopping:
                    distributed.barrier()  # no rank exits (and makes torchrun end the others) mid-write
                    name = signal.Signals(self.stop_signal or signal.SIGTERM).name
                    where = f"{self.run_dir}/checkpoints/last.pt" if self.saved_step == self.step else "none written"
                    raise Stopped(f"stopped by {name} at step {self.step}; checkpoint: {where}; continue with "
                                  f"resume={self.run_dir} (or resume=auto hydra.run.dir={self.run_dir})",
                                  128 + int(self.stop_signal or signal.SIGTERM))
                if last:  # max_steps or the time budget
                    break
        distributed.barrier()
        return self.last_metrics

    def autocast(self):
        """trainer.precision=bf16|16: the whole step under autocast (bf16 has float32's range and needs
        no loss scaling; float16 takes the GradScaler set up in __init__)."""
        dtype = {"bf16": torch.bfloat16, "16": torch.float16}.get(self.precision)
        return torch.autocast(device_type=self.device_type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)

    def check_finite(self, values: dict[str, float]) -> None:
        """A non-finite loss ends the run here, before the diverged state can overwrite a checkpoint."""
        bad = sorted(k for k, v in values.items() if not math.isfinite(v))
        if not bad or self.on_nan == "skip":
            return
        kept = f"step {self.saved_step} in {self.run_dir}/checkpoints/" if self.saved_step >= 0 else "none yet"
        raise Stopped(f"non-finite {', '.join(bad[:3])} by step {self.step}: training stopped; last good "
                      f"checkpoint: {kept}; lower the learning rate or set trainer.on_nan=skip", 3)

    def keep_best(self, latest: dict[str, float]) -> dict[str, float]:
        """Each metric's best so far; with keep_best, best.pt holds the state at the objective's best."""
        key = next((k for k in latest if self.cfg.get("objective") and names_key(str(self.cfg.objective), k)), None)
        improved = key is not None and (key not in self.best_metrics
                                        or better(key, latest[key], self.best_metrics[key]))
        best = best_of(self.best_metrics, latest)
        if improved and self.cfg.get("keep_best"):
            self.best_metrics = best
            self.write(self.run_dir / "checkpoints" / "best.pt", self.state())
        return best

    def sample_grid(self) -> None:
        self.method.eval()
        g = torch.Generator().manual_seed(int(self.cfg.seed))
        samples = self.method.sample(int(self.cfg.grid_samples), generator=g)
        self.method.train()
        image = picture(samples, self.loader.dataset, self.method.num_classes or None, self.step)  # a column per class
        self.save_picture(image, self.run_dir / "samples" / f"step_{self.step:06d}.png")
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
        image = reconstruction_figure(real, recon, nrow)
        self.save_picture(image, self.run_dir / "samples" / f"recon_{self.step:06d}.png")
        self.logger.image(self.step, "reconstructions", image)

    def save_picture(self, image, path: Path) -> None:
        try:
            save_png(image, path)
        except OSError as exc:  # a full disk costs a picture, not the run
            self.console.note(f"{path.name} at step {self.step} not written ({exc.strerror or exc}); training goes on")

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
        if self.write(ckpt_dir / f"step_{self.step:06d}.pt", state) and self.write(ckpt_dir / "last.pt", state):
            self.saved_step = self.step
            if self.cfg.get("keep_last"):
                prune_steps(ckpt_dir, int(self.cfg.keep_last))

    def write_phema_snapshot(self) -> None:
        batch = ((self.meta.get("config") or {}).get("data") or {}).get("batch_size")
        snapshot = self.phema.snapshot(self.step, batch, self.meta)
        path = snapshot_path(self.run_dir, self.step)
        try:
            save_torch(snapshot, path)
        except OSError as exc:  # a full disk costs a snapshot (a gap in what genexp phema combines), not the run
            self.console.note(f"post-hoc EMA snapshot {path.name} at step {self.step} not written "
                              f"({exc.strerror or exc}); training goes on")

    def write(self, path: Path, state: dict) -> bool:
        if not self.world.main:  # rank 0 writes; the others hold the same weights
            return True
        try:
            save_checkpoint(state, path)
            return True
        except OSError as exc:  # e.g. no space left: the previous checkpoint stays whole
            kept = f"step {self.saved_step}" if self.saved_step >= 0 else "nothing yet"
            self.console.note(f"checkpoint {path.name} at step {self.step} not written ({exc.strerror or exc}); "
                              f"the checkpoints hold {kept}; training goes on")
            return False


def time_budget(cfg: DictConfig):
    """trainer.max_time_s: a function that says whether the budget is spent, counted from this call (a
    resumed run gets the budget afresh); None without a budget."""
    if cfg.get("max_time_s") is None:
        return None
    clock = time.process_time if str(cfg.get("time_clock", "process")) == "process" else time.perf_counter
    deadline = clock() + float(cfg.max_time_s)
    return lambda: clock() >= deadline


def config_meta(cfg: DictConfig, overrides: list[str]) -> dict:
    return {"config": OmegaConf.to_container(cfg, resolve=True), "overrides": list(overrides)}
