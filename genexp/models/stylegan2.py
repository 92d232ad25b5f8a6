"""StyleGAN2 (Karras et al. 2020, config F) in plain PyTorch: no custom CUDA ops, nothing compiled.

The layer structure, parameter shapes and initialisation follow the official
stylegan2-ada-pytorch networks, so parameter counts match theirs for the same configuration
(tests/test_stylegan2.py checks the published totals):

- mapping: z normalised to unit second moment, ``mapping_layers`` fully connected layers with
  lr multiplier 0.01, an embedding of the class joined to z for conditional models, w_avg tracked
  for the truncation trick;
- synthesis: a learned 4x4 constant, per resolution two modulated 3x3 convolutions (weight
  demodulation, per-pixel noise with learned strength, the first one upsampling with the
  [1, 3, 3, 1] filter) and a toRGB whose outputs are summed over resolutions (skip generator);
- discriminator: per resolution two 3x3 convolutions, the second downsampling, with a
  1x1 residual path scaled by sqrt(1/2) (resnet; ``orig`` drops it), minibatch standard
  deviation and a projection of the class embedding at the end;
- equalised learning rate everywhere: weights stored N(0, 1), scaled by 1/sqrt(fan_in) at use;
- channels = min(channel_base / resolution, channel_max), so every power of two works.

Resampling is the FIR filter applied as a depthwise convolution (upfirdn2d written out in torch).

Mixed precision as the official ``num_fp16_res``, in bfloat16: ``bf16_res`` highest-resolution blocks of
G and of D run under bf16 autocast (the costliest layers, where the memory goes); the toRGB sum, the
mapping network and D's epilogue stay in float32. bf16 keeps float32's exponent range, so the official
fp16 activation clamp (conv_clamp=256) and loss scaling are not needed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genexp.errors import UserError
from genexp.models.layers import MinibatchStd

SQRT2 = math.sqrt(2.0)


def block_resolutions(resolution: int) -> list[int]:
    n = math.log2(resolution) if resolution > 0 else 0.5
    if not float(n).is_integer() or resolution < 8:
        raise UserError(f"resolution {resolution}: StyleGAN2 needs a power of two >= 8 (e.g. 32, 256, 1024)")
    return [2 ** i for i in range(2, int(n) + 1)]


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // resolution, channel_max)


# ---------------------------------------------------------------------------------------------
# Resampling: upsample by zero insertion, pad, FIR filter, downsample (upfirdn2d).

def make_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0, 0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """``pad`` = (left, right, top, bottom), applied after upsampling; negative pads crop."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = F.pad(x, [max(p, 0) for p in pad])
    left, right, top, bottom = (max(-p, 0) for p in pad)
    x = x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]
    kernel = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    x = F.conv2d(x, kernel, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zeros inserted, the filter at gain 4 fills them in (keeps the mean)."""
    taps = f.shape[0]
    return upfirdn2d(x, f, up=2, pad=((taps + 1) // 2, (taps - 2) // 2) * 2, gain=4)


# ---------------------------------------------------------------------------------------------
# Equalised-learning-rate layers.

class FullyConnected(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        # Stored divided by the lr multiplier and scaled back at use: Adam then moves the
        # effective weight lr_multiplier times slower (the mapping network's 0.01).
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias.to(x.dtype) * self.bias_gain if self.bias is not None else None
        x = F.linear(x, w, b)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activation == "lrelu" else x


class Conv2dLayer(nn.Module):
    """Conv with equalised lr, optional 2x FIR downsampling, bias and lrelu * sqrt(2)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", make_filter(), persistent=False)
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.activation, self.down, self.padding = activation, down, kernel_size // 2

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        if self.down == 1:
            x = F.conv2d(x, w, padding=self.padding)
        elif w.shape[-1] == 1:  # 1x1: filter and subsample first, then the cheap conv
            x = F.conv2d(upfirdn2d(x, self.resample_filter, down=2, pad=(1, 1, 1, 1)), w)
        else:  # blur, then a strided conv
            p = self.padding + 1
            x = F.conv2d(upfirdn2d(x, self.resample_filter, pad=(p, p, p, p)), w, stride=2)
        if self.bias is not None:
            x = x + self.bias.to(x.dtype).view(1, -1, 1, 1)
        if self.activation == "lrelu":
            return F.leaky_relu(x, 0.2) * (SQRT2 * gain)
        return x * gain if gain != 1 else x


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: bool = False, resample_filter: torch.Tensor | None = None) -> torch.Tensor:
    """Scale the weight's input channels by each sample's style; demodulate so that each output
    channel has unit expected variance (StyleGAN2 eq. 1-3); one grouped conv for the batch."""
    n, (out_ch, in_ch, k, _) = len(x), weight.shape
    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)
    if demodulate:
        w = w * (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt().reshape(n, out_ch, 1, 1, 1)
    if up:
        x = upsample2d(x, resample_filter)
    x = F.conv2d(x.reshape(1, n * in_ch, *x.shape[2:]), w.reshape(n * out_ch, in_ch, k, k).to(x.dtype),
                 padding=k // 2, groups=n)
    return x.reshape(n, out_ch, *x.shape[2:])


# ---------------------------------------------------------------------------------------------
# Generator.

def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (and the class) -> w, broadcast to ``num_ws`` style inputs; tracks w_avg for truncation."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, c_dim, w_dim, num_ws, w_avg_beta
        if c_dim:
            self.embed = FullyConnected(c_dim, w_dim)
        features = [z_dim + (w_dim if c_dim else 0)] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(features[i], features[i + 1], activation="lrelu",
                                                   lr_multiplier=lr_multiplier))
        self.num_layers = num_layers
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, psi: float = 1.0,
                update_w_avg: bool = False) -> torch.Tensor:
        parts = []
        if self.z_dim:
            parts.append(normalize_2nd_moment(z))
        if self.c_dim:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg and self.w_avg_beta is not None:
            # float32 whatever autocast made of x: w_avg is a float32 running mean
            self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1:  # the truncation trick: pull every w toward the average
            x = self.w_avg.lerp(x.float(), psi)
        return x


class SynthesisLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", make_filter(), persistent=False)
        self.up, self.resolution = up, resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up, resample_filter=self.resample_filter)
        if noise_mode == "random":
            x = x + torch.randn(len(x), 1, self.resolution, self.resolution, device=x.device,
                                dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), 0.2) * SQRT2


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return x + self.bias.to(x.dtype).view(1, -1, 1, 1)


def bf16_from(resolution: int, bf16_res: int) -> int:
    """The lowest resolution whose blocks run in bf16 when the top ``bf16_res`` do (none when 0)."""
    return max(2 ** (int(np.log2(resolution)) + 1 - bf16_res), 8) if bf16_res > 0 else resolution * 2


def bf16_autocast(x: torch.Tensor, enabled: bool):
    return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=enabled)


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 bf16: bool = False):
        super().__init__()
        self.bf16 = bf16
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution)
        self.torgb = ToRGB(out_channels, img_channels, w_dim)
        self.register_buffer("resample_filter", make_filter(), persistent=False)
        self.num_conv = 1 if in_channels == 0 else 2
        self.first = in_channels == 0

    def forward(self, x, img, ws: torch.Tensor, noise_mode: str):
        """``ws``: this block's num_conv + 1 styles (the last one also starts the next block)."""
        with bf16_autocast(ws, self.bf16):
            if self.first:
                x = self.const.unsqueeze(0).expand(len(ws), -1, -1, -1).to(ws.dtype)
                x = self.conv1(x, ws[:, 0], noise_mode)
            else:
                x = self.conv0(x if self.bf16 else x.float(), ws[:, 0], noise_mode)
                x = self.conv1(x, ws[:, 1], noise_mode)
            y = self.torgb(x, ws[:, self.num_conv]).float()
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, resolution: int, img_channels: int, channel_base: int, channel_max: int,
                 bf16_res: int = 0):
        super().__init__()
        self.resolutions = block_resolutions(resolution)
        self.num_ws = 0
        for res in self.resolutions:
            cin = channels_at(res // 2, channel_base, channel_max) if res > 4 else 0
            block = SynthesisBlock(cin, channels_at(res, channel_base, channel_max), w_dim, res, img_channels,
                                   bf16=res >= bf16_from(resolution, bf16_res))
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last toRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
        x = img = None
        w_idx = 0
        for res in self.resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """G(z, labels) -> images in about [-1, 1] (no tanh, as the official code).

    In training mode the mapping updates w_avg and, with probability ``style_mixing``, a second
    latent's styles take over from a random layer on (mixing regularisation). ``psi`` < 1 applies
    the truncation trick; ``noise_mode`` random | const | none."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, resolution: int = 256, channels: int = 3,
                 num_classes: int = 0, mapping_layers: int = 8, channel_base: int = 32768,
                 channel_max: int = 512, style_mixing: float = 0.9, w_avg_beta: float = 0.995,
                 mapping_lr_multiplier: float = 0.01, bf16_res: int = 0):
        super().__init__()
        self.z_dim, self.w_dim, self.resolution, self.channels = z_dim, w_dim, resolution, channels
        self.num_classes, self.style_mixing = num_classes, style_mixing
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, channel_base, channel_max, bf16_res)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, num_classes, w_dim, self.num_ws, mapping_layers,
                                      mapping_lr_multiplier, w_avg_beta)

    def one_hot(self, labels: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if labels is None:
            raise ValueError("a conditional generator needs labels")
        return F.one_hot(labels.to(device), self.num_classes).float()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, psi: float = 1.0,
                noise_mode: str = "random") -> torch.Tensor:
        return self.synthesis(self.styles(z, labels, psi), noise_mode)

    def styles(self, z: torch.Tensor, labels: torch.Tensor | None = None, psi: float = 1.0) -> torch.Tensor:
        """The (N, num_ws, w_dim) styles for z: mapped, truncated by ``psi``, mixed while training."""
        c = self.one_hot(labels, len(z), z.device)
        ws = self.mapping(z, c, psi=psi, update_w_avg=self.training)
        if self.training and self.style_mixing > 0:
            ws = self.mix(ws, z, c)
        return ws

    def mix(self, ws: torch.Tensor, z: torch.Tensor, c: torch.Tensor | None) -> torch.Tensor:
        cutoff = torch.randint(1, self.num_ws, (), device=ws.device)
        cutoff = torch.where(torch.rand((), device=ws.device) < self.style_mixing, cutoff,
                             torch.full_like(cutoff, self.num_ws))
        other = self.mapping(torch.randn_like(z), c)
        layer = torch.arange(self.num_ws, device=ws.device).view(1, -1, 1)
        return torch.where(layer < cutoff, ws, other)


# ---------------------------------------------------------------------------------------------
# Discriminator.

class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 architecture: str, bf16: bool = False):
        super().__init__()
        self.bf16 = bf16
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu")
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu")
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2)
        self.resnet = architecture == "resnet"
        if self.resnet:
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        with bf16_autocast(img, self.bf16):
            x = self.fromrgb(img) if x is None else (x if self.bf16 else x.float())
            if not self.resnet:
                return self.conv1(self.conv0(x))
            # Both paths at gain sqrt(1/2): the sum keeps unit variance.
            y = self.skip(x, gain=math.sqrt(0.5))
            return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5))


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, cmap_dim: int, mbstd_group: int, mbstd_channels: int = 1):
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group) if mbstd_channels else None
        self.conv = Conv2dLayer(in_channels + mbstd_channels, in_channels, 3, activation="lrelu")
        self.fc = FullyConnected(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnected(in_channels, cmap_dim or 1)
        self.cmap_dim = cmap_dim

    def forward(self, x: torch.Tensor, cmap: torch.Tensor | None) -> torch.Tensor:
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.fc(self.conv(x).flatten(1))
        x = self.out(x)
        if cmap is not None:  # projection: the class embedding's inner product with the features
            x = (x * cmap).sum(dim=1, keepdim=True) / np.sqrt(self.cmap_dim)
        return x.view(len(x))


class Discriminator(nn.Module):
    """D(images, labels) -> one logit per image; ``pack`` > 1 judges PacGAN packs."""

    def __init__(self, resolution: int = 256, channels: int = 3, num_classes: int = 0, channel_base: int = 32768,
                 channel_max: int = 512, mbstd_group: int = 4, mbstd_channels: int = 1,
                 architecture: str = "resnet", pack: int = 1, bf16_res: int = 0):
        super().__init__()
        if architecture not in ("resnet", "orig"):
            raise UserError(f"model.discriminator.architecture={architecture}: use resnet or orig")
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        self.resolutions = [r for r in reversed(block_resolutions(resolution)) if r > 4]
        for res in self.resolutions:
            cin = channels_at(res, channel_base, channel_max) if res < resolution else 0
            block = DiscriminatorBlock(cin, channels_at(res, channel_base, channel_max),
                                       channels_at(res // 2, channel_base, channel_max), channels * pack,
                                       architecture, bf16=res >= bf16_from(resolution, bf16_res))
            setattr(self, f"b{res}", block)
        cmap_dim = channels_at(4, channel_base, channel_max) if num_classes else 0
        if num_classes:
            self.mapping = MappingNetwork(0, num_classes, cmap_dim, None, w_avg_beta=None)
        self.b4 = DiscriminatorEpilogue(channels_at(4, channel_base, channel_max), cmap_dim, mbstd_group,
                                        mbstd_channels)

    def forward(self, img: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = None
        for res in self.resolutions:
            x = getattr(self, f"b{res}")(x, img)
        cmap = None
        if self.num_classes:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            cmap = self.mapping(None, F.one_hot(labels, self.num_classes).float())
        return self.b4(x.float(), cmap)
