"""EDM (Karras et al. 2022): the preconditioning and loss against the paper's formulas and against EDM's
official code (tests/data/edm_reference.pt, made by tests/data/edm_make_reference.py), the samplers' time
steps and network evaluations, the presets' parameter counts against the official networks, a training
step of every preset, sampling determinism, the CLI end to end, and the user's mistakes."""

from __future__ import annotations

import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from genexp.errors import UserError
from genexp.models.edm import sampler as S
from genexp.models.edm.precond import EDMPrecond, VEPrecond, VPPrecond, build_precond, denoising_loss
from genexp.models.edm.unet import SongUNet

from .conftest import compose

REFERENCE = Path(__file__).parent / "data" / "edm_reference.pt"
LOSS = OmegaConf.create({"P_mean": -1.2, "P_std": 1.2})
# Parameters of EDMPrecond(img_resolution=32, img_channels=3, ...) with train.py's --arch settings, counted with
# NVlabs/edm's training/networks.py on a CPU: (arch, label_dim, augment_dim) -> count.
OFFICIAL_COUNTS = {
    ("edm_ddpmpp", 0, 0): 55_732_739, ("edm_ddpmpp", 0, 9): 55_733_891,
    ("edm_ddpmpp", 10, 0): 55_734_147, ("edm_ddpmpp", 10, 9): 55_735_299,
    ("edm_ncsnpp", 0, 0): 56_395_523, ("edm_ncsnpp", 0, 9): 56_397_827,
    ("edm_ncsnpp", 10, 0): 56_398_339, ("edm_ncsnpp", 10, 9): 56_400_643,
}
SMALL = ["model=edm_small", "data=digits", "trainer.device=cpu", "model.net.model_channels=8"]


