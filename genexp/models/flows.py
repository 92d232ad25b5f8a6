"""Normalizing flows for images: invertible layers with exact log-determinants, assembled into RealNVP-
(Dinh et al. 2017) and Glow-style (Kingma & Dhariwal 2018) multi-scale networks.

Every layer maps ``x -> (y, logdet)``, logdet being the per-example log |det dy/dx| of shape (N,), and
has ``inverse(y) -> x``. A multi-scale flow factors out half of its channels after each scale but the
last; each factored-out half gets a Gaussian prior whose mean and scale are predicted from the half that
stays (Glow's split prior), the last scale's output a standard normal prior.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from genexp.errors import UserError

LOG_2PI = math.log(2 * math.pi)


def gaussian_log_prob(z: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log N(z; mean, exp(log_std)^2) summed over all but the batch dimension."""
    return (-0.5 * (LOG_2PI + 2 * log_std + ((z - mean) * torch.exp(-log_std)) ** 2)).flatten(1).sum(1)


class ZeroConv(nn.Conv2d):
    """A 3x3 conv that starts at zero, so each coupling (and each split prior) starts as the identity
    (and as a standard normal): deep flows then train from a well-conditioned start (Glow sec. 3.3)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(in_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class ActNorm(nn.Module):
    """Per-channel affine y = (x + b) * exp(s), initialised from the first training batch so that y has
    zero mean and unit variance per channel (Glow sec. 3.1): batch norm without batch statistics."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))
        self._ready = False  # a Python copy of `initialized`: reading the buffer each step would sync the GPU

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = False  # re-read the loaded flag on the next call

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._ready:
            self._ready = bool(self.initialized)
            if not self._ready and self.training:
                self.initialize(x)
        logdet = self.log_scale.sum() * (x.shape[2] * x.shape[3])
        return (x + self.bias) * torch.exp(self.log_scale), logdet.expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return y * torch.exp(-self.log_scale) - self.bias

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        mean = x.mean((0, 2, 3), keepdim=True)
        std = x.std((0, 2, 3), keepdim=True) if x[:, 0].numel() > 1 else torch.ones_like(mean)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + 1e-6))
        self.initialized.fill_(True)
        self._ready = True


class InvConv1x1(nn.Module):
    """Invertible 1x1 convolution, a learned channel permutation (Glow sec. 3.2). With ``lu``, W = P L (U +
    diag(sign s * exp(log s))) so log|det W| = sum(log s) costs O(C) instead of a determinant."""

    def __init__(self, channels: int, lu: bool = True):
        super().__init__()
        self.lu = bool(lu)
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # a random rotation: log|det| = 0 at start
        if not self.lu:
            self.weight = nn.Parameter(w)
            return
        p, lower, upper = torch.linalg.lu(w)
        s = upper.diagonal()
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(torch.abs(s)))

    def weight_matrix(self) -> torch.Tensor:
        if not self.lu:
            return self.weight
        lower = self.lower * self.lower_mask + self.eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weight_matrix()
        log_abs_det = self.log_s.sum() if self.lu else torch.linalg.slogdet(w)[1]
        y = F.conv2d(x, w.view(*w.shape, 1, 1))
        return y, (log_abs_det * (x.shape[2] * x.shape[3])).expand(len(x))

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        w_inv = torch.linalg.inv(self.weight_matrix().double()).to(y.dtype)
        return F.conv2d(y, w_inv.view(*w_inv.shape, 1, 1))


def checkerboard(height: int, width: int, parity: int, device=None) -> torch.Tensor:
    """(1, 1, H, W) mask of ones where (i + j + parity) is even."""
    i = torch.arange(height, device=device).view(-1, 1)
    j = torch.arange(width, device=device).view(1, -1)
    return ((i + j + parity) % 2 == 0).float().view(1, 1, height, width)


