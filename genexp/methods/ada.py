"""Adaptive discriminator augmentation (ADA; Karras et al. 2020, "Training Generative Adversarial
Networks with Limited Data").

Every image D sees, real or fake, in D's and G's steps, goes through the same random pipeline, each
transform applied with probability p. The pipeline is "bgc" from the paper (sec. 2.3, appendix B):
pixel blitting (x-flip, 90-degree rotations, integer translation), general geometric transforms
(isotropic and anisotropic scaling, rotation, fractional translation) and colour transforms
(brightness, contrast, luma flip, hue rotation, saturation), with the paper's strengths. Geometric
transforms are composed into one affine matrix per image and applied once with reflection padding;
the official code resamples with a 12-tap wavelet filter at 2x, here it is bilinear ``grid_sample``
(differentiable, no custom ops), which blurs high frequencies a little more.

p adapts so that the overfitting heuristic r_t = E[sign(D(real))] stays near ``target`` (0.6): every
``interval`` D steps p moves by sign(r_t - target) * (images seen since) / (kimg * 1000), so it can
go from 0 to 1 in ``kimg`` thousand images. p and the running sums are buffers: they are checkpointed
with the method and a resumed run continues from the same p.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genexp import distributed
from genexp.errors import UserError

# Luma axis of the colour transforms (the official code's choice: equal RGB weights).
LUMA = torch.tensor([1.0, 1.0, 1.0, 0.0]) / math.sqrt(3)

PIPELINES = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": ("brightness", "contrast", "lumaflip", "hue", "saturation"),
}
PIPELINES["bg"] = PIPELINES["blit"] + PIPELINES["geom"]
PIPELINES["bgc"] = PIPELINES["bg"] + PIPELINES["color"]


def check_settings(ada, data) -> None:
    """model.method.ada (enabled) against the composed data config: a known pipeline, on image data whose
    channel count its colour transforms take."""
    pipeline = ada.get("pipeline", "bgc")
    if data.kind != "image":
        raise UserError(f"model.method.ada.enabled=true: ADA augments images and data={data.name} is {data.kind}")
    if pipeline not in PIPELINES:
        raise UserError(f"model.method.ada.pipeline={pipeline}: use one of {', '.join(PIPELINES)}")
    if set(PIPELINES["color"]) & set(PIPELINES[pipeline]) and int(data.channels) not in (1, 3):
        raise UserError(f"model.method.ada.pipeline={pipeline} has colour transforms, which take 1 or 3 "
                        f"channels, and data.channels={data.channels}: use model.method.ada.pipeline=bg")


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=tx.device).repeat(len(tx), 1, 1)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=sx.device).repeat(len(sx), 1, 1)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2d(theta: torch.Tensor) -> torch.Tensor:
    m = torch.eye(3, device=theta.device).repeat(len(theta), 1, 1)
    m[:, 0, 0], m[:, 0, 1] = theta.cos(), -theta.sin()
    m[:, 1, 0], m[:, 1, 1] = theta.sin(), theta.cos()
    return m


def translate3d(t: torch.Tensor) -> torch.Tensor:
    m = torch.eye(4, device=t.device).repeat(len(t), 1, 1)
    m[:, :3, 3] = t.unsqueeze(1)
    return m


def scale3d(s: torch.Tensor) -> torch.Tensor:
    m = torch.eye(4, device=s.device).repeat(len(s), 1, 1)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def rotate3d(axis: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` about the unit ``axis`` (Rodrigues), homogeneous 4x4."""
    x, y, z = axis[0], axis[1], axis[2]
    c, s = theta.cos(), theta.sin()
    cc = 1 - c
    m = torch.eye(4, device=theta.device).repeat(len(theta), 1, 1)
    m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] = x * x * cc + c, x * y * cc - z * s, x * z * cc + y * s
    m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] = y * x * cc + z * s, y * y * cc + c, y * z * cc - x * s
    m[:, 2, 0], m[:, 2, 1], m[:, 2, 2] = z * x * cc - y * s, z * y * cc + x * s, z * z * cc + c
    return m