class Probe(nn.Module):
    """A raw net F that records its inputs and returns a fixed tensor."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out, self.seen = out, {}

    def forward(self, x, noise_labels, class_labels=None, augment_labels=None):
        self.seen = {"x": x, "c_noise": noise_labels, "labels": class_labels}
        return self.out


def fixed_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.randn(3, 1, 4, 4, generator=g), torch.tensor([0.002, 0.5, 80.0]), torch.randn(3, 1, 4, 4, generator=g)


# preconditioning and loss: the paper's formulas

def test_edm_preconditioning_is_the_papers():
    x, sigma, f = fixed_inputs()
    D = EDMPrecond(Probe(f), sigma_data=0.5)
    out = D(x, sigma)
    s = sigma.view(-1, 1, 1, 1).double()
    c_skip, c_out = 0.25 / (s ** 2 + 0.25), s * 0.5 / (s ** 2 + 0.25).sqrt()
    c_in, c_noise = 1 / (s ** 2 + 0.25).sqrt(), s.log().flatten() / 4
    torch.testing.assert_close(D.model.seen["x"].double(), c_in * x.double(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(D.model.seen["c_noise"].double(), c_noise, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(out.double(), c_skip * x.double() + c_out * f.double(), rtol=1e-6, atol=1e-6)
    # the loss weight makes the effective target of F unit-weighted: lambda(sigma) c_out(sigma)^2 = 1
    torch.testing.assert_close(D.loss_weight(s, LOSS) * c_out ** 2, torch.ones_like(s))


def test_vp_and_ve_preconditioning_are_edms_table_1():
    x, sigma, f = fixed_inputs()
    s = sigma.view(-1, 1, 1, 1)
    vp = VPPrecond(Probe(f))
    out = vp(x, sigma)
    t = ((0.1 ** 2 + 2 * 19.9 * (1 + s.double() ** 2).log()).sqrt() - 0.1) / 19.9  # the VP schedule's inverse
    torch.testing.assert_close(vp.sigma(t), s.double(), rtol=1e-6, atol=0)
    torch.testing.assert_close(vp.model.seen["x"], x / (s ** 2 + 1).sqrt())
    # float32 as in EDM: log(1 + sigma^2) keeps ~3 digits at sigma = 0.002
    torch.testing.assert_close(vp.model.seen["c_noise"], 999 * t.flatten().float(), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(out, x - s * f)
    # sigma(epsilon_t) in float32, as EDM computes it (0.000977 where float64 gives 0.001000)
    assert vp.sigma_min == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9 * 1e-10 + 0.1 * 1e-5)), rel=0.03)
    assert vp.sigma_max == pytest.approx(math.sqrt(math.expm1(0.5 * 19.9 + 0.1)), rel=1e-6)
    ve = VEPrecond(Probe(f))
    out = ve(x, sigma)
    torch.testing.assert_close(ve.model.seen["x"], x)
    torch.testing.assert_close(ve.model.seen["c_noise"], (sigma / 2).log())
    torch.testing.assert_close(out, x + s * f)
    torch.testing.assert_close(ve.loss_weight(s, LOSS), 1 / s ** 2)


def test_training_sigmas_follow_each_formulation():
    torch.manual_seed(0)
    D = EDMPrecond(Probe(torch.zeros(1)))
    log_sigma = D.sample_sigma(40_000, torch.device("cpu"), LOSS).log()
    assert log_sigma.mean().item() == pytest.approx(-1.2, abs=0.03)
    assert log_sigma.std().item() == pytest.approx(1.2, abs=0.03)
    ve = VEPrecond(Probe(torch.zeros(1)))
    s = ve.sample_sigma(20_000, torch.device("cpu"), LOSS)
    assert 0.02 <= s.min() and s.max() <= 100 and s.log().mean().item() == pytest.approx(math.log(math.sqrt(2)),
                                                                                          abs=0.06)
    vp = VPPrecond(Probe(torch.zeros(1)))
    s = vp.sample_sigma(20_000, torch.device("cpu"), LOSS)
    assert vp.sigma_min * 0.999 <= s.min() and s.max() <= vp.sigma_max * 1.001


def test_edm_loss_on_fixed_inputs():
    x, sigma, f = fixed_inputs()
    noise = torch.randn_like(x)
    D = EDMPrecond(Probe(f))
    s = sigma.view(-1, 1, 1, 1)
    loss = denoising_loss(D, x, s, noise, LOSS)
    y_noisy = x + noise * s
    c_skip, c_out = 0.25 / (s ** 2 + 0.25), s * 0.5 / (s ** 2 + 0.25).sqrt()
    weight = (s ** 2 + 0.25) / (s * 0.5) ** 2
    torch.testing.assert_close(loss, weight * (c_skip * y_noisy + c_out * f - x) ** 2, rtol=1e-5, atol=1e-6)


# against EDM's official code

def reference_net(rec: dict, common: dict, kind: str):
    state, offset = {}, 0
    for key, shape in zip(rec["state_keys"], rec["state_shapes"]):
        n = math.prod(shape)
        state[key] = rec["state_flat"][offset:offset + n].reshape(shape)
        offset += n
    settings = dict(common)
    res, ch, label_dim = settings.pop("img_resolution"), settings.pop("img_channels"), settings.pop("label_dim")
    D = build_precond(kind, SongUNet(res, ch, ch, label_dim=label_dim, **settings, **rec["kwargs"]), label_dim)
    D.load_state_dict(state)
    return D.eval()


@pytest.fixture(scope="module")
def reference():
    return torch.load(REFERENCE, weights_only=True)


def training_sigma(D, kind: str, draw: torch.Tensor) -> torch.Tensor:
    """The official loss's sigma from its first draw: normal (edm), uniform (vp, ve)."""
    if kind == "edm":
        return (draw * 1.2 - 1.2).exp()
    if kind == "vp":
        return D.sigma(1 + draw * (D.epsilon_t - 1))
    return D.sigma_min * (D.sigma_max / D.sigma_min) ** draw


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp"])
def test_denoiser_and_losses_match_the_official_code(reference, arch):
    rec = reference["nets"][arch]
    x, sigma, labels = reference["x"], reference["sigma"], reference["labels"]
    for kind in ("edm", "vp", "ve"):
        D = reference_net(rec, reference["common"], kind)
        with torch.no_grad():
            expected = rec[f"D_{kind}"]
            torch.testing.assert_close(D(x, sigma, labels), expected, rtol=1e-5, atol=1e-5 * expected.abs().max())
            s = training_sigma(D, kind, rec[f"loss_{kind}_draw"])
            loss = denoising_loss(D, x, s, rec[f"loss_{kind}_noise"], LOSS, labels)
            expected = rec[f"loss_{kind}"]
            torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-5 * expected.abs().max())


