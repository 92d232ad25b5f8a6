"""SongUNet: the DDPM++ and NCSN++ denoisers of Song et al. (2021) as EDM (Karras et al. 2022) configures
them for CIFAR-10. One class covers both; the presets differ in

- the noise embedding: positional (DDPM++) or random Fourier features (NCSN++, twice as wide),
- the encoder: standard, skip (the input image, resampled, added at every level) or residual (NCSN++:
  a strided path from the image merged into the first feature map of every level),
- the decoder: standard, or skip (an RGB output at every level, upsampled and summed),
- the resample filter: [1, 1] (box, DDPM++) or [1, 3, 3, 1] (NCSN++).

Parameter and buffer names follow EDM's training/networks.py, so that its state dicts load unchanged
(tests/data/edm_reference.pt holds one; tests compare outputs).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def xavier_uniform(shape: list[int], fan_in: int, fan_out: int, gain: float = 1.0) -> torch.Tensor:
    return math.sqrt(6 / (fan_in + fan_out)) * (torch.rand(*shape) * 2 - 1) * gain


class Linear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool = True, gain: float = 1.0):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(xavier_uniform([out_features, in_features], in_features, out_features, gain))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x @ self.weight.to(x.dtype).t()
        return x + self.bias.to(x.dtype) if self.bias is not None else x


class Conv2d(nn.Module):
    """A k x k convolution ("same" padding) with optional 2x down- or upsampling through a separable
    FIR filter. ``kernel=0`` is a pure resampler (no weights). ``fused``: convolve at the fine
    resolution and filter-downsample after it (NCSN++'s residual encoder path), or upsample first."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, bias: bool = True, up: bool = False,
                 down: bool = False, resample_filter=(1, 1), fused: bool = False, gain: float = 1.0):
        super().__init__()
        assert not (up and down)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.up, self.down, self.fused = up, down, fused
        fan_in, fan_out = in_channels * kernel * kernel, out_channels * kernel * kernel
        self.weight = nn.Parameter(xavier_uniform([out_channels, in_channels, kernel, kernel], fan_in, fan_out, gain)) \
            if kernel else None
        self.bias = nn.Parameter(torch.zeros(out_channels)) if kernel and bias else None
        f = torch.as_tensor(resample_filter, dtype=torch.float32)
        f = torch.outer(f, f)[None, None] / f.sum() ** 2  # 2-D filter of unit sum
        self.register_buffer("resample_filter", f if up or down else None)

    def _up(self, x: torch.Tensor, f: torch.Tensor, pad: int) -> torch.Tensor:
        c = x.shape[1]  # transposed depthwise filter at stride 2; x4 keeps the mean
        return F.conv_transpose2d(x, (f * 4).tile(c, 1, 1, 1), groups=c, stride=2, padding=pad)

    def _down(self, x: torch.Tensor, f: torch.Tensor, pad: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, f.tile(c, 1, 1, 1), groups=c, stride=2, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) if self.weight is not None else None
        f = self.resample_filter.to(x.dtype) if self.resample_filter is not None else None
        w_pad = w.shape[-1] // 2 if w is not None else 0
        f_pad = (f.shape[-1] - 1) // 2 if f is not None else 0
        if self.fused and w is not None and self.up:
            x = F.conv2d(self._up(x, f, max(f_pad - w_pad, 0)), w, padding=max(w_pad - f_pad, 0))
        elif self.fused and w is not None and self.down:
            x = self._down(F.conv2d(x, w, padding=w_pad + f_pad), f, 0)
        else:
            if self.up:
                x = self._up(x, f, f_pad)
            if self.down:
                x = self._down(x, f, f_pad)
            if w is not None:
                x = F.conv2d(x, w, padding=w_pad)
        return x + self.bias.to(x.dtype).view(1, -1, 1, 1) if self.bias is not None else x


