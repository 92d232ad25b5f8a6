"""genexp project: Image2StyleGAN inversion of a style-based generator (w or w+, and the noise maps).

The schedule follows the StyleGAN2 projector: start from w_avg, Adam with a cosine lr ramp-down and
linear ramp-up, Gaussian noise on w that fades out, noise maps optimised under a multi-scale
autocorrelation penalty and renormalised after each step.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from PIL import Image

from genexp.commands.common import restore_method, run_dir
from genexp.data.base import resize
from genexp.errors import UserError
from genexp.files import atomic_write_text, save_npz, save_torch
from genexp.logger import Console
from genexp.metrics.extractors import MetricUnavailable, WeightsError
from genexp.metrics.lpips_net import build_lpips
from genexp.training.runtime import resolve_device
from genexp.training.throughput import duration, rate_text
from genexp.viz import progress_figure, projection_figure, save_png


def run(cfg: DictConfig) -> dict[str, float]:
    console = Console(cfg.trainer.progress)
    if cfg.space not in ("w", "w_plus"):
        raise UserError(f"space={cfg.space}: use w (one style for every layer) or w_plus (one per layer)")
    if int(cfg.steps) < 1:
        raise UserError(f"steps={cfg.steps}: project for at least one step")
    device = resolve_device(cfg.trainer.device)
    method, train_cfg, ckpt = restore_method(cfg.ckpt, device, cfg.get("trust_checkpoint"))
    G = method.G_ema
    if not hasattr(G, "styles"):
        raise UserError(f"genexp project inverts a style-based generator (model=stylegan2); this checkpoint's is "
                        f"{type(G).__name__}")
    if method.num_classes:
        raise UserError("genexp project inverts unconditional generators; this checkpoint's is class-conditional")
    target = load_target(cfg.target, G.resolution, G.channels).to(device)
    distance, loss_name = build_distance(cfg, train_cfg, device, console.note)
    console.info(f"projecting {cfg.target} into {cfg.space} of {cfg.ckpt} for {cfg.steps} steps; loss: {loss_name}")
    torch.manual_seed(int(cfg.seed))
    ws, noise, frames = project(G, target, distance, cfg, console)
    with torch.no_grad():
        image = G.synthesis(ws, noise_mode="const").clamp(-1, 1)
    out = run_dir()
    report = quality(image, target)
    report.update(distance_report(image, target, cfg))
    save_png(projection_figure(target, image), out / "projected.png")
    save_png(progress_figure(frames, target), out / "progress.png")
    latent = {"ws": ws.detach().cpu(), "space": cfg.space,
              "noise": {k: v.detach().cpu() for k, v in noise.items()}, "ckpt": str(cfg.ckpt),
              "step": int(ckpt["step"]), "target": str(cfg.target)}
    save_torch(latent, out / "latent.pt")
    save_npz(out / "latent.npz", w=latent["ws"].numpy(),
             **{f"noise_{k}": v.numpy() for k, v in latent["noise"].items()})
    record = {"target": str(cfg.target), "ckpt": str(cfg.ckpt), "space": cfg.space, "steps": int(cfg.steps),
              "loss": loss_name, **report}
    atomic_write_text(out / "project.json", json.dumps(record, indent=2) + "\n")
    console.table("projection", report)
    console.info(f"wrote {out / 'projected.png'}, latent.pt, latent.npz, progress.png, project.json")
    return report


def load_target(path: str, resolution: int, channels: int) -> torch.Tensor:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise UserError(f"target={path}: no such file") from None
    except Exception as exc:
        raise UserError(f"target={path}: not an image PIL can read ({type(exc).__name__})") from None
    img = img.convert("L" if channels == 1 else "RGB")
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())
    x = x.unsqueeze(0) if x.dim() == 2 else x.permute(2, 0, 1)
    side = min(x.shape[1:])  # centre crop to a square, as the official projector
    top, left = (x.shape[1] - side) // 2, (x.shape[2] - side) // 2
    x = x[:, top:top + side, left:left + side] / 127.5 - 1
    return resize(x.unsqueeze(0), resolution)


def build_distance(cfg: DictConfig, train_cfg: DictConfig, device, note=print):
    """(callable(image, target) -> loss, name), the name saying exactly what is minimised.

    distance=auto takes the first that can run here: LPIPS, pixel MSE + the feature distance of
    ``features``, pixel MSE alone; ``note`` gets one line saying which and why, when it is not LPIPS."""
    kind, mse_weight = cfg.distance, float(cfg.mse_weight)
    if kind not in ("auto", "lpips", "mse", "mse+features"):
        raise UserError(f"distance={kind}: use auto, lpips, mse or mse+features")
    why_not = []
    if kind in ("auto", "lpips"):
        try:
            return lpips_distance(cfg, mse_weight, device)
        except WeightsError:
            raise  # a file the user named is not the backbone's: theirs to fix, not to fall back from
        except MetricUnavailable as exc:
            if kind == "lpips":
                raise UserError(f"distance=lpips: {exc}; or distance=mse+features / distance=mse") from None
            why_not.append(f"LPIPS-{cfg.lpips_net} cannot run here ({exc})")
    if kind in ("auto", "mse+features"):
        try:
            distance, name = feature_distance(cfg, train_cfg, mse_weight, device)
        except WeightsError:
            raise
        except MetricUnavailable as exc:
            if kind == "mse+features":
                raise UserError(f"distance=mse+features with features={cfg.features}: {exc}") from None
            why_not.append(f"features={cfg.features} cannot run here ({exc})")
        else:
            if why_not:
                note(f"distance=auto minimises {name}: {'; '.join(why_not)}")
            return distance, name
    if why_not:
        note(f"distance=auto minimises pixel MSE alone: {'; '.join(why_not)}")
    return (lambda image, target: F.mse_loss(image, target)), "mse"


def lpips_distance(cfg: DictConfig, mse_weight: float, device):
    lpips = build_lpips(cfg.lpips_net, cfg.lpips_weights, bool(cfg.download), "lpips_weights").to(device)

    def lpips_loss(image, target):
        # LPIPS sees at most 256 px, as the projector downsamples
        if image.shape[-1] > 256:
            image, target = F.interpolate(image, 256, mode="area"), F.interpolate(target, 256, mode="area")
        return lpips(image, target).mean() + mse_weight * F.mse_loss(image, target)
    return lpips_loss, f"lpips_{cfg.lpips_net} + {mse_weight:g} * mse"


def feature_distance(cfg: DictConfig, train_cfg: DictConfig, mse_weight: float, device):
    from genexp.metrics.extractors import build_extractor, resolve_name
    from genexp.metrics.ppl import FeatureDistance

    name = resolve_name(cfg.features, train_cfg.data.get("name"))
    try:
        extractor, ident = build_extractor(name, "features", cfg.features_weights, download=bool(cfg.download))
    except MetricUnavailable as exc:
        # the extractors speak of the metrics' option; here the file is project's own features_weights
        raise type(exc)(str(exc).replace("metrics.<name>.weights", "features_weights")) from None
    features = FeatureDistance(extractor.to(device))
    return ((lambda image, target: mse_weight * F.mse_loss(image, target) + features(image, target).mean()),
            f"{mse_weight:g} * mse + feature distance ({ident['name']})")


def w_statistics(G, samples: int = 10000) -> tuple[torch.Tensor, float]:
    with torch.no_grad():
        z = torch.randn(samples, G.z_dim, device=next(G.parameters()).device)
        w = G.mapping(z, None)[:, :1]
    mean = w.mean(0, keepdim=True)
    return mean, float(((w - mean).square().sum() / samples).sqrt())


def noise_penalty(noise: dict[str, torch.Tensor]) -> torch.Tensor:
    """Autocorrelation of each noise map at shifts of one pixel, over a pyramid down to 8x8."""
    total = 0.0
    for buf in noise.values():
        x = buf[None, None]
        while True:
            total = total + (x * torch.roll(x, 1, dims=3)).mean() ** 2 + (x * torch.roll(x, 1, dims=2)).mean() ** 2
            if x.shape[2] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return total


def project(G, target: torch.Tensor, distance, cfg: DictConfig, console: Console):
    G.eval().requires_grad_(False)
    w_avg, w_std = w_statistics(G)
    ws_init = w_avg.repeat(1, G.num_ws if cfg.space == "w_plus" else 1, 1)
    w_opt = ws_init.clone().requires_grad_(True)
    layers = {name: m for name, m in G.synthesis.named_modules() if hasattr(m, "noise_const")}
    noise = {}
    for name, layer in layers.items():
        buf = torch.randn_like(layer.noise_const)
        buf.requires_grad_(bool(cfg.optimize_noise))
        layer.noise_const = buf  # the layer reads it in noise_mode="const"
        noise[name] = buf
    params = [w_opt] + (list(noise.values()) if cfg.optimize_noise else [])
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=float(cfg.lr))
    steps, every = int(cfg.steps), max(1, int(cfg.steps) // max(1, int(cfg.snapshots)))
    frames = []
    started = time.perf_counter()
    for step in range(steps):
        t = step / steps
        noise_scale = w_std * float(cfg.initial_noise) * max(0.0, 1.0 - t / float(cfg.noise_ramp)) ** 2
        ramp = min(1.0, (1.0 - t) / float(cfg.lr_rampdown))
        ramp = (0.5 - 0.5 * math.cos(ramp * math.pi)) * min(1.0, t / float(cfg.lr_rampup))
        for group in opt.param_groups:
            group["lr"] = float(cfg.lr) * ramp
        w = w_opt + torch.randn_like(w_opt) * noise_scale
        ws = w.expand(-1, G.num_ws, -1) if cfg.space == "w" else w
        image = G.synthesis(ws, noise_mode="const")
        loss = distance(image, target)
        if cfg.optimize_noise:
            loss = loss + float(cfg.noise_regularize) * noise_penalty(noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():  # keep the noise maps zero-mean, unit-variance
            for buf in noise.values():
                buf.sub_(buf.mean()).div_(buf.square().mean().sqrt() + 1e-8)
        if step % every == 0 or step == steps - 1:
            frames.append(image.detach().clamp(-1, 1).cpu())
            rate = (step + 1) / max(time.perf_counter() - started, 1e-9)
            eta = f"  ETA {duration((steps - step - 1) / rate)}" if step < steps - 1 else ""
            console.info(f"step {step + 1}/{steps}  loss {float(loss):.5f}  {rate_text(rate)}{eta}")
    ws_final = w_opt.detach().expand(-1, G.num_ws, -1) if cfg.space == "w" else w_opt.detach()
    return ws_final, noise, frames


def quality(image: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """MSE and PSNR on [0, 1] pixels, as image-restoration papers report them."""
    a, b = (image.clamp(-1, 1) + 1) / 2, (target.clamp(-1, 1) + 1) / 2
    mse = float(F.mse_loss(a, b))
    return {"mse": mse, "psnr_db": 10 * math.log10(1.0 / max(mse, 1e-12))}


def distance_report(image: torch.Tensor, target: torch.Tensor, cfg: DictConfig) -> dict[str, float]:
    """LPIPS (lpips_net) of the result where its weights are here; otherwise nothing (the loss line says
    what was minimised)."""
    try:
        lpips = build_lpips(cfg.lpips_net, cfg.lpips_weights, bool(cfg.download), "lpips_weights").to(image.device)
    except WeightsError:
        raise
    except MetricUnavailable:
        return {}
    with torch.no_grad():
        return {f"lpips_{cfg.lpips_net}": float(lpips(image.clamp(-1, 1), target.clamp(-1, 1)).mean())}
