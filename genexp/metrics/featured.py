"""What the metrics on extractor features share (fid, kid, is, pr): the extractor, the key, the
sample minimum, and torchmetrics' real-side states for the cache."""

from __future__ import annotations

import json

import torch
from omegaconf import OmegaConf
from torch import nn

from genexp.metrics.dinov2 import ARCHS
from genexp.metrics.dinov2 import STANDARD_RESIZE as DINOV2_RESIZE
from genexp.metrics.extractors import build_extractor, resolve_name
from genexp.metrics.registry import Context, MetricKind, count_label

STANDARD_RESIZE = {"inception": "tf1_bilinear", "digits_lenet": "bilinear", "mnist_lenet": "bilinear",
                   **dict.fromkeys(ARCHS, DINOV2_RESIZE)}


def build_features(cfg, ctx: Context, output: str) -> tuple[nn.Module, dict]:
    """The extractor ``cfg`` names, built once per suite: metrics that name the same network, weights and
    filter (FID, KID, PR and IS on one extractor) share one module and so one pass per image, which gives
    every output they read (features, logits) at once where the network has both (``extract``)."""
    name = resolve_name(cfg.get("extractor", "auto"), ctx.data_cfg.name)
    spec = OmegaConf.to_container(name, resolve=True) if OmegaConf.is_config(name) else name
    network = json.dumps([spec, cfg.get("weights"), cfg.get("resize")], sort_keys=True, default=str)
    shared = ctx.extractors.get(network)
    # A network with one output (a user's module, DINOv2) is built again for the other, which may refuse.
    same = network if shared is None or shared[0].gives(output) else \
        json.dumps([spec, output, cfg.get("weights"), cfg.get("resize")], sort_keys=True, default=str)
    if same not in ctx.extractors:
        module, ident = build_extractor(name, output, cfg.get("weights"), cfg.get("resize"),
                                        bool(cfg.get("download", True)), ctx.example())
        ctx.extractors[same] = SharedPass(module, output), ident
    shared_pass, ident = ctx.extractors[same]
    return shared_pass.reader(output), dict(ident)


class SharedPass(nn.Module):
    """An extractor read by several metrics: the suite hands each of them the same batch (or a leading
    slice of it), and a repeat gets the outputs of the last batch instead of another forward pass.

    Every output a reader was made for (features, logits) comes from that one pass (``extract``).
    The batch itself is kept with its outputs, not only its address, so no other tensor can take its memory
    while it is kept; and with its version then, since an in-place write (a sampler that refills one buffer)
    bumps the counter it shares with its views: kept outputs are never stale.
    A slice of the kept outputs is the slice's outputs because extractors (in eval mode) are per image."""

    def __init__(self, net: nn.Module, output: str):
        super().__init__()
        self.net, self.built_for = net, output
        self.wanted: list[str] = []
        self.kept: tuple[torch.Tensor, int, dict[str, torch.Tensor]] | None = None

    def gives(self, output: str) -> bool:
        return output == self.built_for or output in getattr(self.net, "sizes", {})

    def reader(self, output: str) -> Reader:
        if output not in self.wanted:
            self.wanted.append(output)
            self.kept = None  # kept outputs lack the new one
        sizes = getattr(self.net, "sizes", {self.built_for: self.net.num_features})
        return Reader(self, output, sizes[output])

    def read(self, x: torch.Tensor, output: str) -> torch.Tensor:
        if self.kept is not None and leading_slice(x, *self.kept[:2]):
            return self.kept[2][output][: len(x)]
        if hasattr(self.net, "extract"):
            outputs = self.net.extract(x, tuple(self.wanted))
        else:
            outputs = {self.built_for: self.net(x)}
        self.kept = (x, x._version, outputs)
        return outputs[output]


class Reader(nn.Module):
    """One output of a shared pass, as the extractor module of one torchmetrics metric."""

    def __init__(self, shared: SharedPass, output: str, num_features: int):
        super().__init__()
        self.shared, self.output, self.num_features = shared, output, num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shared.read(x, self.output)


def leading_slice(x: torch.Tensor, of: torch.Tensor, version: int) -> bool:
    """Is ``x`` the tensor ``of`` or its first rows, unwritten since ``of`` was at ``version``?"""
    return (x.device == of.device and x.dtype == of.dtype and x.shape[1:] == of.shape[1:] and len(x) <= len(of)
            and x.stride() == of.stride() and x.data_ptr() == of.data_ptr() and x._version == version)


def feature_key(prefix: str, ident: dict, n: int) -> str:
    # A filter other than the extractor's standard one shows in the key: the numbers differ.
    standard = STANDARD_RESIZE.get(ident["name"], ident["resize"])
    suffix = f"-{ident['resize']}" if ident["resize"] != standard else ""
    return f"{prefix}/{ident['name']}{suffix}@{count_label(n)}"


class TorchmetricsKind(MetricKind):
    """A torchmetrics image metric fed through an extractor, its real states kept between evaluations."""

    metric: object
    features: int  # the extractor's feature count

    def sizes(self, cfg, ctx: Context) -> tuple[int, int]:
        """(fake count, real count) of this metric."""
        n = int(ctx.num_samples or cfg.num_samples)
        return n, min(n, len(ctx.dataset))

    def reset_fake(self) -> None:
        self.metric.reset()

    def update_real(self, x: torch.Tensor) -> None:
        self.metric.update(x, real=True)

    def update_fake(self, x: torch.Tensor, start: int, batch: int) -> None:
        self.metric.update(x, real=False)

    def real_states(self) -> dict[str, torch.Tensor]:
        """The real-side states (FID sums, KID / PR features), lists concatenated."""
        out = {}
        for name in self.metric._defaults:
            if name.startswith("real_"):
                value = getattr(self.metric, name)
                out[name] = torch.cat(value) if isinstance(value, list) else value
        return {k: v.detach().cpu() for k, v in out.items()}

    def load_real_states(self, states: dict[str, torch.Tensor]) -> None:
        device = self.metric.device
        for name, value in states.items():
            current = getattr(self.metric, name)
            setattr(self.metric, name, [value.to(device)] if isinstance(current, list) else value.to(device))

    def expected_real_shapes(self) -> dict[str, tuple]:
        shapes = {}
        for name, default in self.metric._defaults.items():
            if name.startswith("real_"):
                shapes[name] = (self.reference_count(), self.features) if isinstance(default, list) \
                    else tuple(default.shape)
        return shapes

    def check_real_states(self, states: dict[str, torch.Tensor]) -> str | None:
        """Why ``states`` cannot be this metric's real side beyond their shapes, or None."""
        for name, value in states.items():
            if name.endswith("num_samples") and int(value) != self.reference_count():
                return f"{name} is {int(value)}, not {self.reference_count()}"
        return None
