"""Entry logic per command. Hydra calls ``run_command`` with the composed config."""

from __future__ import annotations

import importlib
import sys

from omegaconf import DictConfig

from genexp.errors import UserError


def run_command(command: str, cfg: DictConfig):
    module = importlib.import_module(f"genexp.commands.{command}")
    try:
        return module.run(cfg)
    except UserError as err:
        # SystemExit passes through Hydra's own error reporting untouched.
        print(f"genexp: error: {err}", file=sys.stderr)
        sys.exit(2)
