"""Feature networks for the image metrics, each with the identity that goes into a metric's key.

An extractor is an nn.Module mapping images in [-1, 1] (N, C, H, W) to features
(N, D) or class logits (N, K), with ``num_features`` set (torchmetrics reads it). One whose network
gives both (the classifiers, Inception) also has ``sizes`` ({output: width}) and ``extract(x, outputs)``,
every output wanted from one forward pass (metrics/featured.py shares it between FID, KID, PR and IS).
Four sources: genexp's shipped classifiers (digits_lenet, mnist_lenet), the FID Inception-v3
(metrics/inception.py), DINOv2 ViT-B/14 and ViT-L/14 (metrics/dinov2.py; FD_DINOv2), the last two
with weights from a path or the standard download, and any module a user names with ``_target_``.
Where one cannot be built here (a weight file is missing, say), building it raises
MetricUnavailable with the line that tells the user what to provide.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from genexp.errors import UserError
from genexp.metrics.classifiers import DigitsLeNet, MnistLeNet, SmallClassifier
from genexp.metrics.dinov2 import ARCHS as DINOV2
from genexp.metrics.resize import FILTERS
from genexp.metrics.rng import BUILD_SEED, own_rng

# Which of genexp's own classifiers serves which dataset when extractor=auto.
OWN_CLASSIFIERS = {"digits": "digits_lenet", "digits8": "digits_lenet", "mnist": "mnist_lenet"}
NETS = {"digits_lenet": (DigitsLeNet, "python scripts/train_digits_classifier.py"),
        "mnist_lenet": (MnistLeNet, "python scripts/train_mnist_classifier.py --root <mnist idx dir>")}
# Set to 1 (the tests do) to never download weights; a missing file is then a skipped metric.
OFFLINE_ENV = "GENEXP_OFFLINE"


class MetricUnavailable(Exception):
    """This metric cannot run here; the message says what to install or provide."""


class WeightsError(UserError, MetricUnavailable):
    """A weight file the user named is not this network's (code, objects, other keys or shapes): a user's
    mistake in one line. Also a MetricUnavailable, for callers that skip a metric that cannot run."""


SHOWN_KEYS = 3


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A weight file read as checkpoints are: torch.load(weights_only=True), so a pickle that would run
    code or build objects is refused, never executed. A {"state_dict": ...} wrapper is unwrapped."""
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's note on pickle protocols: the refusal below says it all
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        text = " ".join(str(exc).split())
        with open(path, "rb") as f:
            pickled = f.read(2)[:1] == b"\x80"  # a pickle's protocol opcode: a pickle weights_only refused
        if "Unsupported global" in text or "Weights only load failed" in text and pickled:
            found = text.split("Unsupported global: ")[-1].split(" ")[1] if "Unsupported global: " in text else ""
            raise WeightsError(f"weights {path}: the file holds pickled code or objects"
                               f"{f' ({found})' if found else ''}, which genexp never runs; save plain tensors "
                               "instead: torch.save(net.state_dict(), path)") from None
        raise WeightsError(f"weights {path} could not be read as a weight file ({type(exc).__name__}); "
                           "point weights= at a state dict saved with torch.save(net.state_dict(), path)") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"weights {path} holds a {type(state).__name__} that is not a state dict of tensors; "
                           "save one with torch.save(net.state_dict(), path)")
    return state


def check_state_dict(state: dict[str, torch.Tensor], net: nn.Module, path: Path, what: str,
                     ignore=lambda key: False) -> None:
    """Keys and shapes of ``state`` against ``net``'s, every difference named in one line."""
    own = {k: v for k, v in net.state_dict().items() if not ignore(k)}
    given = {k: v for k, v in state.items() if not ignore(k)}
    missing, extra = sorted(set(own) - set(given)), sorted(set(given) - set(own))
    wrong = [k for k in own if k in given and tuple(given[k].shape) != tuple(own[k].shape)]
    if not (missing or extra or wrong):
        return

    def keys(names):
        return ", ".join(names[:SHOWN_KEYS]) + (f" ... ({len(names)} in all)" if len(names) > SHOWN_KEYS else "")

    parts = ([f"missing keys {keys(missing)}"] if missing else []) + \
            ([f"unexpected keys {keys(extra)}"] if extra else []) + \
            ([f"shape of {wrong[0]} is {tuple(given[wrong[0]].shape)} where the net has {tuple(own[wrong[0]].shape)}"
              + (f" ({len(wrong)} keys of the wrong shape)" if len(wrong) > 1 else "")] if wrong else [])
    raise WeightsError(f"weights {path} is not {what}: " + "; ".join(parts) + "; point weights= at that net's file")


