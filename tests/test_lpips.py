"""LPIPS in plain torch, against references genexp does not compute: torchvision's published parameter
counts, the LPIPS formula written out here with torch.nn.functional on the weight file itself, and
torchmetrics' LPIPS (its own forward; the torchvision one wherever torchvision imports).

Backbone weights are random (nothing is downloaded in tests), written in torchvision's key layout as
this file spells it out; the linear heads are the real ones torchmetrics ships."""

from __future__ import annotations

import functools
import math
from importlib import resources
from pathlib import Path
from unittest import mock

import pytest
import torch
import torch.nn.functional as F

from genexp.errors import UserError
from genexp.metrics.extractors import MetricUnavailable
from genexp.metrics.lpips_net import build_lpips, lpips_metric

NETS = ("alex", "vgg", "squeeze")
TV_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth", "squeeze": "squeezenet1_1-b8a52dc0.pth"}

# torchvision's `features`, by index: convs (out, in, kernel) and SqueezeNet's Fire blocks (in, squeeze, e1, e3).
ALEX_CONVS = {0: (64, 3, 11), 3: (192, 64, 5), 6: (384, 192, 3), 8: (256, 384, 3), 10: (256, 256, 3)}
VGG_BLOCKS = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
SQUEEZE_FIRES = {3: (64, 16, 64, 64), 4: (128, 16, 64, 64), 6: (128, 32, 128, 128), 7: (256, 32, 128, 128),
                 9: (256, 48, 192, 192), 10: (384, 48, 192, 192), 11: (384, 64, 256, 256), 12: (512, 64, 256, 256)}
# The classifiers torchvision puts after `features` (not LPIPS's): written too, as the real files hold them.
CLASSIFIERS = {"alex": {1: (4096, 9216), 4: (4096, 4096), 6: (1000, 4096)},
               "vgg": {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)},
               "squeeze": {1: (1000, 512, 1, 1)}}
# torchvision's published num_params of the whole ImageNet classifiers (the models' docs / weight metadata).
PUBLISHED_PARAMS = {"alex": 61_100_840, "vgg": 138_357_544, "squeeze": 1_235_496}
# LPIPS's ScalingLayer (richzhang/PerceptualSimilarity, v0.1)
SHIFT, SCALE = [-0.030, -0.088, -0.188], [0.458, 0.448, 0.450]


def vgg_convs() -> dict[int, tuple[int, int, int]]:
    convs, i, cin = {}, 0, 3
    for block in VGG_BLOCKS:
        for cout in block:
            convs[i], cin, i = (cout, cin, 3), cout, i + 2
        i += 1  # the block's max pool
    return convs


def layout(net: str) -> dict[str, tuple[int, ...]]:
    """Every key of torchvision's weight file for ``net`` and its shape."""
    shapes = {}

    def conv(prefix, cout, cin, k):
        shapes[f"{prefix}.weight"], shapes[f"{prefix}.bias"] = (cout, cin, k, k), (cout,)

    if net == "squeeze":
        conv("features.0", 64, 3, 3)
        for i, (cin, s, e1, e3) in SQUEEZE_FIRES.items():
            conv(f"features.{i}.squeeze", s, cin, 1)
            conv(f"features.{i}.expand1x1", e1, s, 1)
            conv(f"features.{i}.expand3x3", e3, s, 3)
    else:
        for i, (cout, cin, k) in (ALEX_CONVS if net == "alex" else vgg_convs()).items():
            conv(f"features.{i}", cout, cin, k)
    return shapes


