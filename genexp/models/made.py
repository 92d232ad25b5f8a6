"""MADE (Germain et al. 2015): an MLP whose weight masks make output d depend only on inputs before d.

Every input dimension gets a place in an ordering (its degree 1..D); every hidden unit a degree in
1..D-1 and sees only units of degree <= its own; output d sees only degrees < d's. Categorical values
enter one-hot (K units per dimension, sharing its degree; ``inputs=onehot``) or as one number per dimension
(``inputs=level``: the level scaled to [-1, 1], for ordered values such as pixel intensities) and leave
as K logits per dimension.

Several masks (orderings and connectivities, drawn from ``seed``) train one set of weights, one mask
per step; the model scored and sampled is their equal mixture, p(x) = mean_m p_m(x), which is a proper
distribution, so its NLL is exact (the paper's order-agnostic ensemble).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from genexp.data.discrete import from_levels
from genexp.errors import UserError


def make_ordering(dims: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Each dimension's place in the order, 1..D."""
    if kind == "natural":
        return torch.arange(1, dims + 1)
    if kind == "random":
        return torch.randperm(dims, generator=generator) + 1
    raise UserError(f"model.net.ordering={kind}: use natural or random")


def hidden_degrees(units: int, below: torch.Tensor, dims: int, kind: str, generator: torch.Generator) -> torch.Tensor:
    """Degrees of a hidden layer: ``random`` draws each from [min of the layer below, D-1] (the paper's);
    ``even`` spreads them evenly over 1..D-1, so every degree has units."""
    if kind == "random":
        low = int(below.min().clamp(max=dims - 1))
        return torch.randint(low, dims, (units,), generator=generator)
    if kind == "even":
        return torch.arange(units) % (dims - 1) + 1
    raise UserError(f"model.net.connectivity={kind}: use random or even")


