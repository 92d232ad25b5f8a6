"""genexp sample: n samples from a checkpoint as a picture and a tensor file, or as n image files (out=)."""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig

from genexp.commands.common import restore_method, run_dir
from genexp.commands.sample_files import Target, check_target, write_samples
from genexp.commands.sample_seeds import parse_seeds, seed_images, to_uint8
from genexp.commands.sample_styles import interpolation, mixing_grid, save_gif, strip, truncated
from genexp.errors import UserError
from genexp.files import save_torch
from genexp.logger import Console
from genexp.logger.console import Counter
from genexp.training.runtime import resolve_device
from genexp.viz import image_grid, picture, save_png


def run(cfg: DictConfig) -> None:
    console = Console(cfg.trainer.progress)
    if int(cfg.n) < 1:
        raise UserError(f"n={cfg.n}: ask for at least one sample")
    mode, psi, noise_mode = cfg.get("mode", "grid"), float(cfg.get("psi", 1.0)), cfg.get("noise_mode", "random")
    if mode not in ("grid", "mixing", "interpolate"):
        raise UserError(f"mode={mode}: use grid, mixing or interpolate")
    if noise_mode not in ("random", "const", "none"):
        raise UserError(f"noise_mode={noise_mode}: use random, const or none")
    seeds = parse_seeds(cfg.seeds) if cfg.get("seeds") is not None else None
    target = None
    if cfg.get("out") is not None:
        if seeds is not None or mode != "grid":
            raise UserError(f"out={cfg.out} writes n=... samples as image files; seeds= and mode={mode} write "
                            "their own files into the run folder: drop one of the two")
        if int(cfg.get("batch_size", 64)) < 1:
            raise UserError(f"batch_size={cfg.batch_size}: draw at least one sample at a time")
        target = check_target(cfg.out, cfg.get("format", "png"), cfg.get("overwrite", False))
    device = resolve_device(cfg.trainer.device)
    method, train_cfg, ckpt = restore_method(cfg.ckpt, device, cfg.get("trust_checkpoint"))
    if seeds is not None:
        G = getattr(method, "G_ema" if cfg.ema else "G", None)
        if G is None:
            raise UserError(f"seeds={cfg.seeds}: one image per seed needs a generator network (GANs); this "
                            f"checkpoint's {type(method).__name__} draws with n=... seed=...")
        label = class_labels(cfg.get("class"), 1, method.num_classes)
        out = run_dir()
        paths = seed_images(G, seeds, int(label[0]) if label is not None else None, psi, noise_mode, out,
                            console.info)
        console.info(f"wrote {len(paths)} images to {out} ({paths[0].name} .. {paths[-1].name})")
        return
    if target is None:
        check_memory(int(cfg.n), train_cfg)
    labels = class_labels(cfg.get("class"), int(cfg.n), method.num_classes)
    sample_options = {**temperature_option(cfg, method), **sampler_options(cfg, method)}
    G = getattr(method, "G_ema" if cfg.ema else "G", None)  # families without a generator net (flows) have none
    styled = hasattr(G, "styles")
    if not styled and (mode != "grid" or psi != 1.0 or noise_mode != "random"):
        raise UserError(f"mode={mode} psi={psi:g} noise_mode={noise_mode}: these need a style-based generator "
                        f"(model=stylegan2), and this checkpoint's is {type(G if G is not None else method).__name__}")
    g = torch.Generator().manual_seed(int(cfg.seed))
    if target is not None:
        return sample_files(cfg, target, method, train_cfg, G if styled else None, labels, sample_options, g,
                            console, ckpt)
    if mode != "grid":
        check_style_figure(cfg, G)
        return style_figure(cfg, G, method, labels, g, run_dir(), console, ckpt)
    out = run_dir()
    if styled and method.num_classes and labels is None:
        labels = torch.arange(int(cfg.n)) % method.num_classes
    samples = draw(method, G if styled else None, int(cfg.n), labels, g, cfg, sample_options)
    points = samples.dim() == 2
    reference = None
    if points:  # the real modes in grey behind the samples, when the data is at hand
        from genexp.data import build_dataset

        reference = build_dataset(train_cfg.data)  # its points in grey, its modes marked, its extent the frame
    save_png(picture(samples, reference, cfg.get("nrow"), int(ckpt["step"])), out / "samples.png")
    tensor_path = out / ("points.pt" if points else "samples.pt")
    record = {"samples": samples, "seed": int(cfg.seed), "ckpt": str(cfg.ckpt), "step": int(ckpt["step"])}
    if labels is not None or method.num_classes:
        record["labels"] = labels if labels is not None else torch.arange(len(samples)) % method.num_classes
    save_torch(record, tensor_path)
    console.info(f"wrote {out / 'samples.png'} and {tensor_path} ({len(samples)} samples, step {ckpt['step']})")


