"""DINOv2 ViT-B/14 and ViT-L/14 for FD_DINOv2: the official key layout and parameter counts, the
position-embedding interpolation, the preprocessing, the loading of weight files, the registry key.

No official weights can be downloaded here: the files are written by the tests in the official
layout, which is spelled out below from the architecture (facebookresearch/dinov2, hub/backbones.py:
patch 14, img_size 518, block_chunks=0, no register tokens; models/vision_transformer.py, layers/)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from genexp.data.digits import DigitsDataset
from genexp.metrics import dinov2
from genexp.metrics.dinov2 import DinoVisionTransformer, interpolate_pos_embed
from genexp.metrics.extractors import MetricUnavailable, WeightsError, build_extractor
from genexp.metrics.suite import MetricSuite

# width, depth, heads of the official hub models
OFFICIAL = {"dinov2_vitb14": (768, 12, 12), "dinov2_vitl14": (1024, 24, 16)}
# Published sizes (DINOv2 paper / model card, timm's vit_*_patch14_dinov2): 86.6 M and 304 M.
PUBLISHED_M = {"dinov2_vitb14": (86.6, 0.05), "dinov2_vitl14": (304.0, 0.5)}


def official_layout(width: int, depth: int):
    """(key, shape) of the official dinov2_vit*14_pretrain.pth files, from the architecture facts."""
    grid = 518 // 14
    yield "cls_token", (1, 1, width)
    yield "pos_embed", (1, 1 + grid * grid, width)
    yield "mask_token", (1, width)
    yield "patch_embed.proj.weight", (width, 3, 14, 14)
    yield "patch_embed.proj.bias", (width,)
    for i in range(depth):
        b = f"blocks.{i}."
        yield b + "norm1.weight", (width,)
        yield b + "norm1.bias", (width,)
        yield b + "attn.qkv.weight", (3 * width, width)
        yield b + "attn.qkv.bias", (3 * width,)
        yield b + "attn.proj.weight", (width, width)
        yield b + "attn.proj.bias", (width,)
        yield b + "ls1.gamma", (width,)
        yield b + "norm2.weight", (width,)
        yield b + "norm2.bias", (width,)
        yield b + "mlp.fc1.weight", (4 * width, width)
        yield b + "mlp.fc1.bias", (4 * width,)
        yield b + "mlp.fc2.weight", (width, 4 * width)
        yield b + "mlp.fc2.bias", (width,)
        yield b + "ls2.gamma", (width,)
    yield "norm.weight", (width,)
    yield "norm.bias", (width,)


def write_official_file(path, name: str, change=None, seed: int = 0):
    """A weight file in the official layout with random values. Every tensor is a view of one random
    buffer, which torch.save stores once: a ViT-B file of 9 MB instead of 346 MB."""
    width, depth, _ = OFFICIAL[name]
    layout = dict(official_layout(width, depth))
    if change:
        layout = change(layout)
    g = torch.Generator().manual_seed(seed)
    # LayerNorm scales near 1 and small weights elsewhere, so that 12 blocks keep a finite signal.
    small = 0.02 * torch.randn(max(math.prod(s) for s in layout.values()), generator=g)
    near_one = 1 + 0.1 * torch.randn(max(s[-1] for s in layout.values()), generator=g)
    state = {}
    for key, shape in layout.items():
        base = near_one if key.endswith(("norm1.weight", "norm2.weight", "norm.weight")) else small
        # a random offset into the buffer, so that the blocks do not all hold the same numbers
        start = int(torch.randint(0, len(base) - math.prod(shape) + 1, (), generator=g))
        state[key] = base[start: start + math.prod(shape)].view(shape)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def vitb_file(tmp_path_factory):
    return write_official_file(tmp_path_factory.mktemp("dinov2") / "dinov2_vitb14_pretrain.pth", "dinov2_vitb14")


@pytest.mark.parametrize("name", list(OFFICIAL))
def test_the_module_has_the_official_keys_shapes_and_parameter_count(name):
    width, depth, _ = OFFICIAL[name]
    with torch.device("meta"):  # no 1.2 GB of ViT-L on the CPU: shapes only
        net = DinoVisionTransformer(name)
    own = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert own == dict(official_layout(width, depth))
    count = sum(p.numel() for p in net.parameters())
    assert count == {"dinov2_vitb14": 86_580_480, "dinov2_vitl14": 304_368_640}[name]
    published, tol = PUBLISHED_M[name]
    assert abs(count / 1e6 - published) < tol
    assert net.num_features == width and net.blocks[0].norm1.eps == 1e-6 and net.blocks[0].ls1.gamma.shape == (width,)


def test_pos_embed_interpolation_is_the_official_bicubic_with_its_offset():
    torch.manual_seed(0)
    pos = torch.randn(1, 1 + 37 * 37, 8)
    assert interpolate_pos_embed(pos, 37, 37) is pos  # the pretraining grid: unchanged
    out = interpolate_pos_embed(pos, 16, 12)  # 224 x 168 input
    assert out.shape == (1, 1 + 16 * 12, 8) and torch.equal(out[:, 0], pos[:, 0])
    grid = pos[:, 1:].reshape(1, 37, 37, 8).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, scale_factor=(16.1 / 37, 12.1 / 37), mode="bicubic", align_corners=False)
    assert torch.allclose(out[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, -1, 8), atol=1e-6)

    # and by hand: Keys' cubic (a = -0.75), source x = (i + 0.5) * 37 / (n + 0.1) - 0.5, edges clamped
    def cubic_matrix(n: int) -> np.ndarray:
        a, w = -0.75, np.zeros((n, 37))
        for i in range(n):
            src = (i + 0.5) * 37 / (n + 0.1) - 0.5
            x0 = math.floor(src)
            for j in range(x0 - 1, x0 + 3):
                d = abs(src - j)
                k = ((a + 2) * d - (a + 3)) * d * d + 1 if d <= 1 else ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
                w[i, min(max(j, 0), 36)] += k
        return w

    g = grid[0].double().numpy()  # (8, 37, 37)
    by_hand = np.einsum("ry,cx,dyx->rcd", cubic_matrix(16), cubic_matrix(12), g).reshape(-1, 8)
    assert np.abs(out[0, 1:].double().numpy() - by_hand).max() < 1e-5
    # the +0.1 offset is not a rounding detail: an output-size interpolation samples elsewhere
    plain = F.interpolate(grid, size=(16, 12), mode="bicubic", align_corners=False)
    assert (plain.permute(0, 2, 3, 1).reshape(1, -1, 8) - out[:, 1:]).abs().max() > 1e-2


def test_forward_equals_a_functional_vision_transformer(monkeypatch):
    """The block maths against a transformer written from the state dict with explicit per-head
    softmax attention (a tiny width, so it runs in milliseconds)."""
    monkeypatch.setitem(dinov2.ARCHS, "tiny", (32, 2, 4))
    torch.manual_seed(0)
    net = DinoVisionTransformer("tiny").eval()
    for p in net.parameters():  # off the init's zeros and ones, so every term counts
        p.data.add_(0.1 * torch.randn_like(p))
    x = torch.randn(2, 3, 42, 28)
    s = {k: v.double() for k, v in net.state_dict().items()}

    def ln(t, pre):
        return F.layer_norm(t, (32,), s[pre + ".weight"], s[pre + ".bias"], eps=1e-6)

    t = F.conv2d(x.double(), s["patch_embed.proj.weight"], s["patch_embed.proj.bias"], stride=14)
    t = torch.cat([s["cls_token"].expand(2, 1, 32), t.flatten(2).transpose(1, 2)], 1)
    grid = s["pos_embed"][:, 1:].reshape(1, 37, 37, 32).permute(0, 3, 1, 2)
    pos = F.interpolate(grid, scale_factor=(3.1 / 37, 2.1 / 37), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 6, 32)
    t = t + torch.cat([s["pos_embed"][:, :1], pos], 1)
    for i in range(2):
        b = f"blocks.{i}."
        h = ln(t, b + "norm1")
        qkv = h @ s[b + "attn.qkv.weight"].T + s[b + "attn.qkv.bias"]
        heads = []
        for j in range(4):  # q, k, v are thirds of qkv; head j is columns 8j .. 8j + 7 of each
            q, k, v = (qkv[..., part * 32 + 8 * j: part * 32 + 8 * j + 8] for part in range(3))
            heads.append(torch.softmax(q @ k.transpose(1, 2) / math.sqrt(8), -1) @ v)
        attn = torch.cat(heads, -1) @ s[b + "attn.proj.weight"].T + s[b + "attn.proj.bias"]
        t = t + s[b + "ls1.gamma"] * attn
        h = F.gelu(ln(t, b + "norm2") @ s[b + "mlp.fc1.weight"].T + s[b + "mlp.fc1.bias"])
        t = t + s[b + "ls2.gamma"] * (h @ s[b + "mlp.fc2.weight"].T + s[b + "mlp.fc2.bias"])
    expected = ln(t, "norm")[:, 0]
    with torch.no_grad():
        got = net(x)
    assert got.shape == (2, 32) and torch.allclose(got.double(), expected, atol=1e-5)


def test_preprocessing_is_edm2s_and_within_rounding_of_dgm_evals_pil_bicubic():
    net = torch.nn.Module()
    net.num_features = 1
    features = dinov2.DinoFeatures.__new__(dinov2.DinoFeatures)
    torch.nn.Module.__init__(features)
    features.resize_filter = dinov2.STANDARD_RESIZE
    features.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
    features.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    g = torch.Generator().manual_seed(0)
    for size, channels in ((32, 3), (28, 1), (256, 3)):
        x = torch.rand(2, channels, size, size, generator=g) * 2 - 1
        got = features.preprocess(x)
        pixels = ((x + 1) * 127.5).round().clamp(0, 255).expand(-1, 3, -1, -1)  # uint8 values, gray to RGB
        edm2 = F.interpolate(pixels, size=(224, 224), mode="bicubic", antialias=True) / 255
        edm2 = (edm2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
            [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        assert got.shape == (2, 3, 224, 224) and torch.allclose(got, edm2, atol=1e-5)
        try:
            from PIL import Image
        except ImportError:
            continue
        img = pixels[0].permute(1, 2, 0).to(torch.uint8).numpy()
        pil = np.asarray(Image.fromarray(img).resize((224, 224), Image.BICUBIC), dtype=np.float64)
        ours = (got[0].permute(1, 2, 0) * features.std.view(3) + features.mean.view(3)).double().numpy() * 255
        # dgm-eval resizes with PIL on uint8 and rounds: the mean gap is a fraction of a grey level
        # (uniform noise is the hardest case; 0.43 at 32 px, 0.37 at 256 px)
        assert np.abs(ours - pil).mean() < 0.6


def loads_and_gives_768_features(vitb_file):
    net, ident = build_extractor("dinov2_vitb14", "features", weights=str(vitb_file))
    assert net.num_features == 768 and ident["name"] == "dinov2_vitb14" and ident["resize"] == "bicubic_antialias"
    state = torch.load(vitb_file, weights_only=True)
    assert torch.equal(net.net.blocks[11].mlp.fc2.weight, state["blocks.11.mlp.fc2.weight"])  # the file's values
    x = torch.rand(2, 1, 28, 28) * 2 - 1  # gray 28 px: to RGB, to the input size
    features = net(x)
    assert features.shape == (2, 768) and torch.isfinite(features).all()
    assert (features[0] - features[1]).abs().max() > 1e-3


def test_a_file_in_the_official_layout_loads_and_gives_768_features(vitb_file, monkeypatch):
    monkeypatch.setattr(dinov2, "INPUT_SIZE", 56)  # 4 x 4 patches: the 224 px run is the slow test below
    loads_and_gives_768_features(vitb_file)


@pytest.mark.slow
def test_a_file_in_the_official_layout_gives_768_features_at_224(vitb_file):
    loads_and_gives_768_features(vitb_file)


@pytest.mark.parametrize("change, message", [
    (lambda s: {("blocks.0.attn.qkv_weight" if k == "blocks.0.attn.qkv.weight" else k): v for k, v in s.items()},
     "missing keys blocks.0.attn.qkv.weight; unexpected keys blocks.0.attn.qkv_weight"),
    (lambda s: {**s, "register_tokens": (1, 4, 768)}, "unexpected keys register_tokens"),
    (lambda s: {**s, "pos_embed": (1, 257, 768)},
     "shape of pos_embed is (1, 257, 768) where the net has (1, 1370, 768)"),
])
def test_wrong_files_are_refused_in_one_line(tmp_path, change, message):
    path = write_official_file(tmp_path / "bad.pth", "dinov2_vitb14", change)
    with pytest.raises(WeightsError) as err:
        build_extractor("dinov2_vitb14", "features", weights=str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_vitb_file_for_vitl_and_missing_weights_offline(tmp_path, vitb_file, monkeypatch):
    with pytest.raises(WeightsError, match=r"not a DINOv2 dinov2_vitl14 state dict .*missing keys blocks\.12\."):
        build_extractor("dinov2_vitl14", "features", weights=str(vitb_file))
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(MetricUnavailable, match="no DINOv2 dinov2_vitl14 weights at .*dinov2_vitl14_pretrain.pth "
                                                "and downloads are off"):
        build_extractor("dinov2_vitl14", "features")
    # found in torch hub's cache, where torch.hub.load keeps the official file
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "hub" / "checkpoints" / "dinov2_vitb14_pretrain.pth").write_bytes(vitb_file.read_bytes())
    net, ident = build_extractor("dinov2_vitb14", "features")
    assert net.num_features == 768
    with pytest.raises(MetricUnavailable, match="features, not class logits"):
        build_extractor("dinov2_vitb14", "logits", weights=str(vitb_file))


def test_fd_dinov2_key_through_the_registry(vitb_file, tmp_path, monkeypatch):
    # The 224 px input shrunk to 28 (2 x 2 patches) so that 8 images pass 12 blocks in a blink.
    monkeypatch.setattr(dinov2, "INPUT_SIZE", 28)
    conf = OmegaConf.load("conf/metrics/fd_dinov2.yaml")
    conf.update({"extractor": "dinov2_vitb14", "weights": str(vitb_file), "num_samples": 4, "allow_small": True})
    data = DigitsDataset(resolution=8)
    notes = []
    s = MetricSuite(OmegaConf.create({"fd_dinov2": conf}), data, OmegaConf.create({"name": "digits", "kind": "image"}),
                    torch.device("cpu"), notes.append, cache_dir=tmp_path)
    out = s.compute(lambda n, g: torch.rand(n, 1, 8, 8, generator=g) * 2 - 1, seed=0)
    assert list(out) == ["fd/dinov2_vitb14@4"]
    assert math.isfinite(out["fd/dinov2_vitb14@4"]) and out["fd/dinov2_vitb14@4"] > 0
    proto = s.protocol()["fd/dinov2_vitb14@4"]
    assert proto["extractor"]["resize"] == "bicubic_antialias" and proto["allow_small"]
    # the 2 x 768 minimum: genexp eval refuses 4 samples
    from genexp.errors import UserError
    from genexp.metrics.registry import Context, direction, get

    conf.allow_small = False
    ctx = Context(data, OmegaConf.create({"name": "digits", "kind": "image"}), torch.device("cpu"), small="refuse")
    with pytest.raises(UserError, match=re.escape("fd/dinov2_vitb14@4: 4 generated and 4 real samples, under the "
                                                  "minimum of 1536")):
        get("fid")("fd_dinov2", conf, ctx)
    assert direction("fd") == "minimize" and direction("fd/dinov2_vitl14") == "minimize"