def load_weights(net: nn.Module, path: Path, what: str) -> None:
    """A user's weight file into ``net``: read safely, checked key by key, then loaded."""
    state = read_state_dict(path)
    check_state_dict(state, net, path, what)
    net.load_state_dict(state)


class ClassifierFeatures(nn.Module):
    """A classifier's penultimate features or its class logits; ``extract`` gives both from one pass."""

    def __init__(self, net: SmallClassifier, output: str):
        super().__init__()
        self.net, self.output = net.eval(), output
        self.sizes = {"features": net.num_features, "logits": net.head.out_features}
        self.num_features = self.sizes[output]

    @torch.no_grad()
    def extract(self, x: torch.Tensor, outputs) -> dict[str, torch.Tensor]:
        features = self.net.features(x)
        # head(features) is what net(x) computes: the logits are the same numbers either way.
        return {o: features if o == "features" else self.net.head(features) for o in outputs}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.extract(x, (self.output,))[self.output]


class UserFeatures(nn.Module):
    """A user's module, frozen, with ``num_features`` read from it or from one forward pass."""

    def __init__(self, net: nn.Module, example: torch.Tensor):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        num = getattr(net, "num_features", None)
        if num is None:
            with torch.no_grad():
                out = net(example)
            if out.dim() != 2:
                raise MetricUnavailable(f"extractor {type(net).__name__} returned shape {tuple(out.shape)} for "
                                        f"{tuple(example.shape)} images: it must return (N, features)")
            num = out.shape[1]
        self.num_features = int(num)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def asset_path(name: str) -> Path:
    return Path(str(resources.files("genexp.assets").joinpath(name)))


def short_hash(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:  # in blocks: a DINOv2-L file is 1.2 GB
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:8]


def state_hash(net: nn.Module) -> str:
    """The weights' identity when they come from no file: a hash of every tensor in the state dict."""
    h = hashlib.sha256()
    for key, value in net.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def resolve_name(name, data_name: str | None):
    if isinstance(name, (dict, DictConfig)) or name != "auto":
        return name
    return OWN_CLASSIFIERS.get(data_name or "", "inception")


def extractor_label(name) -> str:
    """How an extractor is named: its name, or a user module's class name (keys add a hash of its
    weights and arguments)."""
    if isinstance(name, (dict, DictConfig)):
        return str(name.get("_target_", "custom")).rsplit(".", 1)[-1]
    return str(name)


def build_extractor(name, output: str, weights: str | None = None, resize: str | None = None,
                    download: bool = True, example: torch.Tensor | None = None) -> tuple[nn.Module, dict]:
    """(module, identity) where identity = {name, sha256, resize, ...} for the metric key and the JSON.

    ``name``: a shipped classifier, ``inception``, or a ``{_target_: ...}`` mapping for a user's module.
    ``resize``: the filter to the extractor's input size (None: the extractor's standard one).
    ``example``: a batch of real images, to size a user module's output.

    Built on generators of its own (metrics/rng.py): the random initialisation that loading weights
    then overwrites (or a user module's own) never moves the caller's random streams."""
    with own_rng(BUILD_SEED):
        return _build_extractor(name, output, weights, resize, download, example)


def _build_extractor(name, output: str, weights: str | None, resize: str | None, download: bool,
                     example: torch.Tensor | None) -> tuple[nn.Module, dict]:
    if resize is not None and resize not in FILTERS:
        raise MetricUnavailable(f"unknown resize filter '{resize}': use one of {', '.join(FILTERS)}")
    if isinstance(name, (dict, DictConfig)):
        return build_user(name, weights, example)
    if name in NETS:
        cls, command = NETS[name]
        path = Path(weights) if weights else asset_path(f"{name}.pt")
        if not path.is_file():
            raise MetricUnavailable(f"the {name} weights are missing at {path}: run {command}")
        net = cls()
        load_weights(net, path, f"a {name} state dict")
        net.resize_filter = resize or cls.resize_filter
        ident = {"name": name, "sha256": short_hash(path), "input": f"{cls.input_resolution}px gray",
                 "resize": net.resize_filter}
        return ClassifierFeatures(net, output), ident
    if name == "inception":
        return build_inception(output, weights, resize or "tf1_bilinear", download)
    if name in DINOV2:
        return build_dinov2(name, output, weights, resize, download)
    raise MetricUnavailable(f"unknown extractor '{name}': use auto, {', '.join(NETS)}, inception, "
                            f"{', '.join(DINOV2)} or {{_target_: your.module.Class}}")


