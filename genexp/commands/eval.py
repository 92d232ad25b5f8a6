"""genexp eval: metrics of a checkpoint's generator, or of a folder / zip of generated images, against
a dataset; a table on the console, metrics.json on disk."""

from __future__ import annotations

import json
import time
from pathlib import PurePosixPath

import torch
from omegaconf import DictConfig, OmegaConf

from genexp.commands.common import metrics_chosen, restore_method, run_dir
from genexp.data import build_dataset
from genexp.errors import UserError
from genexp.files import atomic_write_text
from genexp.logger import Console
from genexp.logger.console import Counter
from genexp.metrics.cache import cache_dir
from genexp.metrics.heap import fix_mmap_threshold
from genexp.metrics.registry import registered
from genexp.metrics.suite import SUITE_SETTINGS, MetricSuite, SampleFn, over_seeds
from genexp.training.runtime import resolve_device


def run(cfg: DictConfig) -> dict[str, float]:
    fix_mmap_threshold()  # flat memory as the sample count grows (metrics/heap.py)
    console = Console(cfg.trainer.progress)
    device = resolve_device(cfg.trainer.device)
    if not [name for name in cfg.get("metrics") or {} if name not in SUITE_SETTINGS]:
        raise UserError("no metrics chosen: pass e.g. metrics=[fid,kid]")
    repeats = int(cfg.metrics.get("repeats") or 1)
    if repeats < 1 or (repeats > 1 and cfg.get("fake")):
        raise UserError(f"metrics.repeats={repeats}: repeats draw new fake samples from a checkpoint's generator "
                        "(ckpt=...); generated images on disk are one draw: use metrics.repeats=1")
    if cfg.get("stats_only"):
        return reference_only(cfg, console, device)
    if cfg.get("fake"):
        sample, data_cfg, n, source = from_images(cfg)
    else:
        sample, data_cfg, n, source = from_checkpoint(cfg, device)
    dataset = build_dataset(data_cfg)
    if cfg.get("fake"):
        check_pairs(cfg, dataset, source.pop("files"), n)
    # Numbers from genexp eval get quoted: under a metric's sample minimum they are refused, not noted.
    suite = MetricSuite(cfg.metrics, dataset, data_cfg, device, console.note, num_samples=n,
                        chosen=metrics_chosen(), cache_dir=cache_dir(), small="refuse")
    suite.progress = lambda what, total: Counter(console.info, f"eval: {what}", total)
    if not suite:
        raise UserError(f"none of the chosen metrics can run here (see above): {', '.join(suite.skipped)}")
    start = time.perf_counter()
    model = source.pop("model", None)
    seeds = [int(cfg.seed) + i for i in range(repeats)]
    per_seed = [suite.compute(sample, seed=seed, model=model) for seed in seeds]
    results = per_seed[0] if repeats == 1 else over_seeds(per_seed)
    console.table(source.pop("title"), results)
    protocol = {"data": OmegaConf.to_container(data_cfg, resolve=True), "seed": int(cfg.seed),
                "metrics": suite.protocol(), "skipped": suite.skipped, **source.pop("protocol")}
    record = {**source, "metrics": results, "protocol": protocol}
    if repeats > 1:
        protocol["repeats"] = {"seeds": seeds, "value": "mean over the seeds",
                               "std": "<kind>_std/...: sample standard deviation over the seeds (ddof 1)"}
        record["per_seed"] = [{"seed": seed, "metrics": r} for seed, r in zip(seeds, per_seed)]
    record["seconds"] = round(time.perf_counter() - start, 2)
    path = run_dir() / "metrics.json"
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")
    console.info(f"wrote {path}")
    return results


def reference_only(cfg: DictConfig, console: Console, device: torch.device) -> dict[str, float]:
    """Precompute the real-data statistics into the cache, so that later evaluations only generate."""
    where = cache_dir()
    if where is None:
        raise UserError("stats_only=true fills the reference-statistics cache, and GENEXP_CACHE=off turns it off")
    dataset = build_dataset(cfg.data)
    suite = MetricSuite(cfg.metrics, dataset, cfg.data, device, console.note, num_samples=cfg.get("n"),
                        chosen=metrics_chosen(), cache_dir=where, small="refuse")
    suite.progress = lambda what, total: Counter(console.info, f"eval: {what}", total)
    suite.prepare_reference()
    cached = {key: p["reference_cache"] for key, p in suite.protocol().items() if "reference_cache" in p}
    if not cached:
        keeping = ", ".join(sorted(k for k, cls in registered().items() if cls.keeps_reference))
        chosen = [name for name in cfg.metrics if name not in SUITE_SETTINGS]
        raise UserError(f"none of the chosen metrics keeps reference statistics (those that do: {keeping}): "
                        f"{', '.join(suite.skipped) or 'metrics=' + ','.join(chosen)}")
    for key, path in cached.items():
        console.info(f"{key}: {path}")
    return {}