@functools.cache
def _random_state(net: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in layout(net).items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        std = math.sqrt(2 / fan_in) if len(shape) > 1 else 0.05
        state[key] = torch.randn(shape, generator=g) * std
    return state


def random_state(net: str) -> dict[str, torch.Tensor]:
    """He-scaled random weights of ``features`` (activations keep their scale through 13 layers), small
    random biases."""
    return dict(_random_state(net))


def write_weights(net: str, folder: Path) -> Path:
    """A torchvision-layout file: ``features.*`` random, plus stand-in ``classifier.*`` keys (small: the
    real classifiers hold 98 % of the parameters, and LPIPS ignores them)."""
    path = folder / TV_FILES[net]
    torch.save({**random_state(net), **{f"classifier.{i}.weight": torch.zeros(2, 2) for i in CLASSIFIERS[net]}},
               path)
    return path


def heads(net: str) -> list[torch.Tensor]:
    path = resources.files("torchmetrics.functional.image").joinpath("lpips_models", f"{net}.pth")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    return [state[f"lin{k}.model.1.weight"] for k in range(7 if net == "squeeze" else 5)]


def reference_taps(net: str, s: dict[str, torch.Tensor], x: torch.Tensor) -> list[torch.Tensor]:
    """The ReLU outputs LPIPS compares, written out with functional ops on the state dict."""
    def conv(i, x, **kw):
        return F.relu(F.conv2d(x, s[f"features.{i}.weight"], s[f"features.{i}.bias"], **kw))

    taps = []
    if net == "alex":
        x = conv(0, x, stride=4, padding=2)
        taps.append(x)
        x = conv(3, F.max_pool2d(x, 3, 2), padding=2)
        taps.append(x)
        x = conv(6, F.max_pool2d(x, 3, 2), padding=1)
        taps.append(x)
        x = conv(8, x, padding=1)
        taps.append(x)
        taps.append(conv(10, x, padding=1))
    elif net == "vgg":
        convs = iter(vgg_convs())
        for b, block in enumerate(VGG_BLOCKS):
            if b:
                x = F.max_pool2d(x, 2, 2)
            for _ in block:
                x = conv(next(convs), x, padding=1)
            taps.append(x)
    else:
        def fire(i, x):
            x = conv(f"{i}.squeeze", x)
            return torch.cat([conv(f"{i}.expand1x1", x), conv(f"{i}.expand3x3", x, padding=1)], 1)

        x = conv(0, x, stride=2)
        taps.append(x)
        x = fire(4, fire(3, F.max_pool2d(x, 3, 2, ceil_mode=True)))
        taps.append(x)
        x = fire(7, fire(6, F.max_pool2d(x, 3, 2, ceil_mode=True)))
        taps.append(x)
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)
        for i in (9, 10, 11, 12):
            x = fire(i, x)
            taps.append(x)
    return taps


