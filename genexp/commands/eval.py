"""genexp eval: a checkpoint's generator against its data; a table on the console, metrics.json on disk."""

from __future__ import annotations

import json
import time

from omegaconf import DictConfig, OmegaConf

from genexp.commands.common import metrics_chosen, restore_method, run_dir
from genexp.data import build_dataset
from genexp.errors import UserError
from genexp.logger import Console
from genexp.metrics.cache import cache_dir
from genexp.metrics.suite import MetricSuite
from genexp.training.runtime import resolve_device


def run(cfg: DictConfig) -> dict[str, float]:
    console = Console(cfg.trainer.progress)
    device = resolve_device(cfg.trainer.device)
    method, train_cfg, ckpt = restore_method(cfg.ckpt, device)
    data_cfg = cfg.data if cfg.get("data") is not None else train_cfg.data
    if not cfg.get("metrics"):
        raise UserError("no metrics chosen: pass e.g. metrics=[fid,kid]")
    if data_cfg.kind == "image" and int(data_cfg.resolution) != int(train_cfg.model.resolution):
        raise UserError(f"data.resolution={data_cfg.resolution} but the checkpoint's model makes "
                        f"{train_cfg.model.resolution}px images: add data.resolution={train_cfg.model.resolution}")
    dataset = build_dataset(data_cfg)
    suite = MetricSuite(cfg.metrics, dataset, data_cfg, device, console.note, num_samples=cfg.get("n"),
                        chosen=metrics_chosen(), cache_dir=cache_dir())
    if not suite:
        raise UserError(f"none of the chosen metrics can run here (see above): {', '.join(suite.skipped)}")
    start = time.perf_counter()
    results = suite.compute(lambda n, g: method.sample(n, generator=g, ema=bool(cfg.ema)), seed=int(cfg.seed))
    console.table(f"{cfg.ckpt} (step {ckpt['step']})", results)
    record = {
        "ckpt": str(cfg.ckpt), "step": int(ckpt["step"]), "metrics": results,
        "protocol": {"data": OmegaConf.to_container(data_cfg, resolve=True), "seed": int(cfg.seed),
                     "ema": bool(cfg.ema), "metrics": suite.protocol(), "skipped": suite.skipped},
        "seconds": round(time.perf_counter() - start, 2),
    }
    path = run_dir() / "metrics.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    console.info(f"wrote {path}")
    return results