@pytest.mark.parametrize("arch", ["ddpmpp", "ncsnpp"])
def test_samplers_match_the_official_code(reference, arch):
    rec = reference["nets"][arch]
    latents, labels = reference["latents"], reference["sample_labels"]
    runs = [("heun4", "edm", S.sampler_settings(steps=4)),
            ("heun4_vp", "vp", S.sampler_settings(steps=4)),  # sigma range clipped to VP's
            ("euler4", "edm", S.sampler_settings(steps=4, name="euler")),
            ("stochastic4", "edm", S.sampler_settings(steps=4, name="stochastic", S_churn=10, S_min=0.05, S_max=50,
                                                      S_noise=1.003))]
    for key, kind, settings in runs:
        D = reference_net(rec, reference["common"], kind)
        draws = iter(rec["stochastic4_noise"])  # the official run's churn noise, in order
        with torch.no_grad():
            out = S.sample(partial(D, class_labels=labels), latents, settings, D.sigma_min, D.sigma_max,
                           noise=partial(next_draw, draws))
        expected = rec[key]
        assert out.dtype == torch.float64
        torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6 * expected.abs().max(), msg=key)


def next_draw(draws, like: torch.Tensor) -> torch.Tensor:
    return next(draws)


# samplers

def test_time_steps_are_the_papers_discretisation():
    settings = S.sampler_settings(steps=18)
    t = S.time_steps(settings)
    i = torch.arange(18, dtype=torch.float64)
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(t[:-1], expected)
    assert len(t) == 19 and t[-1] == 0 and t[0].item() == pytest.approx(80) and t[17].item() == pytest.approx(0.002)
    assert (t[:-1].diff() < 0).all()
    clipped = S.time_steps(settings, net_sigma_min=0.02, net_sigma_max=50.0)  # a VE net's supported range
    assert clipped[0].item() == pytest.approx(50) and clipped[17].item() == pytest.approx(0.02)
    assert S.time_steps(S.sampler_settings(steps=1)).tolist() == [80.0, 0.0]


@pytest.mark.parametrize("name, steps, nfe", [("heun", 18, 35), ("heun", 4, 7), ("euler", 18, 18),
                                              ("stochastic", 5, 9), ("heun", 1, 1)])
def test_network_evaluations(name, steps, nfe):
    settings = S.sampler_settings(steps=steps, name=name, S_churn=10.0)
    sigmas = []

    def denoise(x, sigma):
        sigmas.append(float(sigma))
        return torch.zeros_like(x)

    out = S.sample(denoise, torch.randn(2, 1, 4, 4), settings)
    assert len(sigmas) == settings.nfe == nfe and settings.tag == f"{name}{nfe}"
    assert min(sigmas) > 0  # D is never asked at sigma = 0
    assert out.abs().max() < 1e-6  # D = 0 everywhere: the ODE ends at 0


def test_sampler_settings_refuse_bad_values():
    for kwargs, key in [({"steps": 0}, "steps=0"), ({"name": "unknown"}, "sampler=unknown")]:
        with pytest.raises(UserError, match=key):
            S.sampler_settings(**kwargs)
    for cfg, key in [({"rho": 0}, "model.sampler.rho=0"), ({"rho": -7}, "rho=-7"),
                     ({"sigma_min": 80, "sigma_max": 80}, "sigma_min=80"), ({"sigma_min": 0.0}, "sigma_min=0"),
                     ({"steps": 2.5}, "model.sampler.steps=2.5")]:
        with pytest.raises(UserError, match=key):
            S.sampler_settings(cfg)


# the presets

