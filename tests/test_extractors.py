"""Feature extractors: the build-free Inception from a weight file, resize filters, user modules."""

from __future__ import annotations

import math
import re

import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.digits import DigitsDataset
from genexp.metrics.extractors import MetricUnavailable, build_extractor
from genexp.metrics.inception import FIDInceptionV3
from genexp.metrics.resize import resize, tf1_bilinear
from genexp.metrics.suite import MetricSuite

# Shapes of torch-fidelity's / pytorch-fid's FID Inception weight files (their architecture, written out).
KNOWN_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """A weight file with the FID Inception's keys and random values, as a converter would write it
    (no batch counters), plus an auxiliary-head key that torchvision-based files carry."""
    torch.manual_seed(0)
    state = {}
    for key, value in FIDInceptionV3().state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if key.endswith("conv.weight"):  # He init, so that signal survives 94 layers
            state[key] = torch.randn_like(value) * math.sqrt(2.0 / value[0].numel())
        elif key.endswith(("bn.weight", "running_var")):
            state[key] = 1 + 0.1 * torch.rand_like(value)
        else:
            state[key] = 0.01 * torch.randn_like(value)
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    path = tmp_path_factory.mktemp("weights") / "pt_inception-2015-12-05-6726825d.pth"
    torch.save(state, path)
    return path


def test_inception_has_the_weight_files_keys():
    state = FIDInceptionV3().state_dict()
    for key, shape in KNOWN_SHAPES.items():
        assert tuple(state[key].shape) == shape, key
    convs = [k for k in state if k.endswith("conv.weight")]
    assert len(convs) == 94  # Inception-v3 without the auxiliary head


def test_inception_loads_a_weight_file_and_gives_2048_features(inception_file):
    net, ident = build_extractor("inception", "features", weights=str(inception_file))
    assert net.num_features == 2048 and ident["name"] == "inception" and ident["resize"] == "tf1_bilinear"
    gray = torch.rand(3, 1, 16, 16) * 2 - 1
    features = net(gray)
    assert features.shape == (3, 2048) and torch.isfinite(features).all()
    assert (features[0] - features[1]).abs().max() > 1e-3 * features.abs().max()  # images differ, features too
    # the weights are really the file's: a second load gives the same features
    again, _ = build_extractor("inception", "features", weights=str(inception_file))
    assert torch.allclose(again(gray), features)
    logits, _ = build_extractor("inception", "logits", weights=str(inception_file))
    assert logits(gray).shape == (3, 1008)


def test_inception_resize_filter_changes_the_features_and_the_identity(inception_file):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    tf1, id_tf1 = build_extractor("inception", "features", weights=str(inception_file))
    bicubic, id_bicubic = build_extractor("inception", "features", weights=str(inception_file), resize="bicubic")
    assert id_tf1["resize"] == "tf1_bilinear" and id_bicubic["resize"] == "bicubic"
    assert not torch.allclose(tf1(x), bicubic(x))


def test_inception_weight_problems_are_one_line(inception_file, tmp_path, monkeypatch):
    with pytest.raises(MetricUnavailable, match="missing at .*nope.pth"):
        build_extractor("inception", "features", weights=str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, bad)
    with pytest.raises(MetricUnavailable, match="not an FID Inception-v3 state dict") as exc:
        build_extractor("inception", "features", weights=str(bad))
    assert "\n" not in str(exc.value)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a weight file")
    with pytest.raises(MetricUnavailable, match="could not be read"):
        build_extractor("inception", "features", weights=str(junk))
    # no path and nothing in torch hub's cache: offline (the tests' setting) says what to put where
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MetricUnavailable, match="weights-inception-2015-12-05-6726825d.pth"):
        build_extractor("inception", "features")


def test_inception_from_torch_hub_cache(inception_file, tmp_path, monkeypatch):
    """A copy already in torch hub's cache (where torch-fidelity / torchmetrics download it) is used."""
    hub = tmp_path / "hub"
    (hub / "checkpoints").mkdir(parents=True)
    (hub / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth").write_bytes(inception_file.read_bytes())
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    net, ident = build_extractor("inception", "features")
    assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 2048)