class AdaptiveAugment(nn.Module):
    def __init__(self, pipeline: str = "bgc", target: float | None = 0.6, interval: int = 4,
                 kimg: float = 500.0, p: float = 0.0, max_p: float = 1.0):
        super().__init__()
        if pipeline not in PIPELINES:
            raise ValueError(f"unknown ADA pipeline {pipeline!r}: use {', '.join(PIPELINES)}")
        self.transforms = PIPELINES[pipeline]
        self.target = None if target is None else float(target)  # None: p stays fixed (the paper's ablation)
        self.interval, self.kimg, self.max_p = int(interval), float(kimg), float(max_p)
        self.register_buffer("p", torch.tensor(float(p)))
        # sum of sign(D(real)) and the count since the last adjustment, and the D steps so far
        self.register_buffer("signs", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))

    def observe(self, real_logits: torch.Tensor, batch: int) -> None:
        """After a D step: accumulate sign(D(real)) and adjust p every ``interval`` steps."""
        if self.target is None:
            return
        logits = real_logits.detach().flatten()
        self.signs += torch.stack([logits.sign().sum().double(), torch.tensor(float(len(logits)),
                                                                              dtype=torch.float64,
                                                                              device=logits.device)])
        self.steps += 1
        if int(self.steps) % self.interval == 0:
            distributed.all_sum_(self.signs)  # data-parallel: every rank's reals, so p stays one value
            r_t = self.signs[0] / self.signs[1].clamp(min=1)
            step = (r_t - self.target).sign() * (batch * self.interval) / (self.kimg * 1000)
            self.p.copy_((self.p + step.to(self.p.dtype)).clamp(0.0, self.max_p))
            self.signs.zero_()

    def r_t(self) -> float:
        return float(self.signs[0] / self.signs[1]) if float(self.signs[1]) > 0 else float("nan")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = float(self.p)
        if p <= 0:
            return x
        n, c, h, w = x.shape
        dev = x.device

        def chosen(prob: float = p) -> torch.Tensor:
            return torch.rand(n, device=dev) < prob

        def where(mask: torch.Tensor, value: torch.Tensor, default: float) -> torch.Tensor:
            return torch.where(mask, value, torch.full_like(value, default))

        # Geometric transforms map output pixel coordinates (in [-1, 1]) to input ones: G_inv.
        g = torch.eye(3, device=dev).repeat(n, 1, 1)
        t = set(self.transforms)
        if "xflip" in t:
            flip = where(chosen(), torch.randint(2, (n,), device=dev).float(), 0.0)
            g = g @ scale2d(1 - 2 * flip, torch.ones(n, device=dev))
        if "rotate90" in t:
            quarter = where(chosen(), torch.randint(4, (n,), device=dev).float(), 0.0)
            g = g @ rotate2d(-math.pi / 2 * quarter)
        if "xint" in t:  # integer translation up to 1/8 of the size, in whole pixels
            shift = where(chosen()[:, None], (torch.rand(n, 2, device=dev) * 2 - 1) * 0.125, 0.0)
            tx = torch.round(shift[:, 0] * w) * 2 / w
            ty = torch.round(shift[:, 1] * h) * 2 / h
            g = g @ translate2d(tx, ty)
        if "scale" in t:  # isotropic, log2-normal with std 0.2
            s = where(chosen(), torch.exp2(torch.randn(n, device=dev) * 0.2), 1.0)
            g = g @ scale2d(s, s)
        p_rot = 1 - math.sqrt(max(0.0, 1 - p))  # rotation happens twice: before and after aniso
        if "rotate" in t:
            g = g @ rotate2d(-where(chosen(p_rot), (torch.rand(n, device=dev) * 2 - 1) * math.pi, 0.0))
        if "aniso" in t:
            s = where(chosen(), torch.exp2(torch.randn(n, device=dev) * 0.2), 1.0)
            g = g @ scale2d(s, 1 / s)
        if "rotate" in t:
            g = g @ rotate2d(-where(chosen(p_rot), (torch.rand(n, device=dev) * 2 - 1) * math.pi, 0.0))
        if "xfrac" in t:  # fractional translation, normal with std 1/8 of the size
            shift = where(chosen()[:, None], torch.randn(n, 2, device=dev) * 0.125, 0.0)
            g = g @ translate2d(shift[:, 0] * 2, shift[:, 1] * 2)
        if not torch.equal(g, torch.eye(3, device=dev).expand_as(g)):
            grid = F.affine_grid(g[:, :2, :].to(x.dtype), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)

        # Colour transforms: one 4x4 matrix per image on homogeneous RGB.
        m = torch.eye(4, device=dev).repeat(n, 1, 1)
        luma = LUMA.to(dev)
        if "brightness" in t:
            m = translate3d(where(chosen(), torch.randn(n, device=dev) * 0.2, 0.0)) @ m
        if "contrast" in t:
            m = scale3d(where(chosen(), torch.exp2(torch.randn(n, device=dev) * 0.5), 1.0)) @ m
        v = luma[:3]
        luma_proj = torch.zeros(4, 4, device=dev)
        luma_proj[:3, :3] = torch.outer(v, v)
        if "lumaflip" in t:  # Householder reflection about the luma axis
            flip = where(chosen(), torch.randint(2, (n,), device=dev).float(), 0.0)
            m = (torch.eye(4, device=dev) - 2 * luma_proj * flip[:, None, None]) @ m
        if "hue" in t and c > 1:
            m = rotate3d(v, where(chosen(), (torch.rand(n, device=dev) * 2 - 1) * math.pi, 0.0)) @ m
        if "saturation" in t and c > 1:
            s = where(chosen(), torch.exp2(torch.randn(n, device=dev) * 1.0), 1.0)
            m = (luma_proj + (torch.eye(4, device=dev) - luma_proj) * s[:, None, None]) @ m
        if not torch.equal(m, torch.eye(4, device=dev).expand_as(m)):
            m = m.to(x.dtype)
            if c == 3:
                x = (m[:, :3, :3] @ x.reshape(n, 3, -1) + m[:, :3, 3:]).reshape(n, c, h, w)
            elif c == 1:  # grey: the mean of the RGB result of a grey pixel (as the official code)
                gain = m[:, :3, :3].mean(dim=(1, 2), keepdim=True) * 3
                x = x * gain.unsqueeze(-1) + m[:, :3, 3].mean(1).view(n, 1, 1, 1)
            else:
                raise ValueError(f"ADA colour transforms take 1 or 3 channels, not {c}: "
                                 "use model.method.ada.pipeline=bg")
        return x
