"""Datasets as (x, y) samples in [-1, 1]; built from a `data` config with Hydra instantiate."""

from __future__ import annotations

from hydra.utils import instantiate
from omegaconf import DictConfig

from genexp.errors import UserError


def build_dataset(data_cfg: DictConfig):
    dataset = instantiate(data_cfg.dataset)
    if len(dataset) == 0:
        raise UserError(f"data={data_cfg.name} holds no samples: check its path")
    if data_cfg.kind == "image":
        x, _ = dataset[0]
        want = (int(data_cfg.channels), int(data_cfg.resolution), int(data_cfg.resolution))
        if tuple(x.shape) != want:
            raise UserError(f"data={data_cfg.name} yields images of shape {tuple(x.shape)}, config says {want}")
    return dataset
