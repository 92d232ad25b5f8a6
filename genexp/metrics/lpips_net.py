"""LPIPS (Zhang et al. 2018) in plain torch, on images in [-1, 1]: no torchvision.

d(a, b) = sum over tapped layers l of mean over positions of w_l . (u(f_l(a)) - u(f_l(b)))^2, where
f_l is layer l of an ImageNet backbone (metrics/lpips_backbones.py) fed the input shifted and scaled
by LPIPS's constants, u divides each position's feature vector by its norm, and w_l are the learned
linear heads. As the official code (richzhang/PerceptualSimilarity, v0.1). The backbone comes from
torchvision's ImageNet weight file (a path, or torch hub's cache, downloaded there when online); the
heads from the files torchmetrics ships (lpips_models/{alex,vgg,squeeze}.pth).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from genexp.metrics.extractors import (
    MetricUnavailable,
    WeightsError,
    check_state_dict,
    locate_weights,
    read_state_dict,
)
from genexp.metrics.lpips_backbones import SPECS, Backbone
from genexp.metrics.resize import resize
from genexp.metrics.rng import BUILD_SEED, own_rng

NETS = tuple(SPECS)
# The official ScalingLayer: the ImageNet mean and std, expressed for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # the official normalize_tensor's: x / (|x| + eps)
# Images smaller than a backbone's minimum input are upsampled to this side (torchmetrics' PPL default).
SMALL_IMAGE_SIZE = 64


def rgb(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def unit(x: torch.Tensor) -> torch.Tensor:
    """Each position's channel vector divided by its length."""
    return x / (x.square().sum(1, keepdim=True).sqrt() + EPS)


class LPIPS(nn.Module):
    """(a, b) images in [-1, 1], (N, 1 or 3, H, W) -> LPIPS distance per pair, (N,).

    ``size``: the side images are resized to first (area when shrinking, bilinear when growing, as
    torch-fidelity's and torchmetrics' LPIPS resize); None keeps them, except images smaller than the
    backbone can see, which go to SMALL_IMAGE_SIZE."""

    def __init__(self, net: str, size: int | None = None):
        super().__init__()
        spec = SPECS[net]
        self.net, self.size, self.min_size = net, size, spec.min_size
        self.backbone = Backbone(net)
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in spec.channels)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.eval().requires_grad_(False)

    def seen_size(self, side: int) -> int | None:
        """The side the backbone sees for images of ``side`` px; None when they go in as they are."""
        if self.size:
            return None if side == self.size else int(self.size)
        return SMALL_IMAGE_SIZE if side < self.min_size else None

    def train(self, mode: bool = True):  # a metric: dropout-free and frozen whatever its owner does
        return super().train(False)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        x = rgb(torch.cat([a, b]))
        side = self.seen_size(min(x.shape[-2:]))
        if side is not None:
            x = resize(x, side, "box" if x.shape[-1] > side else "bilinear")
        features = self.backbone((x - self.shift) / self.scale)
        total = 0
        for head, f in zip(self.heads, features):
            fa, fb = unit(f).chunk(2)
            total = total + head((fa - fb).square()).mean((2, 3))
        return total.flatten()


class LPIPSMetric(Metric):
    """Mean LPIPS over every pair given to update(), across data-parallel ranks."""

    higher_is_better = False
    full_state_update = False

    def __init__(self, net: LPIPS):
        super().__init__()
        self.net = net
        self.add_state("scores", default=[], dist_reduce_fx="cat")

    def update(self, a: torch.Tensor, b: torch.Tensor) -> None:
        self.scores.append(self.net(a, b))

    def compute(self) -> torch.Tensor:
        if not self.scores:  # no pair at all (one sample): no distance
            return torch.tensor(float("nan"))
        return dim_zero_cat(self.scores).cpu().double().mean().float()  # float64 on the CPU: every device has it


def build_lpips(net: str = "alex", weights: str | None = None, download: bool = True,
                setting: str = "metrics.lpips.weights", size: int | None = None) -> LPIPS:
    """The LPIPS network with ``net``'s backbone from ``weights`` (torchvision's ImageNet file; None: torch
    hub's cache, downloaded there unless ``download`` is false or GENEXP_OFFLINE=1) and the heads
    torchmetrics ships. ``setting``: the option that names the file, for the line a missing one gives.
    Missing files raise MetricUnavailable; a file that is not the backbone's, WeightsError (a UserError)."""
    if net not in SPECS:
        raise MetricUnavailable(f"LPIPS net={net}: use one of {', '.join(NETS)}")
    path = backbone_file(net, weights, download, setting)
    with own_rng(BUILD_SEED):  # the random initialisation the weights overwrite draws from no caller's stream
        model = LPIPS(net, size)
    state = {k: v for k, v in read_state_dict(path).items() if k.startswith("features.")}  # classifier: unused
    check_state_dict(state, model.backbone, path, f"torchvision's ImageNet {net} weights ({SPECS[net].file})")
    model.backbone.load_state_dict(state)
    load_heads(model)
    return model.eval().requires_grad_(False)


def lpips_metric(net: str = "alex", weights: str | None = None, download: bool = True,
                 setting: str = "metrics.lpips.weights", size: int | None = None) -> LPIPSMetric:
    """LPIPS as a torchmetrics Metric: update(a, b) with images in [-1, 1], compute() the mean."""
    return LPIPSMetric(build_lpips(net, weights, download, setting, size))


def backbone_file(net: str, weights: str | None, download: bool, setting: str) -> Path:
    """``weights``, else torch hub's cache (where torchvision keeps the same file), downloaded there once."""
    spec = SPECS[net]
    try:
        return locate_weights(weights, Path(torch.hub.get_dir()) / "checkpoints" / spec.file, spec.url,
                              f"LPIPS-{net} backbone", f"torchvision's {spec.file}", download)
    except MetricUnavailable as exc:  # locate_weights names the metrics' option: say the one that sets this file
        raise MetricUnavailable(str(exc).replace("metrics.<name>.weights", setting)) from None


def heads_file(net: str) -> Path:
    return Path(str(resources.files("torchmetrics.functional.image").joinpath("lpips_models", f"{net}.pth")))


def load_heads(model: LPIPS) -> None:
    """The learned linear heads (``lin<k>.model.1.weight``, (1, C, 1, 1)) from torchmetrics' packaged file."""
    path = heads_file(model.net)
    if not path.is_file():
        raise MetricUnavailable(f"the LPIPS-{model.net} heads are missing at {path}: they ship with torchmetrics; "
                                "reinstall it (pip install --force-reinstall torchmetrics)")
    state = read_state_dict(path)  # torch.load(weights_only=True, map_location="cpu"): saved from a GPU
    for k, head in enumerate(model.heads):
        w = state.get(f"lin{k}.model.1.weight")
        if w is None or tuple(w.shape) != tuple(head.weight.shape):
            raise WeightsError(f"LPIPS heads {path}: lin{k}.model.1.weight is "
                               f"{'missing' if w is None else tuple(w.shape)} where the {model.net} net needs "
                               f"{tuple(head.weight.shape)}; reinstall torchmetrics")
        head.weight.data.copy_(w)
