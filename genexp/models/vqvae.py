"""VQ-VAE networks (van den Oord et al. 2017): a conv encoder, a vector quantiser, a conv decoder.

The encoder and decoder follow the paper's shape (strided 4x4 convs, then residual 3x3-1x1 blocks;
the mirror image back) as in Razavi's Sonnet example. The quantiser snaps each encoder vector to its
nearest codebook entry and passes gradients straight through. Its codebook learns either by a loss
(``ema=False``: ||sg[z_e] - e||^2, the paper's eq. 3 middle term) or by exponential moving averages
of the vectors assigned to each code (``ema=True``, the paper's appendix A.1). Codes that stop being
chosen are restarted on encoder outputs of the current batch (Dhariwal et al. 2020, Jukebox), so the
codebook does not shrink to the few entries the first steps happened to pick.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from genexp import distributed


class Residual(nn.Module):
    """ReLU, 3x3 conv, ReLU, 1x1 conv, added to the input (the paper's residual block)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.block = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def stride_widths(hidden: int, downsamples: int) -> list[int]:
    """Channels after each stride-2 conv: half width until the last (Sonnet's encoder)."""
    return [hidden // 2] * (downsamples - 1) + [hidden]


def check_shape(resolution: int, downsamples: int) -> None:
    if downsamples < 1 or resolution % (2 ** downsamples):
        raise ValueError(f"resolution {resolution} does not halve {downsamples} times into whole pixels: "
                         "set model.downsamples so that 2**downsamples divides the resolution")


class Encoder(nn.Module):
    """x (N, C, H, W) -> z_e (N, dim, H / 2^downsamples, W / 2^downsamples)."""

    def __init__(self, channels: int, resolution: int, dim: int = 64, hidden: int = 128, residual_hidden: int = 32,
                 residual_blocks: int = 2, downsamples: int = 2):
        super().__init__()
        check_shape(resolution, downsamples)
        layers: list[nn.Module] = []
        width = channels
        for out in stride_widths(hidden, downsamples):
            layers += [nn.Conv2d(width, out, 4, stride=2, padding=1), nn.ReLU()]
            width = out
        layers.append(nn.Conv2d(hidden, hidden, 3, padding=1))
        layers += [Residual(hidden, residual_hidden) for _ in range(residual_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(hidden, dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """z_q (N, dim, h, w) -> x_hat (N, C, h * 2^downsamples, w * 2^downsamples), unbounded (the
    reconstruction loss compares it with x in [-1, 1]; reconstructions are clamped)."""

    def __init__(self, channels: int, resolution: int, dim: int = 64, hidden: int = 128, residual_hidden: int = 32,
                 residual_blocks: int = 2, downsamples: int = 2):
        super().__init__()
        check_shape(resolution, downsamples)
        layers: list[nn.Module] = [nn.Conv2d(dim, hidden, 3, padding=1)]
        layers += [Residual(hidden, residual_hidden) for _ in range(residual_blocks)]
        layers.append(nn.ReLU())
        widths = stride_widths(hidden, downsamples)[::-1] + [channels]
        for i in range(downsamples):
            layers.append(nn.ConvTranspose2d(widths[i], widths[i + 1], 4, stride=2, padding=1))
            if i < downsamples - 1:
                layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class Quantized(NamedTuple):
    z_q: torch.Tensor  # (N, D, h, w): the codes' vectors, with the straight-through gradient to z_e
    codes: torch.Tensor  # (N, h, w) int64
    commit: torch.Tensor  # ||z_e - sg[e]||^2, mean over elements (weighted by beta in the loss)
    codebook: torch.Tensor  # ||sg[z_e] - e||^2 (zero with EMA updates: the codebook takes no gradient)


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantisation onto ``codes`` vectors of size ``dim``.

    EMA updates (``update``), per code i with n_i vectors assigned in the batch:
        N_i <- decay N_i + (1 - decay) n_i
        m_i <- decay m_i + (1 - decay) sum of the z_e assigned to i
        e_i  = m_i / N~_i,   N~_i = (N_i + eps) / (sum_j N_j + K eps) * sum_j N_j   (Laplace smoothing)
    Smoothing keeps e_i finite when N_i is tiny. The first update sets every e_i to an encoder output of
    the batch, m_i = e_i and N_i = 1, so e = m / N~ holds from then on and no bias correction is needed.
    N doubles as the usage record for restarts in both modes: a code whose N_i falls below
    ``restart_threshold`` (assignments per batch, averaged) takes a random encoder output of the current
    batch and counts as used once (N_i = 1, m_i = e_i).
    """

    def __init__(self, codes: int = 512, dim: int = 64, ema: bool = True, decay: float = 0.99, eps: float = 1e-5,
                 restart_threshold: float = 0.5):
        super().__init__()
        if codes < 2 or dim < 1:
            raise ValueError(f"a codebook needs at least 2 codes of size >= 1, not codes={codes} dim={dim}")
        if not 0.0 <= restart_threshold < 1.0:
            raise ValueError(f"restart_threshold={restart_threshold}: an average count in [0, 1) (0: no restarts); "
                             "codes start at 1")
        self.codes, self.dim, self.ema = int(codes), int(dim), bool(ema)
        self.decay, self.eps, self.restart_threshold = float(decay), float(eps), float(restart_threshold)
        init = torch.empty(codes, dim).uniform_(-1.0 / codes, 1.0 / codes)
        if self.ema:
            self.register_buffer("embedding", init)
            self.register_buffer("embed_sum", init.clone())
        else:
            self.embedding = nn.Parameter(init)
        self.register_buffer("cluster_size", torch.ones(codes))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    def nearest(self, flat: torch.Tensor) -> torch.Tensor:
        """(M, D) -> (M,) index of the closest code (squared Euclidean distance)."""
        e = self.embedding.detach()
        dist = flat.pow(2).sum(1, keepdim=True) - 2 * flat @ e.t() + e.pow(2).sum(1)[None]
        return dist.argmin(1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """(N, h, w) code indices -> (N, D, h, w) vectors."""
        return F.embedding(codes, self.embedding).permute(0, 3, 1, 2)

    def forward(self, z_e: torch.Tensor) -> Quantized:
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, self.dim)
        codes = self.nearest(flat.detach()).view(z_e.shape[0], *z_e.shape[2:])
        e = self.lookup(codes)
        commit = F.mse_loss(z_e, e.detach())
        codebook = z_e.new_zeros(()) if self.ema else F.mse_loss(e, z_e.detach())
        return Quantized(z_e + (e - z_e).detach(), codes, commit, codebook)

    @torch.no_grad()
    def update(self, z_e: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """One training step's codebook update (EMA) and restart of unused codes, from this batch;
        returns how many codes were restarted."""
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim).float()
        # One-hot matmuls rather than index_add / bincount: deterministic on every device.
        one_hot = F.one_hot(codes.reshape(-1), self.codes).to(flat.dtype)
        # Data-parallel: statistics of the global batch, so every rank keeps the same codebook.
        counts = distributed.all_sum_(one_hot.sum(0))
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        if self.ema:
            sums = distributed.all_sum_(one_hot.t() @ flat)
            self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
            total = self.cluster_size.sum()
            smoothed = (self.cluster_size + self.eps) / (total + self.codes * self.eps) * total
            self.embedding.copy_(self.embed_sum / smoothed[:, None])
        return self.restart(flat)

    def restart(self, flat: torch.Tensor) -> torch.Tensor:
        # A candidate for every code, used only where the code is dead: no host sync, and the same
        # random draws every step whatever the codebook's state (a resumed run replays them).
        # The first update puts every code on an encoder output (Jukebox's init): a random codebook
        # far from the encoder's outputs would hand all of them to one code.
        dead = ((self.cluster_size < self.restart_threshold) | ~self.initialized)[:, None]
        picks = flat[torch.randint(len(flat), (self.codes,), device=flat.device)].to(self.embedding.dtype)
        distributed.broadcast_(picks)  # rank 0's encoder outputs restart the codes on every rank
        self.embedding.data.copy_(torch.where(dead, picks, self.embedding.data))
        if self.ema:
            self.embed_sum.copy_(torch.where(dead, picks, self.embed_sum))
        self.cluster_size.copy_(torch.where(dead[:, 0], torch.ones_like(self.cluster_size), self.cluster_size))
        restarted = dead.sum() * self.initialized  # the initialisation is not a restart
        self.initialized.fill_(True)
        return restarted


def usage_and_perplexity(codes: torch.Tensor, num_codes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of the codebook used in ``codes``, and exp(entropy) of their frequencies (the number of
    equally used codes that would give the same entropy: num_codes at best, 1 at collapse)."""
    counts = F.one_hot(codes.reshape(-1), num_codes).sum(0).float()
    p = counts / counts.sum()
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return (counts > 0).float().mean(), entropy.exp()


def latent_side(resolution: int, downsamples: int) -> int:
    check_shape(resolution, downsamples)
    return resolution // (2 ** downsamples)

