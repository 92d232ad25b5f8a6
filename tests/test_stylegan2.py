"""StyleGAN2: parameter counts against the official ones, shapes, and the paper's normalisations."""

from __future__ import annotations

import math

import pytest
import torch

from genexp.models.stylegan2 import (
    Conv2dLayer,
    Discriminator,
    FullyConnected,
    Generator,
    make_filter,
    modulated_conv2d,
    upfirdn2d,
    upsample2d,
)

from .conftest import compose


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def small_g(**kw) -> Generator:
    args = dict(z_dim=32, w_dim=32, resolution=16, channels=3, mapping_layers=2, channel_base=512, channel_max=32)
    return Generator(**{**args, **kw})


# Totals printed by the official code's module summaries (parameters only, buffers apart):
# (resolution, channel_base, mapping layers, D architecture, G total, D total or None).
PRINTED = [
    # stylegan2-ada-pytorch --cfg=auto at 1024 (map 2), as pasted in a user's README of a training run
    (1024, 32768, 2, "resnet", 28_794_124, 29_012_513),
    # stylegan2-ada-pytorch at 32x32, 8 mapping layers, resnet D, channel_base 32768
    (32, 32768, 8, "resnet", 21_523_475, 21_507_073),
    # TF stylegan2-ada print_layers at 256x256, map 2, fmaps 0.5 (generator only)
    (256, 16384, 2, "resnet", 23_191_522, None),
]


@pytest.mark.parametrize("resolution,base,mapping,arch,g_total,d_total", PRINTED)
def test_parameter_totals_equal_the_official_printouts(resolution, base, mapping, arch, g_total, d_total):
    G = Generator(resolution=resolution, channel_base=base, mapping_layers=mapping)
    assert count(G) == g_total
    if d_total is not None:
        assert count(Discriminator(resolution=resolution, channel_base=base, architecture=arch)) == d_total


def test_config_f_at_1024_has_the_official_parameter_counts():
    """Config F (--cfg=stylegan2, 8 mapping layers) at 1024x1024: the printed map-2 total plus six
    262,656-parameter mapping layers; per-layer counts as the official summaries print them."""
    G = Generator(resolution=1024)
    assert count(G) == 28_794_124 + 6 * 262_656 == 30_370_060
    assert count(G.mapping.fc0) == 262_656
    assert count(G.synthesis.b4.conv1) == 2_622_465 and count(G.synthesis.b4.torgb) == 264_195
    assert G.synthesis.b4.const.numel() == 8_192 and G.num_ws == 18
    # synthesis.b128.conv0 (512 -> 256, upsampling) and b256 (256 -> 128), as printed by the official summary
    assert count(G.synthesis.b128.conv0) == 1_442_561 and count(G.synthesis.b128.conv1) == 721_409
    assert count(G.synthesis.b256.conv0) == 426_369 and count(G.synthesis.b256.torgb) == 66_051
    D = Discriminator(resolution=1024)
    # b1024: fromrgb 128, conv0 9,248, conv1 18,496, skip 2,048; b64.skip 262,144; b64.conv0 2,359,808
    assert [count(getattr(D.b1024, n)) for n in ("fromrgb", "conv0", "conv1", "skip")] == [128, 9_248, 18_496, 2_048]
    assert count(D.b64.skip) == 262_144 and count(D.b64.conv0) == 2_359_808
    assert [count(getattr(D.b4, n)) for n in ("conv", "fc", "out")] == [2_364_416, 4_194_816, 513]
    assert [count(getattr(G.synthesis.b512, n)) for n in ("conv0", "conv1", "torgb")] == [139_457, 69_761, 33_027]
    assert [count(getattr(G.synthesis.b1024, n)) for n in ("conv0", "conv1", "torgb")] == [51_297, 25_665, 16_515]


@pytest.mark.parametrize("resolution", [8, 16, 32, 64])
def test_shapes_and_style_count_at_each_resolution(resolution):
    G = small_g(resolution=resolution)
    D = Discriminator(resolution=resolution, channel_base=512, channel_max=32, mbstd_group=2)
    assert G.num_ws == 2 * int(math.log2(resolution)) - 2
    x = G(torch.randn(4, 32))
    assert x.shape == (4, 3, resolution, resolution) and torch.isfinite(x).all()
    assert D(x).shape == (4,)