class GroupNorm(nn.Module):
    """Group norm with at most 32 groups and at least 4 channels per group."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.num_groups = min(32, num_channels // 4)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.group_norm(x, self.num_groups, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)


SKIP_SCALE = math.sqrt(0.5)  # residual sums keep unit variance
ZERO_GAIN = 1e-5  # last convolutions of a block start near zero: every block starts as the identity
ATTN_GAIN = math.sqrt(0.2)


class UNetBlock(nn.Module):
    """GroupNorm-SiLU-conv (resampling), the embedding added, GroupNorm-SiLU-dropout-conv, plus the
    (projected) input, times sqrt(1/2); then optional single-head self-attention, residual likewise."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int, up: bool = False, down: bool = False,
                 attention: bool = False, dropout: float = 0.0, resample_filter=(1, 1)):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.dropout = dropout
        self.attention = attention
        self.norm0 = GroupNorm(in_channels)
        self.conv0 = Conv2d(in_channels, out_channels, 3, up=up, down=down, resample_filter=resample_filter)
        self.affine = Linear(emb_channels, out_channels)
        self.norm1 = GroupNorm(out_channels)
        self.conv1 = Conv2d(out_channels, out_channels, 3, gain=ZERO_GAIN)
        self.skip = None
        if out_channels != in_channels or up or down:  # a 1x1 projection (resampled) of the input
            self.skip = Conv2d(in_channels, out_channels, 1, up=up, down=down, resample_filter=resample_filter)
        if attention:
            self.norm2 = GroupNorm(out_channels)
            self.qkv = Conv2d(out_channels, out_channels * 3, 1, gain=ATTN_GAIN)
            self.proj = Conv2d(out_channels, out_channels, 1, gain=ZERO_GAIN)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        orig = x
        x = self.conv0(F.silu(self.norm0(x)))
        x = F.silu(self.norm1(x + self.affine(emb)[:, :, None, None].to(x.dtype)))
        x = self.conv1(F.dropout(x, p=self.dropout, training=self.training))
        x = (x + (self.skip(orig) if self.skip is not None else orig)) * SKIP_SCALE
        if self.attention:
            n, c, h, w = x.shape
            # channels interleave as (c, 3): q, k, v of channel i are rows 3i, 3i+1, 3i+2 of the conv
            q, k, v = self.qkv(self.norm2(x)).reshape(n, c, 3, h * w).unbind(2)
            logits = torch.einsum("ncq,nck->nqk", q.float(), k.float() / math.sqrt(c))
            weights = logits.softmax(dim=2).to(q.dtype)
            a = torch.einsum("nqk,nck->ncq", weights, v)
            x = (self.proj(a.reshape(n, c, h, w)) + x) * SKIP_SCALE
        return x


class PositionalEmbedding(nn.Module):
    """Transformer sinusoids of the noise label (DDPM++), frequencies 1 .. 1/10000 inclusive."""

    def __init__(self, num_channels: int, max_positions: int = 10000):
        super().__init__()
        self.num_channels, self.max_positions = num_channels, max_positions

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        half = self.num_channels // 2
        freqs = torch.arange(half, dtype=torch.float32, device=x.device) / (half - 1)
        freqs = (1 / self.max_positions) ** freqs
        x = torch.outer(x, freqs.to(x.dtype))
        return torch.cat([x.sin(), x.cos()], dim=1)


