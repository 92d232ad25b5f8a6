"""Held-out scores of a model that encodes or has a likelihood: NLL (nats and bits/dim) and reconstruction.

They read a split of the data (``metrics.nll.split``, default test) through the method's ``nll`` and
``reconstruct`` (methods/base.py), not samples, so they need the model itself: a training run or a
checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from genexp.data.discrete import bits_per_dim


def held_out(data_cfg: DictConfig, split: str | None, train_set):
    """(dataset, split name): the configured data with ``split`` swapped in, where the data has splits;
    otherwise the training data, named as such."""
    have = data_cfg.get("split") if OmegaConf.is_config(data_cfg) else None
    if split is None or have is None:
        return train_set, str(have or "train")
    if split == have:
        return train_set, split
    cfg = OmegaConf.to_container(data_cfg.dataset, resolve=True)
    cfg["split"] = split
    return instantiate(cfg), split


def batches(dataset, n: int, batch_size: int, device: torch.device):
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        x = torch.stack([dataset[i][0] for i in idx]).to(device)
        y = torch.stack([torch.as_tensor(dataset[i][1]) for i in idx]).to(device)
        yield x, (y if bool((y >= 0).all()) else None)


@torch.no_grad()
def mean_nll(method, dataset, n: int, batch_size: int, device: torch.device, **options) -> dict[str, float]:
    """Mean of each of the method's per-example NLLs (nats) over the first n examples."""
    sums: dict[str, float] = {}
    for x, y in batches(dataset, n, batch_size, device):
        for name, values in method.nll(x, y, **options).items():
            sums[name] = sums.get(name, 0.0) + float(values.double().sum())
    return {name: total / n for name, total in sums.items()}


def nll_results(means: dict[str, float], split_label: str, dims: int) -> dict[str, float]:
    out = {}
    for name, nats in means.items():
        out[f"nll/{name}@{split_label}"] = nats
        out[f"bpd/{name}@{split_label}"] = float(bits_per_dim(nats, dims))
    return out


@torch.no_grad()
def reconstruction(method, dataset, n: int, batch_size: int, device: torch.device,
                   lpips: Callable | None = None) -> dict[str, float]:
    """Mean pixel MSE (images in [-1, 1]) and, with an LPIPS metric given, mean LPIPS of x vs reconstruct(x)."""
    total, count = 0.0, 0
    for x, y in batches(dataset, n, batch_size, device):
        x_hat = method.reconstruct(x, y).to(device).clamp(-1, 1)
        total += float(((x_hat - x) ** 2).flatten(1).mean(1).double().sum())
        count += len(x)
        if lpips is not None:
            from genexp.metrics.lpips_net import rgb

            lpips.update(rgb(x_hat), rgb(x.clamp(-1, 1)))
    out = {"mse": total / count}
    if lpips is not None:
        out["lpips"] = float(lpips.compute())
        lpips.reset()
    return out