class AffineCoupling(nn.Module):
    """One part of x passes unchanged and predicts a scale and shift for the other part (RealNVP sec. 3.3).

    ``mask``: ``channel`` splits the channels in halves (``parity`` picks which half is changed);
    ``checkerboard`` alternates pixels. ``scale``: ``tanh`` is RealNVP's log-scale s * tanh(h) with a learned
    per-channel s; ``sigmoid`` is Glow's scale sigmoid(h + 2), which can only shrink and so stays stable.
    """

    def __init__(self, channels: int, hidden: int, mask: str = "channel", parity: int = 0, scale: str = "sigmoid"):
        super().__init__()
        if mask not in ("channel", "checkerboard"):
            raise UserError(f"coupling mask={mask}: use channel or checkerboard")
        if scale not in ("tanh", "sigmoid"):
            raise UserError(f"coupling scale={scale}: use tanh (RealNVP) or sigmoid (Glow)")
        if mask == "channel" and channels < 2:
            raise ValueError("a channel coupling needs at least 2 channels: squeeze first")
        self.mask, self.parity, self.scale = mask, int(parity) % 2, scale
        if mask == "channel":
            self.kept = channels // 2 if self.parity == 0 else channels - channels // 2
            n_in, n_out = self.kept, channels - self.kept
        else:
            n_in, n_out = channels, channels
        self.net = nn.Sequential(nn.Conv2d(n_in, hidden, 3, padding=1), nn.ReLU(),
                                 nn.Conv2d(hidden, hidden, 1), nn.ReLU(), ZeroConv(hidden, 2 * n_out))
        if scale == "tanh":
            self.tanh_scale = nn.Parameter(torch.ones(1, n_out, 1, 1))

    def _scale_shift(self, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.net(cond)
        raw, shift = h[:, 0::2], h[:, 1::2]
        if self.scale == "tanh":
            return self.tanh_scale * torch.tanh(raw), shift
        return F.logsigmoid(raw + 2.0), shift

    def _parts(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(passed, changed) for a channel mask."""
        a, b = x[:, :self.kept], x[:, self.kept:]
        return (a, b) if self.parity == 0 else (x[:, x.shape[1] - self.kept:], x[:, :x.shape[1] - self.kept])

    def _join(self, passed: torch.Tensor, changed: torch.Tensor) -> torch.Tensor:
        return torch.cat([passed, changed] if self.parity == 0 else [changed, passed], 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.mask == "channel":
            passed, changed = self._parts(x)
            log_s, shift = self._scale_shift(passed)
            y = self._join(passed, self._affine(changed, log_s, shift))
            return y, log_s.flatten(1).sum(1)
        m = checkerboard(x.shape[2], x.shape[3], self.parity, x.device)
        log_s, shift = self._scale_shift(x * m)
        log_s, shift = log_s * (1 - m), shift * (1 - m)
        return x * m + (1 - m) * self._affine(x, log_s, shift), log_s.flatten(1).sum(1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        if self.mask == "channel":
            passed, changed = self._parts(y)
            log_s, shift = self._scale_shift(passed)
            return self._join(passed, self._unaffine(changed, log_s, shift))
        m = checkerboard(y.shape[2], y.shape[3], self.parity, y.device)
        log_s, shift = self._scale_shift(y * m)
        log_s, shift = log_s * (1 - m), shift * (1 - m)
        return y * m + (1 - m) * self._unaffine(y, log_s, shift)

    # RealNVP scales then shifts; Glow shifts then scales (its code's order). Either is invertible.
    def _affine(self, x, log_s, shift):
        return x * torch.exp(log_s) + shift if self.scale == "tanh" else (x + shift) * torch.exp(log_s)

    def _unaffine(self, y, log_s, shift):
        return (y - shift) * torch.exp(-log_s) if self.scale == "tanh" else y * torch.exp(-log_s) - shift


class Squeeze(nn.Module):
    """Space to depth: (C, H, W) -> (4C, H/2, W/2), each 2x2 block into channels. Volume-preserving."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, h, w = x.shape
        y = x.view(n, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(n, 4 * c, h // 2, w // 2)
        return y, x.new_zeros(n)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        n, c, h, w = y.shape
        return y.view(n, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3).reshape(n, c // 4, 2 * h, 2 * w)


class SplitPrior(nn.Module):
    """Factors out the second half of the channels; its Gaussian prior's mean and log-scale come from the
    first half (Glow's split), which a ZeroConv makes a standard normal at the start."""

    def __init__(self, channels: int):
        super().__init__()
        self.kept = channels // 2
        self.conv = ZeroConv(self.kept, 2 * (channels - self.kept))

    def prior(self, kept: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.conv(kept)
        return h[:, 0::2], h[:, 1::2]


Draw = Callable[[int, torch.Tensor, torch.Tensor], torch.Tensor]
Prior = tuple[torch.Tensor, torch.Tensor]  # mean, log-scale


class MultiScaleFlow(nn.Module):
    """Scales of invertible layers; after each scale but the last, half the channels leave with a split
    prior. ``encode`` is the bijection (x -> every z, exact log-det), ``decode`` its inverse."""

    def __init__(self, scales: list[list[nn.Module]], splits: list[SplitPrior], out_shape: tuple[int, int, int]):
        super().__init__()
        self.scales = nn.ModuleList(nn.ModuleList(layers) for layers in scales)
        self.splits = nn.ModuleList(splits)
        self.out_shape = out_shape  # (C, H, W) of the last scale's z

    def encode(self, x: torch.Tensor) -> tuple[list[torch.Tensor], list[Prior], torch.Tensor]:
        """(zs, priors, logdet): the factored-out halves and the last z, each one's prior (mean, log-scale),
        and the log-determinant of x -> zs per example."""
        logdet = x.new_zeros(len(x))
        zs, priors = [], []
        h = x
        for i, layers in enumerate(self.scales):
            for layer in layers:
                h, ld = layer(h)
                logdet = logdet + ld
            if i < len(self.splits):
                split = self.splits[i]
                h, z = h[:, :split.kept], h[:, split.kept:]
                zs.append(z)
                priors.append(split.prior(h))
        zs.append(h)
        priors.append((torch.zeros_like(h), torch.zeros_like(h)))
        return zs, priors, logdet

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) per example, in nats: prior log-density of every z plus the log-determinant."""
        zs, priors, logdet = self.encode(x)
        return logdet + sum(gaussian_log_prob(z, mean, log_std) for z, (mean, log_std) in zip(zs, priors))

    def decode(self, draw: Draw, n: int, device: torch.device) -> torch.Tensor:
        """Inverse pass; ``draw(i, mean, log_std)`` gives the i-th z (i as in encode) from its prior."""
        last = len(self.scales) - 1
        zeros = torch.zeros(n, *self.out_shape, device=device, dtype=self.param_dtype())
        h = draw(last, zeros, zeros)
        for i in range(last, -1, -1):
            if i < len(self.splits):
                mean, log_std = self.splits[i].prior(h)
                h = torch.cat([h, draw(i, mean, log_std)], 1)
            for layer in reversed(self.scales[i]):
                h = layer.inverse(h)
        return h

    def param_dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def inverse(self, zs: list[torch.Tensor]) -> torch.Tensor:
        return self.decode(lambda i, mean, log_std: zs[i], len(zs[-1]), zs[-1].device)

    def sample(self, n: int, temperature: float = 1.0, generator: torch.Generator | None = None,
               device: torch.device | None = None) -> torch.Tensor:
        """Every prior's scale times ``temperature`` (Glow sec. 5: below 1 trades diversity for quality).
        Noise drawn on the CPU from ``generator`` when given, so a seed means the same samples anywhere."""
        device = device or next(self.parameters()).device

        def draw(i, mean, log_std):
            eps = (torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(device) if generator is not None
                   else torch.randn_like(mean))
            return mean + torch.exp(log_std) * temperature * eps

        return self.decode(draw, n, device)


def check_scales(resolution: int, scales: int) -> None:
    if scales < 1:
        raise UserError(f"model.flow.scales={scales}: a flow needs at least one scale")
    if resolution % (2 ** scales):
        raise UserError(f"model.flow.scales={scales} squeezes {resolution}px images {scales} times, which needs "
                        f"a resolution divisible by {2 ** scales}: lower model.flow.scales")


def realnvp(channels: int, resolution: int, scales: int = 2, couplings: int = 3, hidden: int = 64,
            scale: str = "tanh") -> MultiScaleFlow:
    """RealNVP's multi-scale architecture: per scale, ``couplings`` checkerboard couplings, a squeeze,
    ``couplings`` channel couplings (masks alternating), then a split. Actnorm after each coupling stands in
    for the paper's batch norm (batch statistics would make eval depend on the batch)."""
    check_scales(resolution, scales)
    c, r = channels, resolution
    all_layers, splits = [], []
    for i in range(scales):
        layers: list[nn.Module] = []
        for k in range(couplings):
            layers += [AffineCoupling(c, hidden, "checkerboard", k, scale), ActNorm(c)]
        layers.append(Squeeze())
        c, r = 4 * c, r // 2
        for k in range(couplings):
            layers += [AffineCoupling(c, hidden, "channel", k, scale), ActNorm(c)]
        all_layers.append(layers)
        if i < scales - 1:
            splits.append(SplitPrior(c))
            c = splits[-1].kept
    return MultiScaleFlow(all_layers, splits, (c, r, r))


def glow(channels: int, resolution: int, scales: int = 2, steps: int = 8, hidden: int = 128, lu: bool = True,
         scale: str = "sigmoid") -> MultiScaleFlow:
    """Glow: per scale a squeeze, then ``steps`` steps of actnorm -> invertible 1x1 conv -> affine coupling,
    then a split (Kingma & Dhariwal 2018, fig. 2)."""
    check_scales(resolution, scales)
    c, r = channels, resolution
    all_layers, splits = [], []
    for i in range(scales):
        c, r = 4 * c, r // 2
        layers: list[nn.Module] = [Squeeze()]
        for _ in range(steps):
            layers += [ActNorm(c), InvConv1x1(c, lu), AffineCoupling(c, hidden, "channel", 0, scale)]
        all_layers.append(layers)
        if i < scales - 1:
            splits.append(SplitPrior(c))
            c = splits[-1].kept
    return MultiScaleFlow(all_layers, splits, (c, r, r))
