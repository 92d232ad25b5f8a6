"""StyleGAN2 (Karras et al. 2020, config F) in plain PyTorch: no custom CUDA ops, nothing compiled.

It computes the function NVIDIA's stylegan2-ada-pytorch networks compute, under the same module and
parameter names, so that official checkpoints load with a near-identity mapping
(genexp/models/stylegan2_official.py; tests/test_stylegan2_parity.py compares against outputs and
gradients the official code produced):

- mapping: z normalised to unit second moment, ``mapping_layers`` fully connected layers with
  lr multiplier 0.01, an embedding of the class joined to z for conditional models, w_avg tracked
  for the truncation trick (optionally on the first ``truncation_cutoff`` styles only);
- synthesis: a learned 4x4 constant, per resolution two modulated 3x3 convolutions (weight
  demodulation, per-pixel noise with learned strength, the first one upsampling with the
  [1, 3, 3, 1] filter) and toRGB layers: summed over resolutions (``skip``, config F), only at the
  end (``orig``), or at the end with residual blocks (``resnet``);
- discriminator: per resolution two 3x3 convolutions, the second downsampling, with a 1x1 residual
  path scaled by sqrt(1/2) (``resnet``; ``orig`` drops it; ``skip`` reads a downsampled image at every
  resolution), minibatch standard deviation and a projection of the class embedding at the end;
- equalised learning rate everywhere: weights stored N(0, 1), scaled by 1/sqrt(fan_in) at use;
- channels = min(channel_base / resolution, channel_max), so every power of two works;
- ``conv_clamp``: activations clamped to +-conv_clamp (times the layer's gain) after bias and
  activation, as the official fp16 configurations set it (256).

Resampling is the FIR filter applied as a depthwise convolution (upfirdn2d written out in torch).
The upsampling convolution is a transposed convolution followed by the filter, as the official one:
a true convolution of the zero-stuffed input, not a zero-padded cross-correlation of the upsampled one
(the two differ on the border pixels).

Modulated convolutions are fused (per-sample weights, one grouped convolution) at inference and
unfused while training (activations scaled by the styles, one shared-weight convolution, outputs
demodulated), as the official ``fused_modconv = not training``: the shared weight is cheaper to
differentiate.

Mixed precision as the official ``num_fp16_res``, in bfloat16: ``bf16_res`` highest-resolution blocks of
G and of D run under bf16 autocast (the costliest layers, where the memory goes); the toRGB sum, the
mapping network and D's epilogue stay in float32. bf16 keeps float32's exponent range, so fp16's loss
scaling is not needed.
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
ARCHITECTURES = ("orig", "skip", "resnet")
NOISE_MODES = ("random", "const", "none")


def block_resolutions(resolution: int) -> list[int]:
    n = math.log2(resolution) if resolution > 0 else 0.5
    if not float(n).is_integer() or resolution < 8:
        raise UserError(f"resolution {resolution}: StyleGAN2 needs a power of two >= 8 (e.g. 32, 256, 1024)")
    return [2 ** i for i in range(2, int(n) + 1)]


def channels_at(resolution: int, channel_base: int, channel_max: int) -> int:
    return min(channel_base // resolution, channel_max)


def check_architecture(option: str, architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise UserError(f"{option}={architecture}: use orig, skip or resnet")


# ---------------------------------------------------------------------------------------------
# Resampling: upsample by zero insertion, pad, FIR filter, downsample (upfirdn2d).

def make_filter(taps=(1, 3, 3, 1)) -> torch.Tensor:
    f = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(f, f)
    return f / f.sum()


def pad_or_crop(x: torch.Tensor, pad) -> torch.Tensor:
    """``pad`` = (left, right, top, bottom); negative entries crop."""
    x = F.pad(x, [max(p, 0) for p in pad])
    left, right, top, bottom = (max(-p, 0) for p in pad)
    return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]


def upfirdn2d(x: torch.Tensor, f: torch.Tensor, up: int = 1, down: int = 1, pad=(0, 0, 0, 0),
              gain: float = 1.0) -> torch.Tensor:
    """``pad`` = (left, right, top, bottom), applied after upsampling; negative pads crop."""
    n, c, h, w = x.shape
    if up > 1:
        x = x.reshape(n, c, h, 1, w, 1)
        x = F.pad(x, [0, up - 1, 0, 0, 0, up - 1]).reshape(n, c, h * up, w * up)
    x = pad_or_crop(x, pad)
    # flipped: upfirdn2d is a true convolution with f (symmetric here, but not in general)
    kernel = (f * gain).flip([0, 1]).to(x.dtype)[None, None].expand(c, 1, *f.shape)
    x = F.conv2d(x, kernel, groups=c)
    return x[:, :, ::down, ::down] if down > 1 else x


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """2x upsampling: zeros inserted, the filter at gain 4 fills them in (keeps the mean)."""
    taps = f.shape[0]
    return upfirdn2d(x, f, up=2, pad=((taps + 1) // 2, (taps - 2) // 2) * 2, gain=4)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    taps = f.shape[0]
    return upfirdn2d(x, f, down=2, pad=((taps - 1) // 2, (taps - 2) // 2) * 2)


def conv2d_up(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """2x upsampling convolution with a k x k kernel (k // 2 padding), as the official one: a stride-2
    transposed convolution, i.e. ``w`` applied as a true convolution to the zero-stuffed input, then the
    filter at gain 4. Cheaper than filtering first: the convolution never sees the inserted zeros."""
    out_channels, in_per_group, k, _ = w.shape
    if k == 1:
        return upsample2d(F.conv2d(x, w, groups=groups), f)
    # conv_transpose2d wants (in, out / groups, k, k)
    w = w.reshape(groups, out_channels // groups, in_per_group, k, k).transpose(1, 2)
    x = F.conv_transpose2d(x, w.reshape(groups * in_per_group, out_channels // groups, k, k), stride=2,
                           groups=groups)
    taps, p = f.shape[0], k // 2
    before, after = p + (taps + 1) // 2 - (k - 1), p + (taps - 2) // 2 - (k - 2)
    return upfirdn2d(x, f, pad=(before, after, before, after), gain=4)


def conv2d_down(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Filter, then a stride-2 convolution (1x1: filter and subsample first, then the cheap conv)."""
    k = w.shape[-1]
    if k == 1:
        return F.conv2d(downsample2d(x, f), w)
    p = k // 2 + (f.shape[0] - 2 + 1) // 2
    return F.conv2d(upfirdn2d(x, f, pad=(p, p, p, p)), w, stride=2)


def bias_act(x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", gain: float = 1.0,
             clamp: float | None = None) -> torch.Tensor:
    """Bias, activation (lrelu at gain sqrt(2)), then the layer's gain and the optional clamp, in that
    order (the official bias_act)."""
    if bias is not None:
        x = x + bias.to(x.dtype).view(1, -1, *([1] * (x.dim() - 2)))
    if activation == "lrelu":
        x, gain = F.leaky_relu(x, 0.2), gain * SQRT2
    if gain != 1:
        x = x * gain
    return x.clamp(-clamp, clamp) if clamp is not None else x


def check_activation(option: str, activation: str) -> None:
    if activation not in ("lrelu", "linear"):
        raise UserError(f"{option}={activation}: genexp's StyleGAN2 has lrelu and linear")


# ---------------------------------------------------------------------------------------------
# Equalised-learning-rate layers.

class FullyConnected(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "linear",
                 lr_multiplier: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        check_activation("activation", activation)
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
    """Conv with equalised lr, optional 2x FIR up- or downsampling, bias, lrelu * sqrt(2), clamp."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", up: int = 1, down: int = 1, conv_clamp: float | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.register_buffer("resample_filter", make_filter(), persistent=False)
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size ** 2)
        self.activation, self.up, self.down, self.padding = activation, up, down, kernel_size // 2
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        if self.up > 1:
            x = conv2d_up(x, w, self.resample_filter)
        elif self.down > 1:
            x = conv2d_down(x, w, self.resample_filter)
        else:
            x = F.conv2d(x, w, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, self.activation, gain, clamp)


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor, demodulate: bool = True,
                     up: bool = False, resample_filter: torch.Tensor | None = None,
                     fused: bool = True) -> torch.Tensor:
    """Scale the weight's input channels by each sample's style; demodulate so that each output
    channel has unit expected variance (StyleGAN2 eq. 1-3). ``fused``: per-sample weights in one
    grouped conv; otherwise the styles scale the activations before and the demodulation
    coefficients the outputs after one conv with the shared weight (the same function)."""
    n, (out_ch, in_ch, k, _) = len(x), weight.shape
    dcoefs = None
    if demodulate:
        # sum over (in, k, k) of (weight * style)^2 = styles^2 @ (weight^2 summed over k, k)^T: one small
        # matmul, not the (n, out, in, k, k) modulated weights (their product, square and sum, and what
        # backward keeps of them, were most of G's training step); float32 even under autocast
        with torch.autocast(device_type=x.device.type, enabled=False):
            dcoefs = (styles.float().square() @ weight.float().square().sum(dim=[2, 3]).T + 1e-8).rsqrt()  # (n, out)
    if not fused:
        x = x * styles.to(x.dtype).reshape(n, -1, 1, 1)
        w = weight.to(x.dtype)
        x = conv2d_up(x, w, resample_filter) if up else F.conv2d(x, w, padding=k // 2)
        return x * dcoefs.to(x.dtype).reshape(n, -1, 1, 1) if demodulate else x
    w = weight.unsqueeze(0) * styles.reshape(n, 1, in_ch, 1, 1)
    if demodulate:
        w = w * dcoefs.reshape(n, out_ch, 1, 1, 1)
    w = w.reshape(n * out_ch, in_ch, k, k).to(x.dtype)
    x = x.reshape(1, n * in_ch, *x.shape[2:])
    x = conv2d_up(x, w, resample_filter, groups=n) if up else F.conv2d(x, w, padding=k // 2, groups=n)
    return x.reshape(n, out_ch, *x.shape[2:])


# ---------------------------------------------------------------------------------------------
# Generator.

def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class MappingNetwork(nn.Module):
    """z (and the class) -> w, broadcast to ``num_ws`` style inputs; tracks w_avg for truncation.
    ``embed_features`` / ``layer_features``: the class embedding's and the hidden layers' widths
    (None: w_dim)."""

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: float | None = 0.995,
                 embed_features: int | None = None, layer_features: int | None = None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, c_dim, w_dim, num_ws, w_avg_beta
        embed_features = (w_dim if embed_features is None else embed_features) if c_dim else 0
        layer_features = w_dim if layer_features is None else layer_features
        if c_dim:
            self.embed = FullyConnected(c_dim, embed_features)
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(features[i], features[i + 1], activation="lrelu",
                                                   lr_multiplier=lr_multiplier))
        self.num_layers = num_layers
        if w_avg_beta is not None and num_ws is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None, psi: float = 1.0,
                update_w_avg: bool = False, truncation_cutoff: int | None = None) -> torch.Tensor:
        parts = []
        if self.z_dim:
            parts.append(normalize_2nd_moment(z.float()))
        if self.c_dim:
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        x = torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg and hasattr(self, "w_avg"):
            # float32 whatever autocast made of x: w_avg is a float32 running mean
            self.w_avg.copy_(x.detach().float().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if psi != 1:  # the truncation trick: pull w toward the average, in the first cutoff styles only
            cut = self.num_ws if truncation_cutoff is None else min(int(truncation_cutoff), self.num_ws)
            x = torch.cat([self.w_avg.lerp(x[:, :cut].float(), psi), x[:, cut:].float()], dim=1)
        return x


class SynthesisLayer(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: float | None = None):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.register_buffer("resample_filter", make_filter(), persistent=False)
        self.up, self.resolution, self.conv_clamp = up, resolution, conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused: bool = True,
                gain: float = 1.0) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w), up=self.up, resample_filter=self.resample_filter,
                             fused=fused)
        if noise_mode == "random":
            x = x + torch.randn(len(x), 1, self.resolution, self.resolution, device=x.device,
                                dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            x = x + self.noise_const.to(x.dtype) * self.noise_strength
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, "lrelu", gain, clamp)


class ToRGB(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None):
        super().__init__()
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)
        self.conv_clamp = conv_clamp

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = True) -> torch.Tensor:
        x = modulated_conv2d(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False, fused=fused)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


def bf16_from(resolution: int, bf16_res: int) -> int:
    """The lowest resolution whose blocks run in bf16 when the top ``bf16_res`` do (none when 0)."""
    return max(2 ** (int(np.log2(resolution)) + 1 - bf16_res), 8) if bf16_res > 0 else resolution * 2


def bf16_autocast(x: torch.Tensor, enabled: bool):
    return torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=enabled)


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 is_last: bool = True, architecture: str = "skip", conv_clamp: float | None = None,
                 bf16: bool = False):
        super().__init__()
        self.bf16, self.first, self.architecture = bf16, in_channels == 0, architecture
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.num_conv = 1 if self.first else 2
        self.num_torgb = int(is_last or architecture == "skip")
        if self.num_torgb:
            self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        if not self.first and architecture == "resnet":
            self.skip = Conv2dLayer(in_channels, out_channels, 1, bias=False, up=2)
        self.register_buffer("resample_filter", make_filter(), persistent=False)

    def forward(self, x, img, ws: torch.Tensor, noise_mode: str, fused: bool):
        """``ws``: this block's num_conv + num_torgb styles (the toRGB's one also starts the next block)."""
        with bf16_autocast(ws, self.bf16):
            if self.first:
                x = self.const.unsqueeze(0).expand(len(ws), -1, -1, -1).to(ws.dtype)
                x = self.conv1(x, ws[:, 0], noise_mode, fused)
            elif self.architecture == "resnet":
                x = x if self.bf16 else x.float()
                y = self.skip(x, gain=math.sqrt(0.5))
                x = self.conv0(x, ws[:, 0], noise_mode, fused)
                x = y + self.conv1(x, ws[:, 1], noise_mode, fused, gain=math.sqrt(0.5))
            else:
                x = self.conv0(x if self.bf16 else x.float(), ws[:, 0], noise_mode, fused)
                x = self.conv1(x, ws[:, 1], noise_mode, fused)
            y = self.torgb(x, ws[:, self.num_conv], fused).float() if self.num_torgb else None
        if img is not None:
            img = upsample2d(img, self.resample_filter)
        if y is not None:
            img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    def __init__(self, w_dim: int, resolution: int, img_channels: int, channel_base: int, channel_max: int,
                 bf16_res: int = 0, architecture: str = "skip", conv_clamp: float | None = None):
        super().__init__()
        check_architecture("model.generator.architecture", architecture)
        self.resolutions = block_resolutions(resolution)
        self.num_ws = 0
        for res in self.resolutions:
            cin = channels_at(res // 2, channel_base, channel_max) if res > 4 else 0
            block = SynthesisBlock(cin, channels_at(res, channel_base, channel_max), w_dim, res, img_channels,
                                   is_last=res == resolution, architecture=architecture, conv_clamp=conv_clamp,
                                   bf16=res >= bf16_from(resolution, bf16_res))
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last toRGB

    def forward(self, ws: torch.Tensor, noise_mode: str = "random", fused_modconv: bool | None = None) -> torch.Tensor:
        """``fused_modconv`` None: fused at inference, unfused while training (as the official)."""
        if noise_mode not in NOISE_MODES:
            raise UserError(f"noise_mode={noise_mode}: use random, const or none")
        fused = not self.training if fused_modconv is None else fused_modconv
        x = img = None
        w_idx = 0
        for res in self.resolutions:
            block = getattr(self, f"b{res}")
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + block.num_torgb], noise_mode, fused)
            w_idx += block.num_conv
        return img


class Generator(nn.Module):
    """G(z, labels) -> images in about [-1, 1] (no tanh, as the official code).

    In training mode the mapping updates w_avg and, with probability ``style_mixing``, a second
    latent's styles take over from a random layer on (mixing regularisation). ``psi`` < 1 applies
    the truncation trick (to the first ``truncation_cutoff`` styles; None: all); ``noise_mode``
    random | const | none."""

    def __init__(self, z_dim: int = 512, w_dim: int = 512, resolution: int = 256, channels: int = 3,
                 num_classes: int = 0, mapping_layers: int = 8, channel_base: int = 32768,
                 channel_max: int = 512, style_mixing: float = 0.9, w_avg_beta: float = 0.995,
                 mapping_lr_multiplier: float = 0.01, bf16_res: int = 0, architecture: str = "skip",
                 conv_clamp: float | None = None, truncation_cutoff: int | None = None,
                 mapping_embed_features: int | None = None, mapping_layer_features: int | None = None):
        super().__init__()
        self.z_dim, self.w_dim, self.resolution, self.channels = z_dim, w_dim, resolution, channels
        self.num_classes, self.style_mixing = num_classes, style_mixing
        self.truncation_cutoff = truncation_cutoff
        self.synthesis = SynthesisNetwork(w_dim, resolution, channels, channel_base, channel_max, bf16_res,
                                          architecture, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, num_classes, w_dim, self.num_ws, mapping_layers,
                                      mapping_lr_multiplier, w_avg_beta, mapping_embed_features,
                                      mapping_layer_features)

    def one_hot(self, labels: torch.Tensor | None, n: int, device) -> torch.Tensor | None:
        if not self.num_classes:
            return None
        if labels is None:
            raise ValueError("a conditional generator needs labels")
        return F.one_hot(labels.to(device), self.num_classes).float()

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None, psi: float = 1.0,
                noise_mode: str = "random", fused_modconv: bool | None = None) -> torch.Tensor:
        return self.synthesis(self.styles(z, labels, psi), noise_mode, fused_modconv)

    def styles(self, z: torch.Tensor, labels: torch.Tensor | None = None, psi: float = 1.0) -> torch.Tensor:
        """The (N, num_ws, w_dim) styles for z: mapped, truncated by ``psi``, mixed while training."""
        c = self.one_hot(labels, len(z), z.device)
        ws = self.mapping(z, c, psi=psi, update_w_avg=self.training, truncation_cutoff=self.truncation_cutoff)
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


def flip_up_convolutions(state_dict: dict) -> dict:
    """A G state dict saved before genexp's up-sampling convolution became the official true
    convolution (it was a cross-correlation of the upsampled input) with those kernels flipped, so
    that it computes what it computed then, up to the one-pixel border: the weights were trained as
    cross-correlation kernels, and loaded unchanged they would be applied mirrored."""
    out = dict(state_dict)
    for name, value in state_dict.items():
        parts = name.split(".")
        if parts[-2:] == ["conv0", "weight"] and value.dim() == 4:
            out[name] = value.flip([2, 3])
    return out


# ---------------------------------------------------------------------------------------------
# Discriminator.

class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 architecture: str, conv_clamp: float | None = None, bf16: bool = False):
        super().__init__()
        self.bf16, self.architecture = bf16, architecture
        self.reads_img = in_channels == 0 or architecture == "skip"
        if self.reads_img:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=2, conv_clamp=conv_clamp)
        if architecture == "resnet":
            self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=2)
        self.register_buffer("resample_filter", make_filter(), persistent=False)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None):
        with bf16_autocast(img if img is not None else x, self.bf16):
            if x is not None and not self.bf16:
                x = x.float()
            if self.reads_img:
                y = self.fromrgb(img)
                x = y if x is None else x + y
                img = downsample2d(img, self.resample_filter) if self.architecture == "skip" else None
            if self.architecture != "resnet":
                return self.conv1(self.conv0(x)), img
            # Both paths at gain sqrt(1/2): the sum keeps unit variance.
            y = self.skip(x, gain=math.sqrt(0.5))
            return y + self.conv1(self.conv0(x), gain=math.sqrt(0.5)), img


class DiscriminatorEpilogue(nn.Module):
    def __init__(self, in_channels: int, cmap_dim: int, mbstd_group: int | None, mbstd_channels: int = 1,
                 img_channels: int = 3, architecture: str = "resnet", conv_clamp: float | None = None):
        super().__init__()
        if architecture == "skip":
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation="lrelu")
        self.mbstd = MinibatchStd(mbstd_group, mbstd_channels) if mbstd_channels else None
        self.conv = Conv2dLayer(in_channels + mbstd_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnected(in_channels * 16, in_channels, activation="lrelu")
        self.out = FullyConnected(in_channels, cmap_dim or 1)
        self.cmap_dim, self.architecture = cmap_dim, architecture

    def forward(self, x: torch.Tensor, img: torch.Tensor | None, cmap: torch.Tensor | None) -> torch.Tensor:
        if self.architecture == "skip":
            x = x + self.fromrgb(img.float())
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.fc(self.conv(x).flatten(1))
        x = self.out(x)
        if cmap is not None:  # projection: the class embedding's inner product with the features
            x = (x * cmap).sum(dim=1, keepdim=True) / np.sqrt(self.cmap_dim)
        return x.view(len(x))


class Discriminator(nn.Module):
    """D(images, labels) -> one logit per image; ``pack`` > 1 judges PacGAN packs. ``mbstd_group``
    None: the whole batch is one group; ``mbstd_channels`` 0: no minibatch std."""

    def __init__(self, resolution: int = 256, channels: int = 3, num_classes: int = 0, channel_base: int = 32768,
                 channel_max: int = 512, mbstd_group: int | None = 4, mbstd_channels: int = 1,
                 architecture: str = "resnet", pack: int = 1, bf16_res: int = 0, conv_clamp: float | None = None,
                 cmap_dim: int | None = None, mapping_layers: int = 8, mapping_lr_multiplier: float = 0.01,
                 mapping_embed_features: int | None = None, mapping_layer_features: int | None = None):
        super().__init__()
        check_architecture("model.discriminator.architecture", architecture)
        self.resolution, self.channels, self.num_classes = resolution, channels, num_classes
        self.resolutions = [r for r in reversed(block_resolutions(resolution)) if r > 4]
        img_channels = channels * pack
        for res in self.resolutions:
            cin = channels_at(res, channel_base, channel_max) if res < resolution else 0
            block = DiscriminatorBlock(cin, channels_at(res, channel_base, channel_max),
                                       channels_at(res // 2, channel_base, channel_max), img_channels,
                                       architecture, conv_clamp, bf16=res >= bf16_from(resolution, bf16_res))
            setattr(self, f"b{res}", block)
        cmap_dim = (channels_at(4, channel_base, channel_max) if cmap_dim is None else cmap_dim) if num_classes else 0
        if num_classes:
            self.mapping = MappingNetwork(0, num_classes, cmap_dim, None, mapping_layers, mapping_lr_multiplier,
                                          None, mapping_embed_features, mapping_layer_features)
        self.b4 = DiscriminatorEpilogue(channels_at(4, channel_base, channel_max), cmap_dim, mbstd_group,
                                        mbstd_channels, img_channels, architecture, conv_clamp)

    def forward(self, img: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = None
        for res in self.resolutions:
            x, img = getattr(self, f"b{res}")(x, img)
        cmap = None
        if self.num_classes:
            if labels is None:
                raise ValueError("a conditional discriminator needs labels")
            cmap = self.mapping(None, F.one_hot(labels, self.num_classes).float())
        return self.b4(x.float(), img, cmap)