def locate_weights(weights: str | None, default: Path, url: str, what: str, wanted: str, download: bool) -> Path:
    """A network's weight file: ``weights`` when given, else ``default`` (torch hub's cache), downloaded
    there from ``url`` unless downloads are off (download=false, GENEXP_OFFLINE=1)."""
    from genexp.metrics import inception

    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MetricUnavailable(f"the {what} weights are missing at {path}: provide {wanted} there (from {url})")
        return path
    if default.is_file():
        return default
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0") or not download:
        raise MetricUnavailable(f"no {what} weights at {default} and downloads are off: put {wanted} "
                                f"there (from {url}) or set metrics.<name>.weights=/path/to/it")
    try:
        inception.download(url, default)
    except Exception as exc:
        raise MetricUnavailable(f"the {what} weights could not be downloaded ({type(exc).__name__}): "
                                f"fetch {url} and set metrics.<name>.weights=/path/to/it") from None
    return default


def build_inception(output: str, weights: str | None, resize: str, download: bool) -> tuple[nn.Module, dict]:
    """The FID Inception-v3 from ``weights``, else from torch hub's cache (where torch-fidelity and
    torchmetrics keep it), else downloaded there unless offline."""
    from genexp.metrics import inception

    wanted = "weights-inception-2015-12-05-6726825d.pth (torch-fidelity) or pt_inception-2015-12-05-6726825d.pth"
    path = locate_weights(weights, inception.default_weights_path(), inception.WEIGHTS_URL, "Inception", wanted,
                          download)
    net = inception.FIDInceptionV3()
    inception.load_state(net, path)
    ident = {"name": "inception", "sha256": short_hash(path), "input": f"{inception.INPUT_SIZE}px RGB from uint8",
             "resize": resize}
    return inception.InceptionFeatures(net, output, resize), ident


def build_dinov2(name: str, output: str, weights: str | None, resize: str | None,
                 download: bool) -> tuple[nn.Module, dict]:
    """DINOv2 from the official ``<name>_pretrain.pth``: ``weights``, else torch hub's cache (where
    torch.hub.load keeps it), else downloaded there unless offline."""
    from genexp.metrics import dinov2

    if output != "features":
        raise MetricUnavailable(f"{name} gives features, not class logits: use it for fid / kid / pr, "
                                "and inception (or a classifier) for is")
    url = dinov2.URL.format(name=name)
    path = locate_weights(weights, Path(torch.hub.get_dir()) / "checkpoints" / dinov2.weights_file(name), url,
                          f"DINOv2 {name}", dinov2.weights_file(name), download)
    with torch.device("meta"):  # no random initialisation of 86-304 M parameters that the file overwrites
        net = dinov2.DinoVisionTransformer(name)
    dinov2.load_state(net, path, name)
    filter = resize or dinov2.STANDARD_RESIZE
    ident = {"name": name, "sha256": short_hash(path),
             "input": f"{dinov2.INPUT_SIZE}px RGB from uint8, [0, 1] then ImageNet mean/std",
             "feature": f"final-norm class token ({net.num_features})", "resize": filter}
    return dinov2.DinoFeatures(net, filter), ident


def build_user(spec, weights: str | None, example: torch.Tensor | None) -> tuple[nn.Module, dict]:
    """``{_target_: pkg.Module, ...}`` built with Hydra; ``weights`` (a state dict file) loaded into it."""
    from hydra.utils import instantiate

    spec = OmegaConf.create(OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec))
    target = str(spec.get("_target_", ""))
    try:
        net = instantiate(spec)
    except Exception as exc:
        cause = exc.__cause__ or exc
        raise MetricUnavailable(f"extractor {target} could not be built: {type(cause).__name__}: "
                                f"{str(cause).splitlines()[0] if str(cause) else ''}") from None
    if not isinstance(net, nn.Module):
        raise MetricUnavailable(f"extractor {target} built a {type(net).__name__}, not a torch nn.Module")
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise MetricUnavailable(f"the weights of extractor {target} are missing at {path}")
        load_weights(net, path, f"a state dict of {target}")
    if example is None:
        example = torch.zeros(2, 3, 32, 32)
    module = UserFeatures(net, example)
    args = {k: v for k, v in OmegaConf.to_container(spec).items() if k != "_target_"}
    weights_hash = short_hash(Path(weights).expanduser()) if weights else state_hash(net)
    # Two encoders of one class (other weights, other arguments) measure different things: the key says which.
    identity = hashlib.sha256(json.dumps([target, args, weights_hash], sort_keys=True, default=str).encode())
    ident = {"name": f"{extractor_label(spec)}-{identity.hexdigest()[:6]}", "target": target, "args": args,
             "sha256": weights_hash, "resize": "the module's own"}
    return module, ident