def from_checkpoint(cfg: DictConfig, device: torch.device) -> tuple[SampleFn, DictConfig, int | None, dict]:
    method, train_cfg, ckpt = restore_method(cfg.ckpt, device)
    data_cfg = cfg.data if cfg.get("data") is not None else train_cfg.data
    if data_cfg.kind == "image" and int(data_cfg.resolution) != int(train_cfg.model.resolution):
        raise UserError(f"data.resolution={data_cfg.resolution} but the checkpoint's model makes "
                        f"{train_cfg.model.resolution}px images: add data.resolution={train_cfg.model.resolution}")
    ema = bool(cfg.ema)
    from genexp.commands.sample import sampler_options

    options = sampler_options(cfg, method)
    if options:  # the samples and the metric keys' sampler tag both follow sampler= / steps=
        method.sampler = method.sampler_settings(**options)
    source = {"title": f"{cfg.ckpt} (step {ckpt['step']})", "ckpt": str(cfg.ckpt), "step": int(ckpt["step"]),
              "protocol": {"ema": ema, **options}, "model": (method, ema)}
    return (lambda n, g: method.sample(n, generator=g, ema=ema)), data_cfg, cfg.get("n"), source


def from_images(cfg: DictConfig) -> tuple[SampleFn, DictConfig, int, dict]:
    """Generated images on disk, read in file-name order at the data's resolution and channels.
    Two folders: data=images data.path=<real> fake=<generated>."""
    from genexp.data.images import ImageFolderDataset

    data_cfg = cfg.get("data")
    if data_cfg is None:
        raise UserError(f"fake={cfg.fake}: name the real data to compare with, e.g. data=digits, or "
                        "data=images data.path=<folder or zip of real images>")
    if data_cfg.kind != "image":
        raise UserError(f"fake={cfg.fake}: generated images need image data; data={data_cfg.name} is {data_cfg.kind}")
    fakes = ImageFolderDataset(cfg.fake, int(data_cfg.resolution), int(data_cfg.channels), use_labels=False,
                               key="fake", scan=True, mixed=str(data_cfg.get("mixed", "refuse")))
    n = int(cfg.n) if cfg.get("n") else len(fakes)
    if n > len(fakes):
        raise UserError(f"n={n} but fake={cfg.fake} holds {len(fakes)} images: lower n or add images")
    position = 0

    def sample(count: int, _generator: torch.Generator) -> torch.Tensor:
        nonlocal position
        batch = torch.stack([fakes[i][0] for i in range(position, position + count)])
        position += count
        return batch

    source = {"title": f"{cfg.fake} ({n} images)", "fake": str(cfg.fake), "count": n,
              "protocol": {"fake_order": "file names, sorted"}, "files": fakes.files[:n]}
    return sample, data_cfg, n, source


def check_pairs(cfg: DictConfig, dataset, fake_files: list[str], n: int) -> None:
    """Paired LPIPS compares each generated image with the real one of the same name (any extension)."""
    if not any(c.get("kind", k) == "lpips" and c.get("mode") == "paired" for k, c in cfg.metrics.items()
               if k not in SUITE_SETTINGS):
        return
    real_files = getattr(dataset, "files", None)
    if real_files is None:
        raise UserError("metrics.lpips.mode=paired compares reconstructions with their originals: "
                        "pass the originals as data=images data.path=<folder or zip>")
    if len(real_files) < n:
        raise UserError(f"metrics.lpips.mode=paired: {n} generated images but {len(real_files)} originals")
    for fake, real in zip(fake_files, real_files):
        if PurePosixPath(fake).stem != PurePosixPath(real).stem:
            raise UserError(f"metrics.lpips.mode=paired pairs images by name, and {fake} meets {real}: "
                            "name each reconstruction after its original")
