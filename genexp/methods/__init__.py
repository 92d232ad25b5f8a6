"""Model families' training logic. A model config names its method in ``model.method``."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.methods.base import Method


def build_method(cfg: DictConfig, device: torch.device) -> Method:
    method = instantiate(cfg.model.method, model=cfg.model, loss=cfg.loss, optim=cfg.optim, _recursive_=False)
    return method.to(device)