@pytest.mark.parametrize("preset", ["edm_ddpmpp", "edm_ncsnpp"])
def test_parameter_counts_match_the_official_networks(preset, monkeypatch):
    from genexp.models.edm import unet

    monkeypatch.setattr(unet, "xavier_uniform", lambda shape, *args: torch.empty(shape))  # counted, not initialised
    cfg = compose("train", [f"model={preset}", "data=cifar10", "trainer.device=cpu"])
    settings = OmegaConf.to_container(cfg.model.net, resolve=True)
    assert settings.pop("_target_") == "genexp.models.edm.unet.SongUNet"
    for (name, classes, augment), count in OFFICIAL_COUNTS.items():
        if name == preset:
            net = SongUNet(**{**settings, "label_dim": classes, "augment_dim": augment})
            assert sum(p.numel() for p in net.parameters()) == count, (name, classes, augment)

def build(overrides: list[str], base: list[str] | None = None):
    from genexp.methods import build_method

    torch.manual_seed(0)
    return build_method(compose("train", (SMALL if base is None else base) + overrides), torch.device("cpu"))


def batches(shape, classes: int = 10, n: int = 2):
    g = torch.Generator().manual_seed(1)
    while True:
        yield torch.rand((n, *shape), generator=g) * 2 - 1, torch.randint(0, classes, (n,), generator=g)


def one_step(method, shape, classes=10, n=2, step=1):
    before = [p.detach().clone() for p in method.net.parameters()]
    out = method.train_step(batches(shape, classes, n), step)
    assert torch.isfinite(out["loss/denoise"]) and out["loss/denoise"] > 0
    moved = sum(not torch.equal(a, b) for a, b in zip(before, method.net.parameters()))
    return out, moved, before


@pytest.mark.parametrize("kind", ["edm", "vp", "ve"])
def test_small_preset_trains_with_each_preconditioning(kind):
    method = build([f"model.precond.kind={kind}", "model.num_classes=10", "optim.lr_rampup_kimg=0"])
    _, moved, before = one_step(method, (1, 16, 16))
    assert moved > 10
    # an EMA step with a ramped-up half-life of 0.05 x 2 images: the EMA nearly follows the net
    for p_ema, p, p0 in zip(method.net_ema.parameters(), method.net.parameters(), before):
        beta = 0.5 ** (2 / (0.05 * 2))
        torch.testing.assert_close(p_ema, p0 + (1 - beta) * (p - p0))


@pytest.mark.parametrize("preset", ["edm_ddpmpp", "edm_ncsnpp"])
def test_cifar10_preset_architectures_train_at_a_small_width(preset):
    """The presets' nets (embedding, encoder, filter, attention at 16x16, dropout) at 16x16 and 16 channels."""
    method = build(["model.num_classes=10", "optim.lr_rampup_kimg=0", "model.net.model_channels=16"],
                   [f"model={preset}", "data=digits", "trainer.device=cpu"])
    assert method.net.model.enc["16x16_block0"].attention and method.net.model.enc["16x16_block0"].dropout == 0.13
    _, moved, _ = one_step(method, (1, 16, 16), n=2)
    assert moved > 100


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["edm_ddpmpp", "edm_ncsnpp"])
def test_cifar10_presets_take_a_training_step(preset):
    """The full-size nets at 32x32 RGB, batch 1: one forward and backward (seconds on a CPU)."""
    method = build(["model.num_classes=10", "optim.lr_rampup_kimg=0"],
                   [f"model={preset}", "data=cifar10", "trainer.device=cpu"])
    _, moved, _ = one_step(method, (3, 32, 32), n=1)
    assert moved > 100


def test_lr_ramps_up_over_images_and_step_0_runs_at_0():
    method = build(["optim.lr_rampup_kimg=0.01"])  # 10 images
    lrs = []
    for step in range(4):
        method.train_step(batches((1, 16, 16), n=4), step)
        lrs.append(method.optimizers["model"].param_groups[0]["lr"])
    assert lrs == pytest.approx([0.0, 4e-4, 8e-4, 1e-3])
    method.accumulate = 2  # two micro-batches of 2: a step of 4 images, as above
    method.train_step(batches((1, 16, 16), n=2), 1)
    assert method.optimizers["model"].param_groups[0]["lr"] == pytest.approx(4e-4)