def test_channel_counts_follow_base_and_max():
    G = Generator(resolution=256, channel_base=16384, channel_max=512, mapping_layers=2)
    widths = {r: getattr(G.synthesis, f"b{r}").conv1.weight.shape[0] for r in G.synthesis.resolutions}
    assert widths == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64}


def test_equalised_learning_rate_keeps_unit_variance():
    torch.manual_seed(0)
    fc = FullyConnected(1024, 256, lr_multiplier=0.01)
    assert fc.weight.std().item() == pytest.approx(100, rel=0.05)  # stored N(0, 1) / lr_multiplier
    assert fc(torch.randn(512, 1024)).std().item() == pytest.approx(1.0, rel=0.1)
    conv = Conv2dLayer(256, 64, 3)
    assert conv(torch.randn(8, 256, 16, 16)).std().item() == pytest.approx(1.0, rel=0.1)


def test_demodulation_normalises_each_output_channel():
    torch.manual_seed(0)
    weight = torch.randn(32, 64, 3, 3) * 5
    x = torch.randn(4, 64, 24, 24)
    styles = torch.rand(4, 64) * 3 + 0.1
    y = modulated_conv2d(x, weight, styles)
    # unit-variance input, demodulated weights: every output channel of every sample has variance ~1
    per_channel = y[:, :, 2:-2, 2:-2].std(dim=(2, 3))
    assert per_channel.mean().item() == pytest.approx(1.0, abs=0.1) and per_channel.max() < 1.35
    # and the output no longer depends on the styles' overall scale
    assert torch.allclose(modulated_conv2d(x, weight, styles * 7), y, atol=1e-4)
    plain = modulated_conv2d(x, weight, styles, demodulate=False)
    assert plain.std() > 5 * y.std()


def test_fir_resampling_keeps_constants():
    f = make_filter()
    assert f.sum().item() == pytest.approx(1.0) and torch.equal(f, f.T)
    ones = torch.ones(1, 2, 8, 8)
    up = upsample2d(ones, f)
    assert up.shape == (1, 2, 16, 16) and torch.allclose(up[..., 2:-2, 2:-2], torch.ones(1, 2, 12, 12))
    down = upfirdn2d(ones, f, down=2, pad=(1, 1, 1, 1))
    assert down.shape == (1, 2, 4, 4) and torch.allclose(down[..., 1:-1, 1:-1], torch.ones(1, 2, 2, 2))


def test_truncation_and_w_avg():
    G = small_g().eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        z = torch.randn(3, 32)
        same = G(z, psi=0.0, noise_mode="const")
        assert torch.allclose(same[0], same[1], atol=1e-5) and torch.allclose(same[0], same[2], atol=1e-5)
        assert not torch.allclose(G(z, psi=1.0, noise_mode="const")[0], G(z, psi=1.0, noise_mode="const")[1])
    G.train()
    before = G.mapping.w_avg.clone()
    G(torch.randn(8, 32))
    assert not torch.equal(before, G.mapping.w_avg)  # tracked while training only


def test_style_mixing_swaps_styles_from_a_layer_on():
    torch.manual_seed(0)
    G = small_g(style_mixing=1.0)
    z = torch.randn(5, 32)
    ws = G.mapping(z, None)
    mixed = G.mix(ws, z, None)
    differs = (mixed != ws).any(dim=2).any(dim=0)  # per style layer
    first = int(differs.float().argmax())
    assert 1 <= first < G.num_ws and differs[first:].all() and not differs[:first].any()
    assert torch.equal(G.mix(ws, z, None)[:, :0], ws[:, :0])
    G.style_mixing = 0.0
    assert torch.equal(G.mix(ws, z, None), ws)


def test_conditional_generator_and_projection_discriminator():
    torch.manual_seed(0)
    G = small_g(num_classes=10).eval()
    D = Discriminator(resolution=16, channel_base=512, channel_max=32, num_classes=10, mbstd_group=2)
    z = torch.randn(4, 32)
    a = G(z, torch.tensor([0, 1, 2, 3]), noise_mode="const")
    b = G(z, torch.tensor([4, 5, 6, 7]), noise_mode="const")
    assert not torch.allclose(a, b)
    assert not torch.allclose(D(a, torch.tensor([0, 1, 2, 3])), D(a, torch.tensor([4, 5, 6, 7])))
    with pytest.raises(ValueError, match="needs labels"):
        G(z)


