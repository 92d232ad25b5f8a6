"""Entry logic per command. Hydra calls ``run_command`` with the composed config."""

from __future__ import annotations

import importlib
import sys

from omegaconf import DictConfig

from genexp.errors import Stopped, UserError


def run_command(command: str, cfg: DictConfig):
    module = importlib.import_module(f"genexp.commands.{command}")
    try:
        return module.run(cfg)
    except Stopped as exc:
        print(f"genexp: {exc}", file=sys.stderr)
        sys.exit(exc.code)
    except Exception as exc:
        err = user_error_in(exc)
        if err is None:
            raise
        # SystemExit passes through Hydra's own error reporting untouched.
        print(f"genexp: error: {err}", file=sys.stderr)
        sys.exit(2)


def user_error_in(exc: BaseException | None) -> UserError | None:
    """The UserError behind ``exc``: Hydra's instantiate wraps what a constructor raises."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, UserError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