def test_ema_half_life_in_images():
    from genexp.methods.ema import half_life_beta

    # EDM's training loop: beta = 0.5 ** (batch / min(500k, 0.05 * images seen))
    assert half_life_beta(512, 500, 512 * 10**6, 0.05) == pytest.approx(0.5 ** (512 / 500_000))
    assert half_life_beta(512, 500, 512 * 1000, 0.05) == pytest.approx(0.5 ** (512 / (0.05 * 512_000)))
    assert half_life_beta(512, 500, 0, 0.05) == 0.0  # step 0: the EMA is a copy


def test_sampling_is_deterministic_for_a_seed():
    method = build(["model.num_classes=10", "model.sampler.steps=3"])
    method.eval()

    def draw(seed, **options):
        return method.sample(5, generator=torch.Generator().manual_seed(seed), **options)

    a, b = draw(1), draw(1)
    assert a.shape == (5, 1, 16, 16) and torch.equal(a, b) and a.abs().max() <= 1
    assert not torch.equal(a, draw(2))
    assert torch.equal(draw(1, sampler="stochastic"), draw(1, sampler="stochastic"))
    assert not torch.equal(draw(1, sampler="stochastic"), a)
    torch.testing.assert_close(draw(1, batch_size=2), a, rtol=0, atol=1e-4)  # batching keeps the latents
    labels = torch.full((5,), 3)
    assert not torch.equal(method.sample(5, torch.Generator().manual_seed(1), labels=labels), a)
    assert method.sample_tag() == "heun5" and method.sampler_settings(steps=18).tag == "heun35"


def test_a_training_step_under_bf16_autocast():
    method = build(["model.num_classes=10", "optim.lr_rampup_kimg=0"])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, moved, _ = one_step(method, (1, 16, 16))
    assert moved > 10 and all(p.dtype == torch.float32 for p in method.net.parameters())


def test_metric_keys_carry_the_sampler_and_nfe():
    from genexp.metrics.suite import sampler_tagged

    method = build(["model.sampler.steps=18"])
    tagged = sampler_tagged({"fid/digits_lenet@2k": 3.0, "is/digits_lenet@2k": 2.0}, (method, True))
    assert tagged == {"fid/digits_lenet@2k/heun35": 3.0, "is/digits_lenet@2k/heun35": 2.0, "sample/nfe": 35.0}
    assert sampler_tagged({"fid/x@2k": 1.0}, (object(), True)) == {"fid/x@2k": 1.0}


# the user's mistakes

@pytest.mark.parametrize("overrides, message", [
    (["loss=ns"], "loss=edm"),
    (["optim=adam"], "optim=adam_edm"),
    (["model.sampler.steps=0"], "model.sampler.steps=0"),
    (["model.sampler.name=unknown"], "model.sampler.name=unknown"),
    (["model.sampler.rho=0"], "rho must be > 0"),
    (["model.sampler.sigma_min=80", "model.sampler.sigma_max=0.002"], "sigma_min < sigma_max"),
])
def test_compositions_that_cannot_train(overrides, message):
    from genexp.config.checks import check_train

    with pytest.raises(UserError, match=message):
        check_train(compose("train", SMALL + overrides))


@pytest.mark.parametrize("overrides, message", [
    (["model.precond.kind=ddpm"], "model.precond.kind=ddpm"),
    (["model.net.encoder_type=skipping"], "model.net.encoder_type=skipping"),
    (["data=mnist", "model.net.channel_mult=[1,1,1,1,1,1,1]"], "does not halve 6 times"),
])
def test_models_that_cannot_be_built(overrides, message):
    from genexp.commands import user_error_in

    with pytest.raises(Exception) as info:  # Hydra's instantiate wraps it; the CLI finds it inside
        build(overrides)
    assert message in str(user_error_in(info.value))


def test_edm_losses_refuse_gan_models():
    from genexp.config.checks import check_train

    with pytest.raises(UserError, match="loss=edm is an objective for diffusion models"):
        check_train(compose("train", ["model=dcgan", "loss=edm", "data=digits"]))


# the CLI

CLI_TINY = ["model=edm_small", "data=digits", "model.num_classes=10", "logger=none", "trainer.progress=plain",
            "trainer.max_steps=2", "trainer.log_every=1", "trainer.sample_every=2", "trainer.eval_every=2",
            "trainer.ckpt_every=2", "trainer.grid_samples=4", "trainer.eval_samples=32", "data.batch_size=8",
            "model.net.model_channels=8", "model.sampler.steps=2", "metrics=[fid]"]