def draw(method, G, n: int, labels, g: torch.Generator, cfg: DictConfig, options: dict) -> torch.Tensor:
    """n samples: through a style-based G's truncation and noise options, or the method's own sample."""
    if G is not None:
        G.eval()
        z = method.latents(n, method.z_dim, g)
        return truncated(G, z, labels.to(z.device) if labels is not None else None, float(cfg.get("psi", 1.0)),
                         cfg.get("noise_mode", "random"))
    return method.sample(n, generator=g, ema=bool(cfg.ema), labels=labels, **options)


def sample_files(cfg: DictConfig, target: Target, method, train_cfg, G, labels, options: dict,
                 g: torch.Generator, console: Console, ckpt: dict) -> None:
    """n samples as image files in out= (sample_files.py), drawn batch_size at a time."""
    if train_cfg.data.get("kind") == "points":
        raise UserError(f"out={cfg.out} writes images, and this checkpoint's model draws 2-D points "
                        f"(data={train_cfg.data.name}): drop out= (samples.pt holds the points)")
    n, batch = int(cfg.n), int(cfg.batch_size)
    if method.num_classes and labels is None:  # the classes in turn, as the grid draws them
        labels = torch.arange(n) % method.num_classes

    def images():
        for start in range(0, n, batch):
            count = min(batch, n - start)
            samples = draw(method, G, count, labels[start:start + count] if labels is not None else None, g, cfg,
                           options)
            for sample in samples.float().cpu():
                yield to_uint8(sample[None])

    console.info(f"writing {n:,} samples to {target.path} ({target.fmt}, {batch} at a time, step {ckpt['step']})")
    try:
        write_samples(target, images(), n, labels.tolist() if labels is not None else None,
                      Counter(console.info, "sample: images", n))
    except OSError as exc:
        raise UserError(f"out={cfg.out}: cannot write there ({exc.strerror or exc}); pick a folder you can "
                        "write to with room for the images") from exc
    console.info(f"wrote {n:,} images to {target.path} ({target.name(0)} .. {target.name(n - 1)}"
                 f"{', dataset.json labels' if labels is not None else ''}); score them with genexp eval "
                 f"fake={target.path}")


def check_style_figure(cfg: DictConfig, G) -> None:
    """The figure's options, before anything is written."""
    if cfg.mode == "mixing":
        layers = [int(i) for i in cfg.mix_layers]
        if not layers or min(layers) < 0 or max(layers) >= G.num_ws:
            raise UserError(f"mix_layers={list(cfg.mix_layers)}: this generator has style layers 0..{G.num_ws - 1}")
        if int(cfg.mix_rows) < 1 or int(cfg.mix_cols) < 1:
            raise UserError(f"mix_rows={cfg.mix_rows} mix_cols={cfg.mix_cols}: ask for at least one of each")
    elif int(cfg.keyframes) < 2 or int(cfg.frames) < 1 or cfg.space not in ("w", "z"):
        raise UserError(f"keyframes={cfg.keyframes} frames={cfg.frames} space={cfg.space}: interpolation needs "
                        "keyframes >= 2, frames >= 1 and space=w or z")