def test_presets_compose_and_build():
    from hydra.utils import instantiate

    for res in (32, 64, 128, 256, 512, 1024):
        cfg = compose("train", [f"model=stylegan2_{res}", "data=images", "data.path=x", f"data.resolution={res}"])
        assert cfg.model.name == f"stylegan2_{res}" and cfg.model.generator.resolution == res
    cfg = compose("train", ["model=stylegan2_32", "data=cifar10"])
    assert cfg.model.discriminator.architecture == "orig" and cfg.model.generator.mapping_layers == 2
    small = compose("train", ["model=stylegan2_32", "data=cifar10", "model.channel_base=256", "model.channel_max=16",
                              "model.z_dim=8", "model.w_dim=8"])
    G = instantiate(small.model.generator)
    assert G(torch.randn(2, 8)).shape == (2, 3, 32, 32)


def test_path_length_penalty_tracks_its_mean_and_pulls_lengths_together():
    from genexp.losses.regularizers import PathLengthPenalty

    torch.manual_seed(0)
    G = small_g(style_mixing=0.0)
    reg = PathLengthPenalty(weight=2.0, decay=0.5, every=4, batch_shrink=2)
    z = torch.randn(8, 32)
    first = reg(G, z)
    assert first.item() > 0 and reg.pl_mean.item() > 0  # the mean moved halfway from 0 toward the lengths
    # by hand, on the same half batch: lengths of J^T y for the noise the penalty drew
    torch.manual_seed(1)
    ws = G.styles(z[:4]).detach().requires_grad_(True)
    img = G.synthesis(ws)
    noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grad,) = torch.autograd.grad((img * noise).sum(), ws)
    lengths = grad.square().sum(2).mean(1).sqrt()
    torch.manual_seed(1)
    before = reg.pl_mean.clone()
    value = reg(G, z)
    expected_mean = before.lerp(lengths.mean(), 0.5)
    assert reg.pl_mean.item() == pytest.approx(expected_mean.item(), rel=1e-5)
    assert value.item() == pytest.approx(2.0 * (lengths - expected_mean).square().mean().item(), rel=1e-4)
    assert reg.state()["pl_mean"].item() == pytest.approx(reg.pl_mean.item())


def test_path_length_needs_a_style_based_generator():
    from genexp.commands import user_error_in
    from genexp.methods import build_method

    cfg = compose("train", ["model=dcgan", "+loss/reg=[pl]", "model.generator.base_channels=8",
                            "model.discriminator.base_channels=8"])
    with pytest.raises(Exception) as raised:  # Hydra's instantiate wraps it; the CLI unwraps it to one line
        build_method(cfg, torch.device("cpu"))
    err = user_error_in(raised.value)
    assert err is not None and "need a style-based generator" in str(err) and "model=stylegan2" in str(err)


SG2_TINY = ["model=stylegan2", "data=digits", "model.channel_base=128", "model.channel_max=16", "model.z_dim=16",
            "model.w_dim=16", "model.generator.mapping_layers=2", "model.discriminator.mbstd_group=2",
            "data.batch_size=8", "trainer.max_steps=2", "trainer.eval_every=0", "trainer.sample_every=0",
            "trainer.ckpt_every=2", "logger=none", "trainer.progress=plain"]


@pytest.fixture(scope="module")
def sg2_ckpt(tmp_path_factory):
    """A tiny StyleGAN2 trained 2 steps on 16 px digits, shared by the sample and project tests."""
    from .conftest import genexp

    out = tmp_path_factory.mktemp("sg2")
    res = genexp("train", *SG2_TINY, f"hydra.run.dir={out}")
    assert res.code == 0, res
    return out / "checkpoints" / "last.pt"


def test_sample_truncation_mixing_grid_and_interpolation(run, tmp_path, sg2_ckpt):
    from PIL import Image


    ckpt = sg2_ckpt
    res = run("sample", f"ckpt={ckpt}", "n=6", "psi=0", "noise_mode=const", f"hydra.run.dir={tmp_path / 'a'}")
    assert res.code == 0, res
    samples = torch.load(tmp_path / "a/samples.pt", weights_only=True)["samples"]
    assert samples.shape == (6, 1, 16, 16) and torch.allclose(samples[0], samples[5], atol=1e-5)  # psi 0: w_avg
    res = run("sample", f"ckpt={ckpt}", "mode=mixing", "mix_rows=2", "mix_cols=3", "mix_layers=[0,1]",
              f"hydra.run.dir={tmp_path / 'm'}")
    assert res.code == 0, res
    assert Image.open(tmp_path / "m/mixing.png").size == (7 * (4 * 18 + 2), 7 * (3 * 18 + 2))  # x ceil(512 / 74)
    res = run("sample", f"ckpt={ckpt}", "mode=interpolate", "keyframes=3", "frames=4",
              f"hydra.run.dir={tmp_path / 'i'}")
    assert res.code == 0, res
    record = torch.load(tmp_path / "i/interpolation.pt", weights_only=True)
    assert record["frames"].shape[0] == 2 * 4 + 1
    gif = Image.open(tmp_path / "i/interpolation.gif")
    assert gif.n_frames == 9
    from genexp.commands.sample import run as sample
    from genexp.errors import UserError

    with pytest.raises(UserError, match="style layers 0.."):
        sample(compose("sample", [f"ckpt={ckpt}", "mode=mixing", "mix_layers=[0,99]"]))


