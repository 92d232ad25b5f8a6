"""Entry logic per command. Hydra calls ``run_command`` with the composed config.

A single run ends on a user's mistake with one line and exit status 2, and on a stop (a signal, a
non-finite loss) with the stop's exit status. A job of a sweep (-m) ends otherwise: see sweep.py.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from omegaconf import DictConfig

from genexp.errors import Stopped, UserError, cause_of


def run_command(command: str, cfg: DictConfig):
    module = importlib.import_module(f"genexp.commands.{command}")
    if in_sweep():
        from genexp.commands.sweep import run_sweep_job

        return run_sweep_job(command, module, cfg)
    try:
        with owned_run_dir(command, cfg):
            return module.run(cfg)
    except Stopped as exc:
        if str(exc):  # a data-parallel rank other than 0 stops without a word: rank 0 says why
            print(f"genexp: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except Exception as exc:
        err = user_error_in(exc)
        if err is None:
            raise
        # SystemExit passes through Hydra's own error reporting untouched.
        print(f"genexp: error: {err}", file=sys.stderr)
        sys.exit(2)


def owned_run_dir(command: str, cfg: DictConfig):
    """The job's run dir, claimed (genexp/rundir.py) before anything is written there; its .hydra/ written
    at once, or by train once a resume has been checked. Data-parallel: rank 0 holds it."""
    import contextlib

    from hydra.core.hydra_config import HydraConfig

    from genexp import distributed
    from genexp.rundir import owned

    if not HydraConfig.initialized():
        return contextlib.nullcontext()
    out = Path(HydraConfig.get().runtime.output_dir)

    @contextlib.contextmanager
    def held():
        with owned(out, cfg, enabled=distributed.from_env().main) as claim:
            if claim is not None and command != "train":
                claim.write_hydra_files()
            yield claim

    return held()


def user_error_in(exc: BaseException | None) -> UserError | None:
    """The UserError behind ``exc``: Hydra's instantiate wraps what a constructor raises."""
    return cause_of(exc, UserError)


def in_sweep() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