def test_tf1_bilinear_matches_the_tensorflow_rule():
    """TF 1.x resize_bilinear: out[i] samples in[i * in/out], linear between floor and the next pixel."""
    torch.manual_seed(0)
    x = torch.rand(1, 1, 5, 7)
    out = tf1_bilinear(x, 11)

    def reference(img, size):
        h, w = img.shape
        res = torch.zeros(size, size)
        for i in range(size):
            for j in range(size):
                y, xx = i * h / size, j * w / size
                y0, x0 = int(math.floor(y)), int(math.floor(xx))
                y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
                dy, dx = y - y0, xx - x0
                top = img[y0, x0] + (img[y0, x1] - img[y0, x0]) * dx
                bottom = img[y1, x0] + (img[y1, x1] - img[y1, x0]) * dx
                res[i, j] = top + (bottom - top) * dy
        return res

    assert torch.allclose(out[0, 0], reference(x[0, 0], 11), atol=1e-6)
    assert torch.equal(tf1_bilinear(torch.full((1, 3, 4, 4), 7.0), 9), torch.full((1, 3, 9, 9), 7.0))


def test_resize_filters_differ_and_unknown_is_refused():
    x = torch.rand(1, 1, 8, 8)
    outs = {f: resize(x, 12, f) for f in ("tf1_bilinear", "bicubic", "box", "bilinear", "nearest")}
    assert all(o.shape == (1, 1, 12, 12) for o in outs.values())
    assert not torch.allclose(outs["tf1_bilinear"], outs["bicubic"])
    with pytest.raises(MetricUnavailable, match="unknown resize filter 'lanczos'"):
        build_extractor("digits_lenet", "features", resize="lanczos")


class MeanPool(torch.nn.Module):
    """A user extractor: channel means over a grid of ``cells`` x ``cells`` (no num_features)."""

    def __init__(self, cells: int = 2):
        super().__init__()
        self.cells = cells
        self.scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return torch.nn.functional.adaptive_avg_pool2d(x, self.cells).flatten(1) * self.scale


def test_user_target_extractor_in_the_suite(tmp_path):
    data = DigitsDataset(resolution=16)
    spec = {"_target_": f"{__name__}.MeanPool", "cells": 4}
    cfg = OmegaConf.create({"fid": {"kind": "fid", "num_samples": 200, "extractor": spec}})
    s = MetricSuite(cfg, data, OmegaConf.create({"name": "digits", "kind": "image"}), torch.device("cpu"),
                    print, cache_dir=tmp_path)
    real = s.compute(lambda n, g: data.x[torch.randint(len(data), (n,), generator=g)], seed=0)
    noise = s.compute(lambda n, g: torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, seed=0)
    (key,) = real
    assert re.fullmatch(r"fid/MeanPool-[0-9a-f]{6}@200", key)  # the class name and a weight/argument hash
    assert real[key] < 0.2 * noise[key]
    ident = s.protocol()[key]["extractor"]
    assert ident["target"].endswith("MeanPool") and ident["args"] == {"cells": 4} and len(ident["sha256"]) == 8
    # other weights, other identity: a user's weight file goes into the key
    weights = tmp_path / "w.pt"
    torch.save({"scale": torch.tensor([2.0])}, weights)
    module, ident2 = build_extractor(spec, "features", weights=str(weights), example=data.x[:2])
    assert module.num_features == 16 and ident2["sha256"] != ident["sha256"] and ident2["name"] != ident["name"]
    _, ident3 = build_extractor({**spec, "cells": 2}, "features", example=data.x[:2])
    assert ident3["name"] != ident["name"]  # other arguments, other key


def test_user_target_problems_skip_in_one_line():
    notes = []
    cfg = OmegaConf.create({"fid": {"kind": "fid", "num_samples": 10, "extractor": {"_target_": "nowhere.Net"}}})
    s = MetricSuite(cfg, DigitsDataset(resolution=16), OmegaConf.create({"name": "digits", "kind": "image"}),
                    torch.device("cpu"), notes.append)
    assert not s and len(notes) == 1 and "nowhere.Net could not be built" in notes[0] and "\n" not in notes[0]


