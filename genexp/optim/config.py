"""The optimizer options' shared settings (conf/optim) as schemas Hydra checks types against, and the
rules a type cannot say.

Each schema holds exactly the keys of the options that name it (what it added would land in every
composed config and checkpoint). The per-net entries (generator, discriminator, model) stay open
mappings: Hydra builds them from their ``_target_`` / ``_partial_``, with any keyword the class takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING, OmegaConf

from genexp.errors import UserError


@dataclass
class OptimConfig:
    """What every option has: the lr each net follows unless it sets its own, and its decay."""
    name: str = MISSING
    lr: float = MISSING
    decay: str = MISSING
    decay_start: float = MISSING


@dataclass
class AdamConfig(OptimConfig):
    betas: list[float] = MISSING


@dataclass
class GanAdamConfig(AdamConfig):
    generator: dict[str, Any] = MISSING
    discriminator: dict[str, Any] = MISSING


@dataclass
class GanRmspropConfig(OptimConfig):
    generator: dict[str, Any] = MISSING
    discriminator: dict[str, Any] = MISSING


@dataclass
class AdamMlConfig(AdamConfig):
    """One optimizer, ``model``, for the likelihood families."""
    weight_decay: float = MISSING
    model: dict[str, Any] = MISSING


@dataclass
class AdamEdmConfig(AdamConfig):
    """EDM's: eps and a linear lr ramp-up over the first lr_rampup_kimg thousand images."""
    eps: float = MISSING
    lr_rampup_kimg: float = MISSING
    model: dict[str, Any] = MISSING


# The names the options' defaults lists use: /schema/optim/<name>@_here_.
SCHEMAS = {"gan_adam": GanAdamConfig, "gan_rmsprop": GanRmspropConfig, "adam_ml": AdamMlConfig,
           "adam_edm": AdamEdmConfig}


def check(optim, max_steps: int) -> None:
    """The optimizer rules of one composed ``optim`` node; ``max_steps`` is the run the decay spans."""
    from genexp.optim.schedule import LrDecay  # torch: imported only when a config is checked

    try:
        LrDecay(optim.get("decay", "constant"), optim.get("decay_start", 0.0), max_steps)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    check_learning_rates(optim)


def check_learning_rates(optim) -> None:
    """Every lr under optim (its shared one and each net's) a finite number >= 0: a negative lr climbs
    the loss, a NaN one turns every weight into NaN at the first step. (The schema types optim.lr; a
    net's own lr sits in an open mapping, so its type is checked here too.)"""
    def walk(node, prefix):
        for key, value in node.items():
            if OmegaConf.is_dict(value):
                walk(value, f"{prefix}{key}.")
            elif key == "lr" and value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value < 0:
                    raise UserError(f"optim.{prefix}lr={value}: a learning rate is a finite number >= 0 "
                                    "(e.g. optim.lr=2e-4)")
    walk(optim, "")