def reference_lpips(net: str, state: dict[str, torch.Tensor], a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The LPIPS formula in float64: scale, tap, unit-normalise per position (x / (|x| + 1e-10)), squared
    difference, 1x1 head, spatial mean, sum over layers."""
    s = {k: v.double() for k, v in state.items()}
    shift, scale = torch.tensor(SHIFT, dtype=torch.float64).view(1, 3, 1, 1), torch.tensor(SCALE, dtype=torch.float64)
    ta = reference_taps(net, s, (a.double() - shift) / scale.view(1, 3, 1, 1))
    tb = reference_taps(net, s, (b.double() - shift) / scale.view(1, 3, 1, 1))
    total = 0
    for w, fa, fb in zip(heads(net), ta, tb):
        fa = fa / (fa.square().sum(1, keepdim=True).sqrt() + 1e-10)
        fb = fb / (fb.square().sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + F.conv2d((fa - fb).square(), w.double()).mean((2, 3))
    return total.flatten()


SIDES = {"alex": 32, "vgg": 16, "squeeze": 24}  # tiny inputs each backbone sees as they are


def pair(net: str, n: int = 2, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    side = SIDES[net]
    return torch.rand(n, 3, side, side, generator=g) * 2 - 1, torch.rand(n, 3, side, side, generator=g) * 2 - 1


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lpips")
    return {net: write_weights(net, folder) for net in NETS}


@pytest.mark.parametrize("net", NETS)
def test_torchvision_files_load_and_the_stacks_have_torchvisions_parameter_counts(net, weight_files):
    lpips = build_lpips(net, str(weight_files[net]))
    features = sum(p.numel() for p in lpips.backbone.parameters())
    classifier = sum(math.prod(shape) + shape[0] for shape in CLASSIFIERS[net].values())
    assert features + classifier == PUBLISHED_PARAMS[net]
    assert features == {"alex": 2_469_696, "vgg": 14_714_688, "squeeze": 722_496}[net]
    state = random_state(net)
    for key, value in lpips.backbone.state_dict().items():
        assert torch.equal(value, state[key]), key
    for head, w in zip(lpips.heads, heads(net), strict=True):
        assert torch.equal(head.weight, w)


@pytest.mark.parametrize("net", NETS)
def test_the_formula_by_hand_identity_and_symmetry(net, weight_files):
    lpips = build_lpips(net, str(weight_files[net]))
    a, b = pair(net)
    got = lpips(a, b)
    want = reference_lpips(net, random_state(net), a, b)
    assert got.shape == (2,) and float(want.min()) > 0.01  # a distance the heads see, not a vanishing one
    assert float((got.double() - want).abs().max()) < 1e-6
    assert torch.allclose(lpips(b, a), got, atol=1e-6, rtol=0)
    assert torch.equal(lpips(a, a), torch.zeros(2))


def test_gray_and_small_images(tmp_path):
    """Gray images are compared as RGB; images under a backbone's minimum side are upsampled to 64 px."""
    lpips = build_lpips("alex", str(write_weights("alex", tmp_path)))
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(2, 1, 16, 16, generator=g) * 2 - 1, torch.rand(2, 1, 16, 16, generator=g) * 2 - 1
    up = lambda x: F.interpolate(x.expand(-1, 3, -1, -1), size=(64, 64), mode="bilinear",  # noqa: E731
                                 align_corners=False)
    assert lpips.seen_size(16) == 64 and lpips.seen_size(32) is None
    assert torch.allclose(lpips(a, b), reference_lpips("alex", random_state("alex"), up(a), up(b)).float(), atol=1e-6)


def test_the_metric_is_the_mean_over_pairs(weight_files):
    metric = lpips_metric("squeeze", str(weight_files["squeeze"]))
    a, b = pair("squeeze", n=5)
    metric.update(a[:2], b[:2])
    metric.update(a[2:], b[2:])
    want = reference_lpips("squeeze", random_state("squeeze"), a, b).mean()
    assert abs(float(metric.compute()) - float(want)) < 1e-6


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_bad_weight_files_are_refused_in_one_line(tmp_path, weight_files):
    with pytest.raises(UserError) as exc:  # VGG's file given for AlexNet
        build_lpips("alex", str(weight_files["vgg"]))
    assert "alexnet-owt-7be5be79.pth" in one_line(exc) and "unexpected keys" in one_line(exc)
    state = random_state("squeeze")
    state["features.3.squeeze.weight"] = torch.zeros(8, 64, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(UserError) as exc:
        build_lpips("squeeze", str(tmp_path / "shape.pth"))
    assert "shape of features.3.squeeze.weight is (8, 64, 1, 1)" in one_line(exc)
    torch.save({"lin0.model.1.weight": torch.zeros(1, 64, 1, 1)}, tmp_path / "head.pth")
    with pytest.raises(UserError) as exc:  # an LPIPS head file is not a backbone
        build_lpips("alex", str(tmp_path / "head.pth"))
    assert "missing keys features.0.bias" in one_line(exc)
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(UserError) as exc:
        build_lpips("vgg", str(tmp_path / "list.pth"))
    assert "not a state dict" in one_line(exc)


def test_missing_weights_say_which_file_and_where(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MetricUnavailable) as exc:  # GENEXP_OFFLINE=1 (conftest): no download
        build_lpips("vgg", setting="lpips_weights")
    assert not isinstance(exc.value, UserError)
    line = one_line(exc)
    assert str(tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth") in line and "lpips_weights=" in line
    with pytest.raises(MetricUnavailable, match="missing at /nope/alex.pth"):
        build_lpips("alex", "/nope/alex.pth")
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    write_weights("squeeze", tmp_path / "hub" / "checkpoints")  # torch hub's cache, under torchvision's name
    assert build_lpips("squeeze").net == "squeeze"


def test_online_the_file_is_downloaded_once_into_torch_hubs_cache(tmp_path, monkeypatch):
    from genexp.metrics import inception

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.delenv("GENEXP_OFFLINE")
    fetched = []

    def download(url, dest, timeout=60.0):
        fetched.append((url, dest.name))
        dest.parent.mkdir(parents=True, exist_ok=True)
        write_weights("squeeze", dest.parent)

    monkeypatch.setattr(inception, "download", download)
    build_lpips("squeeze")
    build_lpips("squeeze")
    # torchvision's SqueezeNet1_1_Weights.IMAGENET1K_V1 url
    assert fetched == [("https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth", "squeezenet1_1-b8a52dc0.pth")]


@pytest.mark.parametrize("net", NETS)
def test_equals_torchmetrics_forward_on_the_same_backbone(net, weight_files):
    """torchmetrics' own LPIPS forward (scaling, taps as its slices, normalisation, heads from its files)
    around the same feature stack: runs without torchvision."""
    from torchmetrics.functional.image import lpips as tm

    ours = build_lpips(net, str(weight_files[net]))
    with mock.patch.object(tm, "_get_tv_model_features", lambda name, pretrained=False: ours.backbone.features):
        theirs = tm._LPIPS(pretrained=True, net=net)
    a, b = pair(net, n=3, seed=3)
    assert float((ours(a, b) - theirs(a, b).flatten()).abs().max()) < 1e-6


@pytest.mark.parametrize("net", NETS)
def test_equals_torchmetrics_lpips_with_torchvision(net, weight_files):
    torchvision = pytest.importorskip("torchvision")
    from torchmetrics.functional.image import lpips as tm
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    model = getattr(torchvision.models, {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}[net])()
    missing, unexpected = model.load_state_dict(random_state(net), strict=False)  # torchvision's own layout
    assert not unexpected and missing and all(k.startswith("classifier.") for k in missing)
    with mock.patch.object(tm, "_get_tv_model_features", lambda name, pretrained=False: model.features):
        theirs = LearnedPerceptualImagePatchSimilarity(net_type=net)
    ours = lpips_metric(net, str(weight_files[net]))
    a, b = pair(net, n=4, seed=4)
    theirs.update(a, b)
    ours.update(a, b)
    assert abs(float(theirs.compute()) - float(ours.compute())) < 1e-6


def project_distance(overrides: list[str], data: str = "digits"):
    from omegaconf import OmegaConf

    from genexp.commands.project import build_distance

    from .conftest import compose

    cfg = compose("project", ["ckpt=c.pt", "target=t.png", *overrides])
    notes: list[str] = []
    distance, name = build_distance(cfg, OmegaConf.create({"data": {"name": data}}), torch.device("cpu"), notes.append)
    return distance, name, notes


def test_project_distance_lpips_and_what_auto_falls_back_to_offline(tmp_path, monkeypatch, weight_files):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # no weights in torch hub's cache
    a, b = pair("vgg", n=1, seed=5)
    distance, name, notes = project_distance(["distance=auto", f"lpips_weights={weight_files['vgg']}"])
    assert name == "lpips_vgg + 1 * mse" and not notes
    want = reference_lpips("vgg", random_state("vgg"), a, b) + F.mse_loss(a.double(), b.double())
    assert abs(float(distance(a, b)) - float(want)) < 1e-6
    # auto without LPIPS weights: the data's own classifier, then pixels; one line says which and why
    _, name, notes = project_distance(["distance=auto"])
    assert name.startswith("1 * mse + feature distance (digits_lenet") and len(notes) == 1
    assert "LPIPS-vgg cannot run here" in notes[0] and "lpips_weights=" in notes[0]
    _, name, notes = project_distance(["distance=auto"], data="ffhq")  # Inception's weights are not here either
    assert name == "mse" and len(notes) == 1 and "\n" not in notes[0]
    assert "lpips_weights=" in notes[0] and "features_weights=" in notes[0] and "metrics.<name>" not in notes[0]


def test_project_distances_asked_for_say_which_option_to_set(tmp_path, monkeypatch, weight_files):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(UserError, match=r"distance=lpips: no LPIPS-vgg backbone weights at .*lpips_weights="):
        project_distance(["distance=lpips"])
    with pytest.raises(UserError) as exc:
        project_distance(["distance=mse+features", "features=inception"])
    assert "features_weights=" in one_line(exc) and "metrics.<name>" not in one_line(exc)
    with pytest.raises(UserError, match="vgg16-397923af.pth"):  # another net's file: refused, never a fallback
        project_distance(["distance=auto", f"lpips_weights={weight_files['alex']}"])


def test_eval_scores_reconstructions_with_lpips(run, tmp_path, weight_files):
    """genexp eval, paired LPIPS of a folder of 'reconstructions' against their originals, end to end."""
    from .test_eval_images import metrics_of, torch_rand, write_pngs

    originals = write_pngs(tmp_path / "orig", torch_rand(4))  # identical images give 0: tested above
    noisy = write_pngs(tmp_path / "recon", (torch_rand(4) + 0.3 * torch.rand(4, 1, 16, 16)).clamp(-1, 1))
    common = ["data=images", f"data.path={originals}", "data.resolution=16", "data.channels=1", "metrics=[lpips]",
              "metrics.lpips.mode=paired", f"metrics.lpips.weights={weight_files['alex']}", "trainer.progress=plain"]
    res = run("eval", *common, f"fake={noisy}", f"hydra.run.dir={tmp_path / 'e'}")
    assert res.code == 0, res
    record = metrics_of(tmp_path / "e")
    assert record["metrics"]["lpips_recon/alex-64px@4"] > 0.01  # 16 px images: AlexNet sees them at 64
    assert record["protocol"]["metrics"]["lpips_recon/alex-64px@4"]["backbone"] == "alexnet-owt-7be5be79.pth"


def test_recon_scores_reconstructions_with_lpips(weight_files):
    """The recon metric's LPIPS: 0 for a perfect reconstruction, the hand formula's mean for a noisy one."""
    from omegaconf import OmegaConf

    from genexp.data.digits import DigitsDataset
    from genexp.metrics.suite import MetricSuite

    data = DigitsDataset(resolution=32)  # AlexNet sees 32 px images as they are
    noise = 0.2 * torch.randn(8, 1, 32, 32, generator=torch.Generator().manual_seed(6))

    class Method:
        num_classes = 0

        def __init__(self, noisy: bool):
            self.noisy = noisy

        def reconstruct(self, x, y):
            return x + noise[:len(x)] if self.noisy else x

    cfg = OmegaConf.create({"recon": {"kind": "recon", "num_samples": 8, "batch_size": 8, "net": "alex",
                                      "weights": str(weight_files["alex"])}})
    suite = MetricSuite(cfg, data, OmegaConf.create({"name": "digits", "kind": "image", "resolution": 32}),
                        torch.device("cpu"), print)
    sample = lambda n, g: data.x[:n]  # noqa: E731  (recon scores the model, not samples)
    assert suite.compute(sample, seed=0, model=(Method(False), True))["recon/lpips_alex@train:8"] == 0
    got = suite.compute(sample, seed=0, model=(Method(True), True))["recon/lpips_alex@train:8"]
    x = data.x[:8].expand(-1, 3, -1, -1)
    want = reference_lpips("alex", random_state("alex"), (x + noise).clamp(-1, 1), x).mean()
    assert abs(got - float(want)) < 1e-6


@pytest.mark.slow  # a CLI training run; the suite path it logs through is the eval test's
def test_diversity_lpips_is_logged_during_gan_training(run, tmp_path, weight_files):
    import json

    from .conftest import TINY

    res = run("train", *TINY, "metrics=[lpips]", f"metrics.lpips.weights={weight_files['alex']}",
              f"hydra.run.dir={tmp_path}")
    assert res.code == 0, res
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["lpips_diversity/alex-64px@32"] >= 0  # 32 = trainer.eval_samples; 16 px digits seen at 64


def test_default_training_metrics_add_diversity_lpips_when_alexnet_is_on_this_machine(run, tmp_path, weight_files):
    """Default metrics: diversity LPIPS joins when torch hub's cache holds AlexNet's file, and nothing is
    said (or downloaded) when it does not."""
    import json
    import shutil

    from .conftest import TINY

    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    shutil.copy(weight_files["alex"], hub / weight_files["alex"].name)
    tiny = [a for a in TINY if not a.startswith("trainer.eval_samples")] + ["trainer.eval_samples=32"]
    res = run("train", *tiny, f"hydra.run.dir={tmp_path / 'with'}", env={"TORCH_HOME": str(tmp_path / "torch_home")})
    assert res.code == 0, res
    logged = json.loads((tmp_path / "with" / "metrics.jsonl").read_text().splitlines()[-1])
    assert logged["lpips_diversity/alex-64px@32"] >= 0 and "fid/digits_lenet@32" in logged
    res = run("train", *tiny, f"hydra.run.dir={tmp_path / 'without'}", env={"TORCH_HOME": str(tmp_path / "none")})
    assert res.code == 0, res
    logged = json.loads((tmp_path / "without" / "metrics.jsonl").read_text().splitlines()[-1])
    assert not any(k.startswith("lpips") for k in logged) and "lpips" not in res.err