def style_figure(cfg: DictConfig, G, method, labels, g: torch.Generator, out, console: Console, ckpt: dict) -> None:
    """The style-mixing grid or the interpolation strip and GIF, with the latents that made them."""
    G.eval()
    psi, noise_mode = float(cfg.psi), cfg.noise_mode
    if method.num_classes and labels is None:
        labels = torch.zeros(max(int(cfg.mix_rows), int(cfg.mix_cols), int(cfg.keyframes)), dtype=torch.long)
    device = next(G.parameters()).device
    labels = labels.to(device) if labels is not None else None
    if cfg.mode == "mixing":
        layers, rows, cols = [int(i) for i in cfg.mix_layers], int(cfg.mix_rows), int(cfg.mix_cols)
        row_z, col_z = method.latents(rows, method.z_dim, g), method.latents(cols, method.z_dim, g)
        images = mixing_grid(G, row_z, col_z, layers, labels, psi, noise_mode)
        save_png(image_grid(images, cols + 1), out / "mixing.png")
        save_torch({"row_z": row_z.cpu(), "col_z": col_z.cpu(), "layers": layers, "psi": psi, "seed": int(cfg.seed),
                    "ckpt": str(cfg.ckpt), "step": int(ckpt["step"])}, out / "mixing.pt")
        console.info(f"wrote {out / 'mixing.png'} ({rows} x {cols} sources, layers {layers})")
        return
    keys, frames = int(cfg.keyframes), int(cfg.frames)
    key_z = method.latents(keys, method.z_dim, g)
    images = interpolation(G, key_z, frames, cfg.space, labels, psi, noise_mode)
    save_png(strip(images, frames + 1 if keys == 2 else frames), out / "interpolation.png")
    save_gif(images, out / "interpolation.gif", int(cfg.fps))
    save_torch({"frames": images, "keys": key_z.cpu(), "space": cfg.space, "psi": psi, "seed": int(cfg.seed),
                "ckpt": str(cfg.ckpt), "step": int(ckpt["step"])}, out / "interpolation.pt")
    console.info(f"wrote {out / 'interpolation.png'}, interpolation.gif ({len(images)} frames in {cfg.space})")


def temperature_option(cfg: DictConfig, method) -> dict:
    """``temperature`` for a method whose sample takes one (flows); for any other, only the default 1."""
    import inspect

    t = float(cfg.get("temperature", 1.0))
    if t < 0:
        raise UserError(f"temperature={t:g}: must be at least 0 (1: the model's own distribution, "
                        "0: every prior's mean)")
    if "temperature" in inspect.signature(method.sample).parameters:
        return {"temperature": t}
    if t != 1.0:
        raise UserError(f"temperature={t:g}: this checkpoint's {type(method).__name__} has no sampling temperature "
                        "(flows have one); drop temperature= (a GAN's counterpart is psi)")
    return {}


def sampler_options(cfg: DictConfig, method) -> dict:
    """``sampler`` / ``steps`` for a method that integrates a sampler (diffusion), checked before anything
    is written; any other method refuses them."""
    options = {k: cfg.get(k) for k in ("sampler", "steps") if cfg.get(k) is not None}
    if not options:
        return {}
    if not hasattr(method, "sampler_settings"):
        given = " ".join(f"{k}={v}" for k, v in options.items())
        raise UserError(f"{given}: this checkpoint's {type(method).__name__} has no sampler steps (diffusion "
                        "models, model=edm, have them); drop them")
    method.sampler_settings(**options)
    return options


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


def check_memory(n: int, train_cfg) -> None:
    """n samples, their grid and the tensor file are held at once: refuse an n that cannot fit rather
    than allocate until the machine swaps (n=2e7 digits is ~30 GB)."""
    data = train_cfg.data
    per_sample = int(data.get("dim", 0) or 0) if data.get("kind") == "points" else \
        int(data.get("channels", 3)) * int(data.get("resolution", 64)) ** 2
    need = 3 * 4 * n * max(per_sample, 1)  # float32 samples, their grid, the PNG's bytes
    free = available_memory()
    if free is not None and need > free // 2:
        raise UserError(f"n={n}: {need / 2**30:.1f} GiB for the samples and their grid, more than half of this "
                        f"machine's free memory ({free / 2**30:.1f} GiB): ask for fewer (genexp eval n=... "
                        "scores many samples in batches)")


def available_memory() -> int | None:
    """MemAvailable (free plus reclaimable cache) where Linux says it, else the free pages."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None
