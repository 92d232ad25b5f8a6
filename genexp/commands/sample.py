"""genexp sample: n samples from a checkpoint as a picture and a tensor file."""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from genexp.commands.common import restore_method, run_dir
from genexp.errors import UserError
from genexp.logger import Console
from genexp.training.runtime import resolve_device
from genexp.viz import picture, save_png


def run(cfg: DictConfig) -> None:
    console = Console(cfg.trainer.progress)
    if int(cfg.n) < 1:
        raise UserError(f"n={cfg.n}: ask for at least one sample")
    method, train_cfg, ckpt = restore_method(cfg.ckpt, resolve_device(cfg.trainer.device))
    labels = class_labels(cfg.get("class"), int(cfg.n), method.num_classes)
    g = torch.Generator().manual_seed(int(cfg.seed))
    samples = method.sample(int(cfg.n), generator=g, ema=bool(cfg.ema), labels=labels)
    out = run_dir()
    points = samples.dim() == 2
    reference = None
    if points:  # the real modes in grey behind the samples, when the data is at hand
        from genexp.data import build_dataset

        reference = build_dataset(train_cfg.data).x[:2500]
    save_png(picture(samples, reference, cfg.get("nrow")), out / "samples.png")
    tensor_path = out / ("points.pt" if points else "samples.pt")
    record = {"samples": samples, "seed": int(cfg.seed), "ckpt": str(cfg.ckpt), "step": int(ckpt["step"])}
    if labels is not None or method.num_classes:
        record["labels"] = labels if labels is not None else torch.arange(len(samples)) % method.num_classes
    torch.save(record, tensor_path)
    console.info(f"wrote {out / 'samples.png'} and {tensor_path} ({len(samples)} samples, step {ckpt['step']})")


def class_labels(wanted, n: int, num_classes: int) -> torch.Tensor | None:
    """``class=k``: every sample of class k. Only a conditional model can be asked for a class."""
    if wanted is None:
        return None
    if not num_classes:
        raise UserError(f"class={wanted}: this checkpoint's model is unconditional; train a conditional one with "
                        "model.num_classes=<classes> to sample by class")
    if not isinstance(wanted, int) or isinstance(wanted, bool) or not 0 <= wanted < num_classes:
        raise UserError(f"class={wanted}: the model knows classes 0..{num_classes - 1}")
    return torch.full((n,), wanted, dtype=torch.long)