@pytest.mark.slow
def test_eval_with_inception_from_a_path_records_the_protocol(run, inception_file, tmp_path):
    from tests.test_eval_images import metrics_of, torch_rand, write_pngs

    folder = write_pngs(tmp_path / "fake", torch_rand(10))
    out = tmp_path / "e"
    res = run("eval", "data=digits", "metrics=[fid]", "metrics.fid.extractor=inception", "metrics.fid.allow_small=true",
              f"metrics.fid.weights={inception_file}", "metrics.fid.resize=bicubic",
              "trainer.progress=plain", f"fake={folder}", f"hydra.run.dir={out}")
    assert res.code == 0, res
    record = metrics_of(out)
    key = "fid/inception-bicubic@10"
    assert math.isfinite(record["metrics"][key]), record
    assert record["protocol"]["metrics"][key]["extractor"]["resize"] == "bicubic"


def test_inception_is_bit_exact_with_torch_fidelity(inception_file, tmp_path):
    """Where torch-fidelity imports (the gpu extra), its extractor and ours agree exactly on the same
    weights, resize included. Without the extra: PYTHONPATH=<unpacked torch-fidelity wheel> works too."""
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except Exception:
        pytest.skip("torch-fidelity does not import here")
    state = torch.load(inception_file, weights_only=True)
    plain = tmp_path / "plain.pth"  # torch-fidelity loads strictly: no auxiliary head
    torch.save({k: v for k, v in state.items() if not k.startswith("AuxLogits")}, plain)
    theirs = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                         feature_extractor_weights_path=str(plain))
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        features, logits = theirs(((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8))
    ours_f, _ = build_extractor("inception", "features", weights=str(plain))
    ours_l, _ = build_extractor("inception", "logits", weights=str(plain))
    assert torch.equal(ours_f(x), features) and torch.equal(ours_l(x), logits)


def test_inception_download_lands_in_torch_hub_cache(inception_file, tmp_path, monkeypatch):
    """Online and without a path: fetched once into torch hub's cache (a file:// URL stands in for
    the release URL), atomically, and used from there."""
    from genexp.metrics import inception

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(inception, "WEIGHTS_URL", inception_file.as_uri())
    monkeypatch.setenv("GENEXP_OFFLINE", "0")
    net, ident = build_extractor("inception", "features")
    cached = tmp_path / "hub" / "checkpoints" / inception.WEIGHTS_FILE
    assert cached.read_bytes() == inception_file.read_bytes() and not list(cached.parent.glob("*.part"))
    assert net(torch.zeros(1, 1, 8, 8)).shape == (1, 2048)
    # a failed download leaves nothing behind and says where to get the file
    cached.unlink()
    monkeypatch.setattr(inception, "WEIGHTS_URL", (tmp_path / "missing.pth").as_uri())
    with pytest.raises(MetricUnavailable, match="could not be downloaded"):
        build_extractor("inception", "features")
    assert not list(cached.parent.iterdir())


def test_bicubic_is_pils_bicubic_growing_and_shrinking():
    """resize=bicubic is clean-fid's filter, PIL's bicubic: checked against PIL on uint8 noise, up
    (32 -> 299) and down (512 -> 299), within rounding."""
    import numpy as np
    from PIL import Image

    from genexp.metrics.resize import resize

    rng = np.random.default_rng(0)
    for side in (32, 512):
        pixels = rng.integers(0, 256, size=(side, side), dtype=np.uint8)
        pil = np.asarray(Image.fromarray(pixels).resize((299, 299), Image.BICUBIC), dtype=np.float64)
        ours = resize(torch.from_numpy(pixels).double()[None, None], 299, "bicubic")[0, 0].numpy()
        gap = np.abs(ours.clip(0, 255) - pil)
        # PIL rounds and clips to uint8 between its two passes, so a few overshooting pixels differ more;
        # torch's plain bicubic (a = -0.75) averaged 4.2 levels away growing 32 -> 299
        assert gap.mean() < 1.0 and np.percentile(gap, 99) < 5, (side, gap.mean(), np.percentile(gap, 99))
