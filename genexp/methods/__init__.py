"""Model families' training logic. A model config names its method in ``model.method``."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.methods.base import Method
from genexp.optim.schedule import LrDecay


def build_method(cfg: DictConfig, device: torch.device) -> Method:
    method = instantiate(cfg.model.method, model=cfg.model, loss=cfg.loss, optim=cfg.optim, _recursive_=False)
    method.lr_decay = LrDecay(cfg.optim.get("decay", "constant"), cfg.optim.get("decay_start", 0.0),
                              cfg.trainer.max_steps)
    return method.to(device)