class FourierEmbedding(nn.Module):
    """Random Fourier features of the noise label (NCSN++): fixed Gaussian frequencies of scale 16."""

    def __init__(self, num_channels: int, scale: float = 16.0):
        super().__init__()
        self.register_buffer("freqs", torch.randn(num_channels // 2) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.outer(x, (2 * math.pi * self.freqs).to(x.dtype))
        return torch.cat([x.sin(), x.cos()], dim=1)


class SongUNet(nn.Module):
    """F_theta(x, c_noise, class_labels): the raw network that the preconditioning wraps."""

    def __init__(self, img_resolution: int, in_channels: int, out_channels: int, label_dim: int = 0,
                 augment_dim: int = 0, model_channels: int = 128, channel_mult=(1, 2, 2, 2), channel_mult_emb: int = 4,
                 num_blocks: int = 4, attn_resolutions=(16,), dropout: float = 0.10, label_dropout: float = 0.0,
                 embedding_type: str = "positional", channel_mult_noise: int = 1, encoder_type: str = "standard",
                 decoder_type: str = "standard", resample_filter=(1, 1)):
        super().__init__()
        if embedding_type not in ("positional", "fourier"):
            raise ValueError(f"embedding_type={embedding_type}: use positional or fourier")
        if encoder_type not in ("standard", "skip", "residual"):
            raise ValueError(f"encoder_type={encoder_type}: use standard, skip or residual")
        if decoder_type not in ("standard", "skip"):
            raise ValueError(f"decoder_type={decoder_type}: use standard or skip")
        channel_mult, attn_resolutions = list(channel_mult), list(attn_resolutions)
        resample_filter = list(resample_filter)
        self.img_resolution, self.label_dim, self.label_dropout = img_resolution, label_dim, label_dropout
        emb_channels = model_channels * channel_mult_emb
        noise_channels = model_channels * channel_mult_noise
        block = dict(emb_channels=emb_channels, dropout=dropout, resample_filter=resample_filter)

        self.map_noise = PositionalEmbedding(noise_channels) if embedding_type == "positional" \
            else FourierEmbedding(noise_channels)
        self.map_label = Linear(label_dim, noise_channels) if label_dim else None
        self.map_augment = Linear(augment_dim, noise_channels, bias=False) if augment_dim else None
        self.map_layer0 = Linear(noise_channels, emb_channels)
        self.map_layer1 = Linear(emb_channels, emb_channels)

        self.enc = nn.ModuleDict()
        cout = caux = in_channels
        for level, mult in enumerate(channel_mult):
            res = img_resolution >> level
            if level == 0:
                cin, cout = cout, model_channels
                self.enc[f"{res}x{res}_conv"] = Conv2d(cin, cout, 3)
            else:
                self.enc[f"{res}x{res}_down"] = UNetBlock(cout, cout, down=True, **block)
                if encoder_type == "skip":
                    self.enc[f"{res}x{res}_aux_down"] = Conv2d(caux, caux, 0, down=True,
                                                               resample_filter=resample_filter)
                    self.enc[f"{res}x{res}_aux_skip"] = Conv2d(caux, cout, 1)
                if encoder_type == "residual":
                    self.enc[f"{res}x{res}_aux_residual"] = Conv2d(caux, cout, 3, down=True, fused=True,
                                                                   resample_filter=resample_filter)
                    caux = cout
            for idx in range(num_blocks):
                cin, cout = cout, model_channels * mult
                self.enc[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=res in attn_resolutions, **block)
        skips = [m.out_channels for name, m in self.enc.items() if "aux" not in name]

        self.dec = nn.ModuleDict()
        for level, mult in reversed(list(enumerate(channel_mult))):
            res = img_resolution >> level
            if level == len(channel_mult) - 1:
                self.dec[f"{res}x{res}_in0"] = UNetBlock(cout, cout, attention=True, **block)
                self.dec[f"{res}x{res}_in1"] = UNetBlock(cout, cout, **block)
            else:
                self.dec[f"{res}x{res}_up"] = UNetBlock(cout, cout, up=True, **block)
            for idx in range(num_blocks + 1):
                cin, cout = cout + skips.pop(), model_channels * mult
                attention = idx == num_blocks and res in attn_resolutions
                self.dec[f"{res}x{res}_block{idx}"] = UNetBlock(cin, cout, attention=attention, **block)
            if decoder_type == "skip" or level == 0:
                if decoder_type == "skip" and level < len(channel_mult) - 1:
                    self.dec[f"{res}x{res}_aux_up"] = Conv2d(out_channels, out_channels, 0, up=True,
                                                             resample_filter=resample_filter)
                self.dec[f"{res}x{res}_aux_norm"] = GroupNorm(cout)
                self.dec[f"{res}x{res}_aux_conv"] = Conv2d(cout, out_channels, 3, gain=ZERO_GAIN)

    def forward(self, x: torch.Tensor, noise_labels: torch.Tensor, class_labels: torch.Tensor | None = None,
                augment_labels: torch.Tensor | None = None) -> torch.Tensor:
        emb = self.map_noise(noise_labels)
        if self.map_label is not None:
            y = class_labels
            if self.training and self.label_dropout:  # classifier-free guidance's unconditional examples
                y = y * (torch.rand([x.shape[0], 1], device=x.device) >= self.label_dropout).to(y.dtype)
            emb = emb + self.map_label(y * math.sqrt(self.map_label.in_features))
        if self.map_augment is not None and augment_labels is not None:
            emb = emb + self.map_augment(augment_labels)
        emb = F.silu(self.map_layer1(F.silu(self.map_layer0(emb))))

        skips, aux = [], x
        for name, m in self.enc.items():
            if "aux_down" in name:
                aux = m(aux)
            elif "aux_skip" in name:
                x = skips[-1] = x + m(aux)
            elif "aux_residual" in name:
                x = skips[-1] = aux = (x + m(aux)) / math.sqrt(2)
            else:
                x = m(x, emb) if isinstance(m, UNetBlock) else m(x)
                skips.append(x)

        out = tmp = None
        for name, m in self.dec.items():
            if "aux_up" in name:
                out = m(out)
            elif "aux_norm" in name:
                tmp = m(x)
            elif "aux_conv" in name:
                tmp = m(F.silu(tmp))
                out = tmp if out is None else tmp + out
            else:
                if x.shape[1] != m.in_channels:
                    x = torch.cat([x, skips.pop()], dim=1)
                x = m(x, emb)
        return out