class MADE(nn.Module):
    """Logits (N, K, *shape) of categorical values k (N, *shape) in [0, K), autoregressive in a flat order."""

    def __init__(self, shape: list[int], categories: int, hidden: tuple[int, ...] = (1024,), num_masks: int = 1,
                 ordering: str = "natural", connectivity: str = "random", seed: int = 0, direct: bool = True,
                 num_classes: int = 0, dropout: float = 0.0, inputs: str = "onehot"):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        self.dims, self.categories = math.prod(self.shape), int(categories)
        self.num_masks, self.num_classes = int(num_masks), int(num_classes)
        if self.dims < 2:
            raise UserError(f"model.net.shape={list(shape)}: MADE needs at least 2 dimensions")
        if not hidden:
            raise UserError("model.net.hidden=[]: MADE needs at least one hidden layer")
        if self.num_masks < 1:
            raise UserError(f"model.net.num_masks={num_masks}: needs at least one")
        if inputs not in ("onehot", "level"):
            raise UserError(f"model.net.inputs={inputs}: use onehot or level")
        self.input_width = self.categories if inputs == "onehot" else 1
        sizes = [self.dims * self.input_width, *(int(h) for h in hidden)]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.out = nn.Linear(sizes[-1], self.dims * self.categories)
        self.direct = nn.Linear(sizes[0], self.dims * self.categories, bias=False) if direct else None
        self.dropout = nn.Dropout(dropout)
        self.cond = nn.Embedding(num_classes, sizes[1]) if num_classes else None
        if self.cond is not None:
            nn.init.zeros_(self.cond.weight)  # start unconditional; the label's bias is learnt
        # Degrees are buffers, saved with the weights: a checkpoint keeps its masks whatever RNG changes.
        g = torch.Generator().manual_seed(int(seed))
        orders, per_layer = [], [[] for _ in hidden]
        for _ in range(self.num_masks):
            # With a natural order, several masks differ in connectivity only.
            order = make_ordering(self.dims, ordering, g)
            orders.append(order)
            below = order
            for layer, units in enumerate(hidden):
                below = hidden_degrees(int(units), below, self.dims, connectivity, g)
                per_layer[layer].append(below)
        self.register_buffer("order", torch.stack(orders))
        for layer, degrees in enumerate(per_layer):
            self.register_buffer(f"degrees{layer}", torch.stack(degrees))

    def masks(self, m: int) -> list[torch.Tensor]:
        """The masks of mask set m: one per hidden layer, then the output's and the direct connection's."""
        inputs = self.order[m].repeat_interleave(self.input_width)  # one-hot units share their dimension's degree
        outputs = self.order[m].repeat_interleave(self.categories)
        degrees = [inputs] + [getattr(self, f"degrees{layer}")[m] for layer in range(len(self.layers))]
        hidden = [(d_out[:, None] >= d_in[None, :]).float() for d_in, d_out in zip(degrees[:-1], degrees[1:])]
        out = (outputs[:, None] > degrees[-1][None, :]).float()
        direct = (outputs[:, None] > inputs[None, :]).float()
        return [*hidden, out, direct]

    def forward(self, k: torch.Tensor, labels: torch.Tensor | None = None, mask: int = 0) -> torch.Tensor:
        if self.num_classes and labels is None:
            raise ValueError("this MADE is class-conditional: pass labels")
        n = len(k)
        k_flat = k.reshape(n, self.dims)
        x = F.one_hot(k_flat, self.categories).float().reshape(n, -1) if self.input_width > 1 else \
            from_levels(k_flat, self.categories)
        logits = self.masked_mlp(x, labels, mask)
        return logits.view(n, self.dims, self.categories).transpose(1, 2).reshape(n, self.categories, *k.shape[1:])

    def masked_mlp(self, x: torch.Tensor, labels: torch.Tensor | None, mask: int) -> torch.Tensor:
        """Inputs (N, D*width), dimension-major -> logits (N, D*K), dimension-major."""
        *hidden_masks, out_mask, direct_mask = self.masks(mask)
        h = x
        for i, (layer, w_mask) in enumerate(zip(self.layers, hidden_masks)):
            h = F.linear(h, layer.weight * w_mask, layer.bias)
            if i == 0 and self.cond is not None:
                h = h + self.cond(labels)
            h = self.dropout(F.relu(h))
        logits = F.linear(h, self.out.weight * out_mask, self.out.bias)
        if self.direct is not None:
            logits = logits + F.linear(x, self.direct.weight * direct_mask)
        return logits

    def log_prob(self, k: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """log p(k) (N,) of the mixture over every mask set."""
        per_mask = torch.stack([-F.cross_entropy(self(k, labels, m), k, reduction="none").flatten(1).sum(1)
                                for m in range(self.num_masks)])
        return torch.logsumexp(per_mask, 0) - math.log(self.num_masks)

    @torch.no_grad()
    def sample(self, n: int, shape: tuple[int, ...], generator: torch.Generator | None = None,
               labels: torch.Tensor | None = None, temperature: float = 1.0) -> torch.LongTensor:
        """Dimension by dimension in each sample's mask order (a mask drawn per sample); indices on the CPU."""
        if math.prod(shape) != self.dims:
            raise ValueError(f"shape={tuple(shape)} has {math.prod(shape)} values and this MADE {self.dims}")
        device = next(self.parameters()).device
        which = torch.randint(self.num_masks, (n,), generator=generator)
        k = torch.zeros(n, self.dims, dtype=torch.long, device=device)
        labels = labels.to(device) if labels is not None else None
        for m in range(self.num_masks):
            rows = (which == m).nonzero().squeeze(1).to(device)
            if not len(rows):
                continue
            sub_labels = labels[rows] if labels is not None else None
            for d in self.order[m].argsort().tolist():  # dimensions from first to last in this order
                logits = self(k[rows], sub_labels, m)[:, :, d].float().cpu() / temperature
                drawn = torch.multinomial(torch.softmax(logits, 1), 1, generator=generator).squeeze(1)
                k[rows, d] = drawn.to(device)
        return k.view(n, *shape).cpu()
