"""A job of a sweep (-m): one job's failure must not end the others.

The job records it (run.json in its dir, one line on stderr) and raises JobFailed, which every
Hydra launcher keeps as that job's result instead of ending the process. Then the basic sweeper
runs the rest of its jobs and reports the first failure at the end (exit status 1, two lines, no
traceback), and the Optuna sweeper tells the trial FAIL and goes on while failures stay within
hydra.sweeper.max_failure_rate (our hparams_search packs: 1.0, never stop), after which
SweepSummary prints "k of n jobs failed" and ends with exit status 1.
"""

from __future__ import annotations

import json
import math
import signal
import sys
import traceback
from pathlib import Path
from typing import Any

from hydra.errors import CompactHydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from genexp.commands import user_error_in
from genexp.errors import Stopped, first_line
from genexp.files import atomic_write_text

# run.json states that mean the job did not finish (genexp/training/status.py).
NOT_FINISHED = ("failed", "stopped")


class JobFailed(CompactHydraException):
    """A job of a sweep failed or stopped; its message is the one line to show. Hydra prints a
    CompactHydraException without a traceback; it pickles (submitit sends it back from the job)."""


def run_sweep_job(command: str, module, cfg: DictConfig):
    """One job of a sweep: its value, or its failure recorded and raised as JobFailed."""
    from genexp.commands import owned_run_dir
    from genexp.rundir import RunDirInUse

    try:
        with owned_run_dir(command, cfg):
            value = module.run(cfg)
    except RunDirInUse as exc:  # another process's job (a requeue race): its dir is not this job's to mark
        line = f"genexp: {job_name()} error: {exc}"
        print(line, file=sys.stderr)
        raise JobFailed(line) from None
    except Stopped as exc:
        if exc.code > 128 and launched_in_process():
            # A signal to the sweep's own process (Ctrl-C, a scheduler's TERM) stops the whole sweep,
            # as it stops a single run; the jobs not run yet are not started.
            print(f"genexp: {job_name()} {exc}", file=sys.stderr)
            sys.exit(exc.code)
        reason = f"stopped: {exc}{requeue(exc, cfg)}"
    except Exception as exc:
        err = user_error_in(exc)
        if err is None:  # a bug in genexp: its traceback, then the job's one line
            traceback.print_exc()
        reason = f"error: {err}" if err is not None else f"failed: {first_line(exc)}"
    else:
        reason = missing_objective(command, cfg, value)
        if reason is None:
            return value
    line = f"genexp: {job_name()} {reason}"
    print(line, file=sys.stderr)
    record_failure(cfg, reason)
    raise JobFailed(line)


def job_name() -> str:
    """'job #3 (outputs/train/<sweep>/3)': the number Hydra's log gave the job (with its overrides) and
    its run dir (run.json, `genexp report`); the overrides themselves would make a long line."""
    from hydra.core.hydra_config import HydraConfig

    return f"job #{HydraConfig.get().job.num} ({run_dir_of_job()})"


def launched_in_process() -> bool:
    """Does the job run inside the sweep's own process (Hydra's basic launcher), not in one of its own?"""
    from hydra.core.hydra_config import HydraConfig

    return "BasicLauncher" in str(HydraConfig.get().launcher.get("_target_", ""))


def requeue(exc: Stopped, cfg: DictConfig) -> str:
    """A submitit job (conf/hydra/launcher/slurm.yaml) that its time-limit signal USR1 stopped has saved a
    checkpoint: hand the signal on to submitit's own handler, which the training loop put back when
    it ended, so that submitit requeues the job and exits (with resume=auto the next attempt continues
    in the same run dir). Returns why it was not requeued, to add to the job's reason."""
    usr1 = getattr(signal, "SIGUSR1", None)
    from hydra.core.hydra_config import HydraConfig

    if usr1 is None or exc.code != 128 + usr1 or "submitit" not in str(HydraConfig.get().launcher.get("_target_")):
        return ""
    if cfg.get("resume") != "auto":
        return " (not requeued: a requeued job continues only with resume=auto and a fixed hydra.sweep.dir)"
    handler = signal.getsignal(usr1)
    if not callable(handler) or getattr(handler, "__module__", "").split(".")[0] == "genexp":
        return ""
    print(f"genexp: {job_name()} {exc}; submitit requeues it", file=sys.stderr)
    try:
        handler(usr1, None)  # submitit: requeue, then sys.exit; or raise: "Job not requeued because ..."
    except Exception as err:
        return f" ({first_line(err)})"
    return ""