def test_train_and_sample_through_the_cli(run, tmp_path):
    train_dir = tmp_path / "train"
    res = run("train", *CLI_TINY, f"hydra.run.dir={train_dir}")
    assert res.code == 0, res
    lines = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines] == [1, 2] and "loss/denoise" in lines[0]
    assert "fid/digits_lenet@32/heun3" in lines[-1] and lines[-1]["sample/nfe"] == 3
    ckpt = train_dir / "checkpoints" / "last.pt"

    res = run("sample", f"ckpt={ckpt}", "n=4", "steps=3", "sampler=euler", "class=3",
              f"hydra.run.dir={tmp_path / 'sample'}")
    assert res.code == 0, res
    saved = torch.load(tmp_path / "sample" / "samples.pt", weights_only=True)
    assert saved["samples"].shape == (4, 1, 16, 16) and saved["labels"].tolist() == [3] * 4

    out = tmp_path / "bad"
    res = run("sample", f"ckpt={ckpt}", "steps=0", f"hydra.run.dir={out}")
    assert res.code == 2 and "steps=0" in res.err and "Traceback" not in res.err, res
    assert not (out / "samples.png").exists()

    # eval with another sampler: the key says which (euler with 4 steps: 4 network evaluations)
    res = run("eval", f"ckpt={ckpt}", "metrics=[fid]", "n=32", "metrics.fid.allow_small=true", "sampler=euler",
              "steps=4", f"hydra.run.dir={tmp_path / 'eval'}")
    assert res.code == 0, res
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert "fid/digits_lenet@32/euler4" in record["metrics"] and record["metrics"]["sample/nfe"] == 4, record


@pytest.mark.slow
def test_resume_is_bit_exact(run, tmp_path):
    from .test_resume import assert_bitwise_equal, weights

    steps = [*CLI_TINY, "trainer.max_steps=4", "trainer.ckpt_every=2", "trainer.eval_every=0",
             "trainer.sample_every=0", "optim.lr_rampup_kimg=0.02", "model.net.dropout=0.1"]
    full = tmp_path / "full"
    assert (res := run("train", *steps, f"hydra.run.dir={full}")).code == 0, res
    fork = tmp_path / "fork"
    res = run("train", f"resume={full / 'checkpoints/step_000002.pt'}", f"hydra.run.dir={fork}")
    assert res.code == 0 and "at step 2" in res.out, res
    assert_bitwise_equal(weights(full / "checkpoints/last.pt"), weights(fork / "checkpoints/last.pt"))


def test_sample_command_options():
    """What genexp sample checks before it writes anything (in-process; the CLI test runs one)."""
    from genexp.commands.sample import class_labels, sampler_options

    method = build(["model.num_classes=10"])
    cfg = OmegaConf.create({"sampler": "euler", "steps": 7})
    assert sampler_options(cfg, method) == {"sampler": "euler", "steps": 7}
    assert sampler_options(OmegaConf.create({"sampler": None, "steps": None}), method) == {}
    for bad, message in [({"sampler": "unknown"}, "sampler=unknown"), ({"steps": 0}, "steps=0"),
                         ({"steps": -3, "sampler": "heun"}, "steps=-3")]:
        with pytest.raises(UserError, match=message):
            sampler_options(OmegaConf.create(bad), method)
    with pytest.raises(UserError, match="has no sampler steps"):
        sampler_options(cfg, object())
    with pytest.raises(UserError, match="classes 0..9"):
        class_labels(10, 4, method.num_classes)
    assert class_labels(3, 2, method.num_classes).tolist() == [3, 3]


def test_gan_loss_with_edm_is_one_line(run, tmp_path):
    res = run("train", "model=edm_small", "loss=hinge", "logger=none", f"hydra.run.dir={tmp_path}")
    assert res.code == 2 and "loss=edm" in res.err and "Traceback" not in res.err, res
    assert len(res.err.strip().splitlines()) == 1
