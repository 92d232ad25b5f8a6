"""VAE networks: a Gaussian encoder x -> (mean, log-variance) of q(z|x) and a decoder z -> the
parameters of p(x|z), ``params_per_pixel`` numbers for every pixel (the likelihood in
methods/pixel_likelihood.py says how many it reads: 17 logits for a 17-way categorical, 1 logit for a
Bernoulli, mean and log-scale for a Gaussian).

Two shapes: MLPs on the flattened image (Tomczak's digits VAE) and a small conv pair (stride-2 convs
down while the size is even and above 4, transposed convs back up). A conditional VAE sees the one-hot
label beside the image in the encoder and beside z in the decoder.
"""

from __future__ import annotations

import torch
from torch import nn

from genexp.errors import UserError
from genexp.models.layers import with_one_hot

ACTIVATIONS = {"leaky_relu": lambda: nn.LeakyReLU(0.2), "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def activation_layer(name: str) -> type[nn.Module]:
    if name not in ACTIVATIONS:
        raise UserError(f"model activation={name}: use one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def mlp(d_in: int, hidden: int, layers: int, d_out: int, act: str, dropout: float = 0.0) -> nn.Sequential:
    if layers < 1 or hidden < 1:
        raise UserError(f"model hidden={hidden} layers={layers}: a VAE MLP needs at least one hidden layer")
    if not 0 <= dropout < 1:
        raise UserError(f"model.dropout={dropout}: use a probability in [0, 1)")
    dims = [d_in] + [hidden] * layers
    blocks: list[nn.Module] = []
    for a, b in zip(dims, dims[1:]):
        blocks += [nn.Linear(a, b), activation_layer(act)()] + ([nn.Dropout(dropout)] if dropout else [])
    blocks.append(nn.Linear(dims[-1], d_out))
    return nn.Sequential(*blocks)


class MLPEncoder(nn.Module):
    def __init__(self, resolution: int, channels: int, latent_dim: int, hidden: int = 256, layers: int = 2,
                 activation: str = "leaky_relu", num_classes: int = 0, dropout: float = 0.0):
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        self.net = mlp(channels * resolution * resolution + num_classes, hidden, layers, 2 * latent_dim, activation,
                       dropout)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_var = self.net(with_one_hot(x.flatten(1), labels, self.num_classes)).chunk(2, dim=1)
        return mean, log_var


class MLPDecoder(nn.Module):
    def __init__(self, resolution: int, channels: int, latent_dim: int, params_per_pixel: int, hidden: int = 256,
                 layers: int = 2, activation: str = "leaky_relu", num_classes: int = 0, dropout: float = 0.0):
        super().__init__()
        self.shape = (params_per_pixel, channels, resolution, resolution)
        self.num_classes = num_classes
        self.net = mlp(latent_dim + num_classes, hidden, layers, params_per_pixel * channels * resolution ** 2,
                       activation, dropout)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """(N, params_per_pixel, C, H, W)."""
        return self.net(with_one_hot(z, labels, self.num_classes)).view(len(z), *self.shape)


def halvings(resolution: int) -> int:
    """Stride-2 steps from the resolution down to a side of at most 4 (or an odd one: 28 -> 14 -> 7)."""
    n, side = 0, resolution
    while side > 4 and side % 2 == 0:
        side, n = side // 2, n + 1
    if n == 0:
        raise UserError(f"resolution {resolution}: the conv VAE needs an even resolution above 4 (e.g. 8, 28, 32)")
    return n


class ConvEncoder(nn.Module):
    def __init__(self, resolution: int, channels: int, latent_dim: int, base_channels: int = 32,
                 hidden: int = 256, layers: int = 1, activation: str = "leaky_relu", num_classes: int = 0,
                 dropout: float = 0.0):
        """``hidden`` x ``layers``: the MLP between the conv features and q(z|x)."""
        super().__init__()
        self.latent_dim, self.num_classes = latent_dim, num_classes
        act = activation_layer(activation)
        n = halvings(resolution)
        blocks: list[nn.Module] = [nn.Conv2d(channels, base_channels, 3, 1, 1), act()]
        width = base_channels
        for i in range(n):
            out = base_channels * 2 ** (i + 1)
            blocks += [nn.Conv2d(width, out, 4, 2, 1), act()]
            width = out
        self.convs = nn.Sequential(*blocks, nn.Flatten())
        features = width * (resolution // 2 ** n) ** 2
        self.head = mlp(features + num_classes, hidden, layers, 2 * latent_dim, activation, dropout)

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        h = with_one_hot(self.convs(x), labels, self.num_classes)
        mean, log_var = self.head(h).chunk(2, dim=1)
        return mean, log_var


class ConvDecoder(nn.Module):
    def __init__(self, resolution: int, channels: int, latent_dim: int, params_per_pixel: int,
                 base_channels: int = 32, hidden: int = 256, layers: int = 1, activation: str = "leaky_relu",
                 num_classes: int = 0, dropout: float = 0.0):
        """``hidden`` x ``layers``: the MLP from z to the smallest feature map."""
        super().__init__()
        self.num_classes, self.params_per_pixel, self.channels = num_classes, params_per_pixel, channels
        act = activation_layer(activation)
        n = halvings(resolution)
        self.side, self.width = resolution // 2 ** n, base_channels * 2 ** n
        self.head = nn.Sequential(mlp(latent_dim + num_classes, hidden, layers, self.width * self.side ** 2,
                                      activation, dropout), act())
        blocks: list[nn.Module] = []
        width = self.width
        for i in reversed(range(n)):
            out = base_channels * 2 ** i
            blocks += [nn.ConvTranspose2d(width, out, 4, 2, 1), act()]
            width = out
        blocks.append(nn.Conv2d(width, params_per_pixel * channels, 3, 1, 1))
        self.convs = nn.Sequential(*blocks)

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        h = self.head(with_one_hot(z, labels, self.num_classes)).view(len(z), self.width, self.side, self.side)
        out = self.convs(h)
        return out.view(len(z), self.params_per_pixel, self.channels, *out.shape[2:])