def missing_objective(command: str, cfg: DictConfig, value: Any) -> str | None:
    """A sweeper that optimises (Optuna) needs a finite number from every training job; the basic sweeper
    needs none. Why this job's value will not do, or None."""
    from hydra.core.hydra_config import HydraConfig

    if command != "train" or "BasicSweeper" in str(HydraConfig.get().sweeper.get("_target_", "")):
        return None
    name = cfg.trainer.get("objective")
    if isinstance(value, (int, float)) and math.isfinite(value):
        return None
    if value is not None:
        return f"failed: trainer.objective={name} came out {value}: the sweeper needs a finite number"
    if not name:
        return "failed: trainer.objective is null: the sweeper has no value to optimise (set it, e.g. fid)"
    evaluated = sorted(read_status(run_dir_of_job()).get("best", {}))
    return (f"failed: trained to the end, but no evaluation gave trainer.objective={name} for the sweeper "
            f"(evaluated: {', '.join(evaluated) or 'nothing; is trainer.eval_every 0 or null?'})")


def run_dir_of_job() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "run.json").read_text())
    except (OSError, ValueError):
        return {}


def record_failure(cfg: DictConfig, reason: str) -> None:
    """Make the job's run.json say how it ended. `genexp train` writes it itself once training has
    started; a job that failed before (a bad path, a missing GPU) or after (no objective value)
    gets its status and the reason here, so the sweep's report shows every job."""
    from genexp.commands.common import task_overrides
    from genexp.training.status import RunStatus

    if not is_main_rank():
        return
    out = run_dir_of_job()
    record = read_status(out)
    if record.get("status") in NOT_FINISHED or record.get("status") == "done":
        # a finished run that a later attempt (a resume) failed to continue is still finished
        return
    state = "stopped" if reason.startswith("stopped") else "failed"
    message = reason.split(": ", 1)[1] if ": " in reason else reason
    if not record:
        trainer = cfg.get("trainer") or {}
        RunStatus(out, int(trainer.get("max_steps", 0) or 0), task_overrides()).write(state, None, message)
        return
    record.update(status=state, message=message)
    try:
        atomic_write_text(out / "run.json", json.dumps(record, indent=2) + "\n")
    except OSError as exc:
        print(f"genexp: {job_name()}: run.json not updated ({exc.strerror or exc})", file=sys.stderr)


def is_main_rank() -> bool:
    """Data-parallel jobs (several tasks per submitit job) record from rank 0 alone."""
    from genexp import distributed

    return distributed.from_env().main


class SweepSummary(Callback):
    """A Hydra callback (hydra.callbacks in the hparams_search packs): once every job of a sweep has
    ended, one line naming the jobs that failed or stopped (read from their run.json, so that it
    works for every launcher), and exit status 1 if there were any."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        root = Path(str(config.hydra.sweep.dir))
        jobs = [p for p in (root.iterdir() if root.is_dir() else ())
                if p.is_dir() and ((p / ".hydra").is_dir() or (p / "run.json").is_file())]
        jobs.sort(key=lambda p: (len(p.name), p.name))  # 2 before 10
        failed = [(p.name, read_status(p)) for p in jobs]
        failed = [(name, s) for name, s in failed if s.get("status") in NOT_FINISHED]
        if not failed:
            return
        first, status = failed[0]
        print(f"genexp: {len(failed)} of {len(jobs)} jobs failed ({', '.join('#' + n for n, _ in failed)}): "
              f"#{first} {status['status']}: {status.get('message', '')}; every job: genexp report {root}",
              file=sys.stderr)
        sys.exit(1)
