"""An optimizer from its config: a partial ``_target_`` given the parameters."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig


def build_optimizer(cfg: DictConfig, params):
    # YAML and the command line write betas as [0, 0.99]: torch wants floats, not an int and a float.
    overrides = {"betas": tuple(float(b) for b in cfg.betas)} if cfg.get("betas") is not None else {}
    return instantiate(cfg, **overrides)(params=params)
