"""Feature networks for the image metrics, each with the identity that goes into a metric's key.

An extractor is an nn.Module mapping images in [-1, 1] (N, C, H, W) to features
(N, D) or class logits (N, K), with ``num_features`` set (torchmetrics reads it).
Where one cannot be built here (a package or a weight file is missing), building it
raises MetricUnavailable with the line that tells the user what to provide.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from genexp.data.base import unit_to_uint8
from genexp.metrics.classifiers import DigitsLeNet, MnistLeNet, SmallClassifier

# Which of genexp's own classifiers serves which dataset when extractor=auto.
OWN_CLASSIFIERS = {"digits": "digits_lenet", "mnist": "mnist_lenet"}
NETS = {"digits_lenet": (DigitsLeNet, "python scripts/train_digits_classifier.py"),
        "mnist_lenet": (MnistLeNet, "python scripts/train_mnist_classifier.py --root <mnist idx dir>")}


class MetricUnavailable(Exception):
    """This metric cannot run here; the message says what to install or provide."""


class ClassifierFeatures(nn.Module):
    def __init__(self, net: SmallClassifier, output: str):
        super().__init__()
        self.net, self.output = net.eval(), output
        self.num_features = net.num_features if output == "features" else net.head.out_features

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.features(x) if self.output == "features" else self.net(x)


def asset_path(name: str) -> Path:
    return Path(str(resources.files("genexp.assets").joinpath(name)))


def short_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:8]


def resolve_name(name: str, data_name: str | None) -> str:
    if name != "auto":
        return name
    return OWN_CLASSIFIERS.get(data_name or "", "inception")


def build_extractor(name: str, output: str, weights: str | None = None) -> tuple[nn.Module, dict]:
    """(module, identity) where identity = {name, hash, ...} for the metric key and the JSON."""
    if name in NETS:
        cls, command = NETS[name]
        path = Path(weights) if weights else asset_path(f"{name}.pt")
        if not path.is_file():
            raise MetricUnavailable(f"the {name} weights are missing at {path}: run {command}")
        net = cls()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        ident = {"name": name, "sha256": short_hash(path), "input": f"{cls.input_resolution}px gray"}
        return ClassifierFeatures(net, output), ident
    if name == "inception":
        return build_inception(output, weights)
    raise MetricUnavailable(f"unknown extractor '{name}': use auto, {', '.join(NETS)} or inception")


def build_inception(output: str, weights: str | None) -> tuple[nn.Module, dict]:
    """torch-fidelity's FID Inception-v3 (the one torchmetrics uses), from a local weight file
    when one is given, else from torch-fidelity's own download / cache."""
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except Exception as exc:  # torchvision present but broken beside this torch
        _TORCH_FIDELITY_AVAILABLE, reason = False, type(exc).__name__
    else:
        reason = "not installed"
    if not _TORCH_FIDELITY_AVAILABLE:
        raise MetricUnavailable(f"Inception needs torch-fidelity ({reason}): "
                                "pip install 'genexp[gpu]' on a machine whose torchvision matches torch")
    feature = "2048" if output == "features" else "logits_unbiased"
    try:
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=[feature],
                                 feature_extractor_weights_path=weights)
    except Exception as exc:
        where = f"metrics.*.weights={weights}" if weights else "no weight file given and the download failed"
        raise MetricUnavailable(f"Inception weights could not be loaded ({where}; {type(exc).__name__}): "
                                "set metrics.<name>.weights=/path/pt_inception-2015-12-05-6726825d.pth") from None

    class InceptionFeatures(nn.Module):
        num_features = 2048 if output == "features" else 1008

        def __init__(self):
            super().__init__()
            self.net = net

        @torch.no_grad()
        def forward(self, x):
            x = unit_to_uint8(x)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            return self.net(x).reshape(len(x), -1)

    ident = {"name": "inception", "sha256": short_hash(Path(weights)) if weights else "torch-fidelity",
             "resize": "torch-fidelity bilinear to 299"}
    return InceptionFeatures(), ident