@pytest.mark.slow
def test_style_tools_refuse_a_dcgan_in_one_line(run, tmp_path):
    from .conftest import TINY
    from .test_bad_input import one_error_line

    res = run("train", *TINY, f"hydra.run.dir={tmp_path / 't'}")
    assert res.code == 0, res
    ckpt = tmp_path / "t/checkpoints/last.pt"
    line = one_error_line(run("sample", f"ckpt={ckpt}", "mode=interpolate", f"hydra.run.dir={tmp_path / 's'}"))
    assert "need a style-based generator" in line
    from PIL import Image

    Image.new("L", (16, 16)).save(tmp_path / "t.png")
    line = one_error_line(run("project", f"ckpt={ckpt}", f"target={tmp_path / 't.png'}",
                              f"hydra.run.dir={tmp_path / 'p'}"))
    assert "inverts a style-based generator" in line


def self_generated_target(ckpt, path, seed: int = 3):
    """An image the checkpoint's own EMA generator made, saved as a PNG: a target it can reach."""
    import numpy as np
    from PIL import Image

    from genexp.commands.common import restore_method

    method, _, _ = restore_method(str(ckpt), torch.device("cpu"))
    G = method.G_ema
    torch.manual_seed(seed)
    with torch.no_grad():
        img = G(torch.randn(1, G.z_dim), noise_mode="const").clamp(-1, 1)
    pixels = ((img[0].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(path)
    return path


def test_project_writes_the_image_latent_and_report(run, tmp_path, sg2_ckpt):
    import json

    from .test_bad_input import one_error_line

    ckpt = sg2_ckpt
    target = self_generated_target(ckpt, tmp_path / "target.png")
    res = run("project", f"ckpt={ckpt}", f"target={target}", "steps=12", "snapshots=3", "space=w_plus",
              "trainer.progress=plain", f"hydra.run.dir={tmp_path / 'p'}")
    assert res.code == 0, res
    out = tmp_path / "p"
    for name in ("projected.png", "progress.png", "latent.pt", "latent.npz", "project.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "project.json").read_text())
    assert report["psnr_db"] > 0 and report["mse"] >= 0 and report["space"] == "w_plus"
    assert "mse" in report["loss"]  # the distance actually minimised is named
    latent = torch.load(out / "latent.pt", weights_only=True)
    assert latent["ws"].shape == (1, 6, 16) and latent["noise"]  # 16 px: 6 styles of 16 dims, noise maps
    assert "skipped" not in res.err
    from .test_lpips import write_weights  # LPIPS-vgg on random backbone weights: the distance and the report

    vgg = write_weights("vgg", tmp_path)
    res = run("project", f"ckpt={ckpt}", f"target={target}", "steps=2", "distance=lpips", f"lpips_weights={vgg}",
              "trainer.progress=plain", f"hydra.run.dir={tmp_path / 'l'}")
    assert res.code == 0, res
    report = json.loads((tmp_path / "l" / "project.json").read_text())
    assert report["loss"] == "lpips_vgg + 1 * mse" and report["lpips_vgg"] >= 0
    line = one_error_line(run("project", f"ckpt={ckpt}", f"target={tmp_path / 'nope.png'}",
                              f"hydra.run.dir={tmp_path / 'x'}"))
    assert "no such file" in line, line
    from genexp.commands.project import run as project
    from genexp.errors import UserError

    for args, words in ((["space=z"], "space=z"), (["distance=l3"], "distance=l3")):
        with pytest.raises(UserError, match=words):
            project(compose("project", [f"ckpt={ckpt}", f"target={target}", "steps=2", *args]))


def test_bf16_blocks_are_the_top_resolutions_and_stay_close_to_float32():
    """The official num_fp16_res in bf16: the top blocks autocast, outputs float32 and near the float32
    network's; R1's double backward goes through them."""
    from genexp.models.stylegan2 import Discriminator, Generator

    torch.manual_seed(0)
    kw = dict(resolution=32, channels=3, channel_base=2048, channel_max=64)
    g32, g16 = Generator(z_dim=64, w_dim=64, mapping_layers=2, **kw), Generator(z_dim=64, w_dim=64, mapping_layers=2,
                                                                              bf16_res=2, **kw)
    g16.load_state_dict(g32.state_dict())
    assert [getattr(g16.synthesis, f"b{r}").bf16 for r in g16.synthesis.resolutions] == [False, False, True, True]
    z = torch.randn(4, 64)
    a, b = g32.eval()(z, noise_mode="const"), g16.eval()(z, noise_mode="const")
    assert b.dtype == torch.float32 and not torch.equal(a, b)
    assert (a - b).abs().max() < 0.05 * a.abs().max()  # bf16 keeps about 3 significant digits
    d32, d16 = Discriminator(**kw), Discriminator(bf16_res=2, **kw)
    d16.load_state_dict(d32.state_dict())
    assert [getattr(d16, f"b{r}").bf16 for r in d16.resolutions] == [True, True, False]
    x = torch.randn(4, 3, 32, 32, requires_grad=True)
    logits = d16(x)
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, d32(x), atol=0.02 * float(d32(x).detach().abs().max()))
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    grad.square().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in d16.b32.parameters())
    assert all(torch.isfinite(p.grad).all() for p in d16.parameters() if p.grad is not None)


def test_fused_and_unfused_modulated_convolutions_agree_in_value_and_gradient():
    """Fused (inference) and unfused (training) modulated convolutions are one function."""
    torch.manual_seed(0)
    G = small_g(style_mixing=0.0)
    z = torch.randn(3, 32)
    grads = []
    for fused in (True, False):
        G.zero_grad()
        img = G(z, noise_mode="const", fused_modconv=fused)
        img.square().mean().backward()
        grads.append((img.detach(), [p.grad.clone() for p in G.parameters()]))
    (a, ga), (b, gb) = grads
    assert torch.allclose(a, b, atol=1e-5)
    assert all(torch.allclose(x, y, rtol=1e-4, atol=1e-6) for x, y in zip(ga, gb))
    # The up-sampling one is a true convolution of the filtered, zero-stuffed input, padded so that
    # no filter tap is lost at the border (the official reference: pad 3, 2, then the flipped kernel).
    x, weight, styles = torch.randn(2, 4, 5, 5), torch.randn(3, 4, 3, 3), torch.rand(2, 4) + 0.5
    up = modulated_conv2d(x, weight, styles, demodulate=False, up=True, resample_filter=make_filter())
    stuffed = upfirdn2d(x * styles[:, :, None, None], make_filter(), up=2, pad=(3, 2, 3, 2), gain=4)
    assert torch.allclose(up, torch.nn.functional.conv2d(stuffed, weight.flip([2, 3])), atol=1e-5)


def test_truncation_cutoff_touches_only_the_first_styles():
    G = small_g(truncation_cutoff=2).eval()
    with torch.no_grad():
        G.mapping.w_avg.normal_()
        z = torch.randn(3, 32)
        full, cut = G.styles(z), G.styles(z, psi=0.0)
    assert torch.allclose(cut[:, :2], G.mapping.w_avg.expand(3, 2, -1)) and torch.equal(cut[:, 2:], full[:, 2:])


@pytest.mark.parametrize("g_arch,d_arch", [("orig", "orig"), ("skip", "skip"), ("resnet", "resnet")])
def test_every_official_architecture_builds_and_runs(g_arch, d_arch):
    torch.manual_seed(0)
    G = small_g(architecture=g_arch)
    D = Discriminator(resolution=16, channel_base=512, channel_max=32, mbstd_group=2, architecture=d_arch,
                      mbstd_channels=2)
    assert G.num_ws == 6 and hasattr(G.synthesis.b8, "torgb") == (g_arch == "skip")
    assert hasattr(G.synthesis.b16, "skip") == (g_arch == "resnet")
    img = G(torch.randn(4, 32))
    assert img.shape == (4, 3, 16, 16) and D(img).shape == (4,)


def test_unknown_architectures_and_noise_modes_are_one_line_user_errors():
    from genexp.errors import UserError

    with pytest.raises(UserError, match="model.generator.architecture=dense"):
        small_g(architecture="dense")
    with pytest.raises(UserError, match="model.discriminator.architecture=dense"):
        Discriminator(resolution=16, architecture="dense")
    with pytest.raises(UserError, match="noise_mode=loud"):
        small_g()(torch.randn(1, 32), noise_mode="loud")


def test_conv_clamp_bounds_activations_at_the_layer_gain():
    torch.manual_seed(0)
    conv = Conv2dLayer(8, 8, 3, activation="lrelu", conv_clamp=0.1)
    y = conv(torch.randn(2, 8, 8, 8) * 100, gain=0.5)
    assert y.abs().max().item() == pytest.approx(0.05)
    G = small_g(conv_clamp=0.01, style_mixing=0.0)
    # each toRGB's output is clamped; the image sums the upsampled ones over 3 resolutions
    assert G(torch.randn(2, 32)).abs().max() <= 0.03 + 1e-6


def test_minibatch_std_with_several_channels():
    from genexp.models.layers import MinibatchStd

    x = torch.randn(4, 6, 3, 3)
    out = MinibatchStd(2, channels=3)(x)
    assert out.shape == (4, 9, 3, 3)
    groups = x.reshape(2, 2, 3, 2, 3, 3)  # (group member, slot, F, C/F, H, W)
    stat = (groups.var(0, unbiased=False) + 1e-8).sqrt().mean(dim=(2, 3, 4))  # (slot, F)
    assert torch.allclose(out[:, 6:, 0, 0], stat.repeat(2, 1), atol=1e-6)
    assert torch.equal(MinibatchStd(None)(x), MinibatchStd(4)(x))


def test_flipped_up_kernels_keep_an_old_checkpoint_s_function_inside_the_border():
    """Checkpoints from before the official up-convolution: their conv0 kernels were cross-correlation
    kernels; flipped, the new layer computes the old one's values everywhere but the outer pixel."""
    from genexp.models.stylegan2 import flip_up_convolutions

    torch.manual_seed(0)
    x, weight, styles = torch.randn(2, 4, 6, 6), torch.randn(3, 4, 3, 3), torch.rand(2, 4) + 0.5
    old = torch.nn.functional.conv2d(upsample2d(x * styles[:, :, None, None], make_filter()), weight, padding=1)
    flipped = flip_up_convolutions({"synthesis.b8.conv0.weight": weight, "synthesis.b8.conv1.weight": weight})
    assert torch.equal(flipped["synthesis.b8.conv1.weight"], weight)
    new = modulated_conv2d(x, flipped["synthesis.b8.conv0.weight"], styles, demodulate=False, up=True,
                           resample_filter=make_filter())
    assert torch.allclose(new[..., 1:-1, 1:-1], old[..., 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(new, old, atol=1e-3)


def test_version_1_checkpoints_of_stylegan2_are_migrated_on_load(tmp_path):
    """Before parity the up-convolution was a cross-correlation: a v1 file's conv0 kernels are flipped
    on load, so the generator computes (inside the border) what it computed when it was saved."""
    from genexp.training.checkpoint import load_checkpoint

    G = small_g()
    modules = {f"G.{k}": v.clone() for k, v in G.state_dict().items()}
    modules.update({f"G_ema.{k}": v.clone() for k, v in G.state_dict().items()})
    modules["D.b16.conv0.weight"] = torch.randn(4, 4, 3, 3)
    ckpt = {"genexp": {"format": "genexp-checkpoint", "version": 1}, "step": 3,
            "config": {"model": {"generator": {"_target_": "genexp.models.stylegan2.Generator"}}},
            "method": {"modules": dict(modules)}}
    torch.save(ckpt, tmp_path / "v1.pt")
    loaded = load_checkpoint(tmp_path / "v1.pt")["method"]["modules"]
    key = "G.synthesis.b8.conv0.weight"
    assert torch.equal(loaded[key], modules[key].flip([2, 3]))
    ema = "G_ema.synthesis.b8.conv0.weight"
    assert torch.equal(loaded[ema], modules[ema].flip([2, 3]))
    assert torch.equal(loaded["D.b16.conv0.weight"], modules["D.b16.conv0.weight"])  # D never had it
    assert torch.equal(loaded["G.synthesis.b8.conv1.weight"], modules["G.synthesis.b8.conv1.weight"])
