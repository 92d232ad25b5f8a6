"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN Decoders").

A vertical stack sees the rows above, a horizontal stack the pixels to the left in the current row;
the vertical stack reaches the horizontal one only after a one-row shift, so neither sees the future
and together they cover everything before a pixel (no blind spot). Within a pixel, the hidden features
are split into C groups, one per image channel: group c may see input channels < c of the current
pixel (mask A, first layer) and groups <= c after that (mask B), so channel c's logits depend only on
earlier channels (PixelCNN, van den Oord et al. 2016, sec. 3.4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from genexp.data.discrete import from_levels
from genexp.errors import UserError


def channel_groups(features: int, channels: int) -> torch.Tensor:
    """Which image channel each of ``features`` belongs to (equal contiguous blocks)."""
    return torch.arange(features) // (features // channels)


class CenterMaskedConv(nn.Conv2d):
    """A conv whose rightmost kernel column is the current pixel: there, output group g sees input
    group h only when h < g (type A) or h <= g (type B); the columns left of it are unmasked."""

    def __init__(self, in_groups: torch.Tensor, out_groups: torch.Tensor, width: int, mask_type: str):
        super().__init__(len(in_groups), len(out_groups), (1, width))
        later, same = out_groups[:, None] > in_groups[None, :], out_groups[:, None] == in_groups[None, :]
        allowed = later if mask_type == "A" else later | same
        mask = torch.ones_like(self.weight)
        mask[:, :, 0, -1] = allowed.float()
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias)


def gate(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=1)
    return torch.tanh(a) * torch.sigmoid(b)


class GatedLayer(nn.Module):
    def __init__(self, in_groups: torch.Tensor, hidden: int, kernel: int, channels: int, first: bool,
                 num_classes: int, dropout: float):
        super().__init__()
        self.kernel, self.first = kernel, first
        groups = channel_groups(hidden, channels)
        gate_groups = torch.cat([groups, groups])  # tanh half and sigmoid half pair feature by feature
        self.v_conv = nn.Conv2d(len(in_groups), 2 * hidden, (kernel // 2 + 1, kernel))
        # The vertical stack holds only rows above (after the shift): every channel may be seen.
        self.v_to_h = nn.Conv2d(2 * hidden, 2 * hidden, 1)
        self.h_conv = CenterMaskedConv(in_groups, gate_groups, kernel // 2 + 1, "A" if first else "B")
        self.h_out = CenterMaskedConv(groups, groups, 1, "B")
        self.dropout = nn.Dropout(dropout)
        self.cond = nn.Embedding(num_classes, 4 * hidden) if num_classes else None
        if self.cond is not None:
            nn.init.zeros_(self.cond.weight)  # start as the unconditional model; the labels' biases are learnt

    def forward(self, v: torch.Tensor, h: torch.Tensor, labels: torch.Tensor | None):
        pad = self.kernel // 2
        v_pre = self.v_conv(F.pad(v, (pad, pad, pad, 0)))  # rows i-pad..i
        h_pre = self.h_conv(F.pad(h, (pad, 0, 0, 0)))  # columns j-pad..j of row i
        h_pre = h_pre + self.v_to_h(F.pad(v_pre, (0, 0, 1, 0))[:, :, :-1])  # rows above only
        if self.cond is not None:
            cv, ch = self.cond(labels)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + cv, h_pre + ch
        h_new = self.h_out(self.dropout(gate(h_pre)))
        return gate(v_pre), h_new if self.first else h + h_new


class GatedPixelCNN(nn.Module):
    """Categorical logits per pixel and channel, each depending only on what comes before it."""

    def __init__(self, channels: int, categories: int, hidden: int = 64, layers: int = 8, kernel: int = 3,
                 num_classes: int = 0, embed: bool = False, dropout: float = 0.0):
        super().__init__()
        if hidden % channels:
            raise UserError(f"PixelCNN hidden={hidden}: must be a multiple of channels={channels} "
                            "(a feature group per channel)")
        if kernel % 2 == 0 or kernel < 3:
            raise UserError(f"PixelCNN kernel={kernel}: use an odd size >= 3")
        self.channels, self.categories, self.num_classes = channels, categories, num_classes
        # Code maps have no order among their indices: embed them. Pixel levels do: feed them as numbers.
        self.embed = nn.Embedding(categories, hidden // channels) if embed else None
        in_width = hidden // channels if embed else 1
        in_groups = torch.arange(channels).repeat_interleave(in_width)
        self.layers = nn.ModuleList(
            GatedLayer(in_groups if i == 0 else channel_groups(hidden, channels), hidden, kernel, channels,
                       first=i == 0, num_classes=num_classes, dropout=dropout)
            for i in range(layers))
        groups = channel_groups(hidden, channels)
        self.head = nn.Sequential(
            nn.ReLU(), CenterMaskedConv(groups, groups, 1, "B"), nn.ReLU(),
            CenterMaskedConv(groups, torch.arange(channels).repeat_interleave(categories), 1, "B"))

    def inputs(self, k: torch.Tensor) -> torch.Tensor:
        if self.embed is None:
            return from_levels(k, self.categories) if self.categories > 1 else k.float()
        n, c, h, w = k.shape
        return self.embed(k).permute(0, 1, 4, 2, 3).reshape(n, -1, h, w)  # channel-major, as in_groups

    def forward(self, k: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and labels is None:
            raise ValueError("this PixelCNN is class-conditional: pass labels")
        labels = labels if self.num_classes else None
        x = self.inputs(k)
        v = h = x
        for layer in self.layers:
            v, h = layer(v, h, labels)
        n, _, height, width = k.shape
        logits = self.head(h).view(n, self.channels, self.categories, height, width)
        return logits.transpose(1, 2)  # (N, K, C, H, W): cross_entropy's class axis second

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, int, int], generator: torch.Generator | None = None,
               labels: torch.Tensor | None = None, temperature: float = 1.0) -> torch.LongTensor:
        """Pixel by pixel in raster order, channel by channel within a pixel; (N, C, H, W) indices on the CPU."""
        device = next(self.parameters()).device
        c, height, width = shape
        k = torch.zeros(n, c, height, width, dtype=torch.long, device=device)
        labels = labels.to(device) if labels is not None else None
        for i in range(height):
            for j in range(width):
                for ch in range(c):
                    logits = self(k, labels)[:, :, ch, i, j].float().cpu() / temperature
                    probs = torch.softmax(logits, dim=1)
                    k[:, ch, i, j] = torch.multinomial(probs, 1, generator=generator).squeeze(1).to(device)
        return k.cpu()
