"""Normalizing flows: exact inverses and log-determinants, the dequantised NLL and bits/dim, temperature,
and RealNVP trained, evaluated and sampled through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genexp.data.discrete import bits_per_dim, from_levels, to_levels
from genexp.models.flows import ActNorm, AffineCoupling, InvConv1x1, Squeeze, glow, realnvp

from .conftest import compose

FLOW_TINY = [
    "logger=none", "trainer.progress=plain", "trainer.max_steps=3", "trainer.log_every=1",
    "trainer.sample_every=3", "trainer.eval_every=3", "trainer.ckpt_every=3", "trainer.grid_samples=4",
    "data=digits8", "data.batch_size=16", "metrics=[nll]", "metrics.nll.batch_size=200",
]
NETS = {
    "realnvp": lambda **kw: realnvp(1, 4, scales=2, couplings=2, hidden=8, **kw),
    "glow": lambda **kw: glow(1, 4, scales=2, steps=2, hidden=8, **kw),
    "glow_slogdet": lambda **kw: glow(1, 4, scales=1, steps=2, hidden=8, lu=False, **kw),
    "realnvp_sigmoid": lambda **kw: realnvp(1, 4, scales=1, couplings=2, hidden=8, scale="sigmoid", **kw),
}


def scrambled(build, dtype=torch.float64):
    """A flow past its identity start: actnorm initialised from data, every weight (the zero-initialised
    last convs too) moved, so that each coupling changes its input."""
    torch.manual_seed(0)
    flow = build().to(dtype).train()
    flow.log_prob(torch.randn(32, 1, 4, 4, dtype=dtype) * 2 + 1)
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return flow.eval()


@pytest.mark.parametrize("name", NETS)
def test_inverse_undoes_forward_and_logdet_is_the_jacobians(name):
    flow = scrambled(NETS[name])
    x = torch.randn(4, 1, 4, 4, dtype=torch.float64)
    zs, _, logdet = flow.encode(x)
    assert (flow.inverse(zs) - x).abs().max() < 1e-4
    assert sum(z[0].numel() for z in zs) == 16  # a bijection: every dimension leaves as some z

    def flat(v):
        return torch.cat([z.flatten() for z in flow.encode(v.view(1, 1, 4, 4))[0]])

    for i in range(len(x)):
        jacobian = torch.autograd.functional.jacobian(flat, x[i].flatten())
        assert torch.allclose(torch.linalg.slogdet(jacobian)[1], logdet[i], atol=1e-8), (name, i)


@pytest.mark.parametrize("layer", [ActNorm(4), InvConv1x1(4), InvConv1x1(4, lu=False), Squeeze(),
                                   AffineCoupling(4, 8, "channel", 1, "tanh"), AffineCoupling(4, 8, "checkerboard", 0)],
                         ids=["actnorm", "conv_lu", "conv", "squeeze", "coupling_channel", "coupling_checker"])
def test_each_layer_in_float32_inverts_within_1e4(layer):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    x = torch.randn(8, 4, 8, 8)
    y, logdet = layer(x)
    assert logdet.shape == (8,)
    assert (layer.inverse(y) - x).abs().max() < 1e-4


@pytest.mark.parametrize("build", [realnvp, glow])
def test_multi_scale_fits_32px_colour_images(build):
    torch.manual_seed(0)
    small = {"couplings": 1} if build is realnvp else {"steps": 1}
    flow = build(3, 32, scales=3, hidden=8, **small).train()
    x = torch.randn(2, 3, 32, 32)
    zs, _, _ = flow.encode(x)
    assert [tuple(z.shape[1:]) for z in zs] == [(6, 16, 16), (12, 8, 8), (48, 4, 4)]  # 3072 dims in all
    assert flow.log_prob(x).shape == (2,)
    assert (flow.inverse(zs) - x).abs().max() < 1e-4
    assert flow.sample(2, temperature=0.5).shape == (2, 3, 32, 32)


def test_actnorm_starts_from_the_first_batch_and_keeps_it_in_the_state_dict():
    norm = ActNorm(3).train()
    x = torch.randn(64, 3, 4, 4) * torch.tensor([0.5, 2.0, 5.0]).view(1, 3, 1, 1) + 3.0
    y, _ = norm(x)
    assert torch.allclose(y.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(y.std((0, 2, 3)), torch.ones(3), atol=1e-4)
    norm(x * 10)  # a second batch does not re-initialise
    fresh = ActNorm(3).train()
    fresh.load_state_dict(norm.state_dict())
    assert torch.equal(fresh(x * 10)[0], norm(x * 10)[0])
    untouched = ActNorm(3).eval()  # scoring before any training leaves it the identity
    assert torch.equal(untouched(x)[0], x)


def method_for(model: str, *overrides: str):
    from genexp.methods import build_method

    cfg = compose("train", [f"model={model}", "data=digits8", *overrides])
    return build_method(cfg, torch.device("cpu"))


def test_nll_of_the_identity_flow_is_a_gaussian_on_dequantised_pixels_and_bpd_converts_it():
    """At its start (actnorm not yet initialised, couplings with RealNVP's tanh scale and split priors zero,
    a rotation for the 1x1 convs) Glow with the affine input is a rotation: the NLL has a closed form."""
    from genexp.metrics.likelihood import nll_results

    method = method_for("glow", "model.flow.steps=2", "model.flow.hidden=8", "model.flow.scale=tanh",
                        "model.method.preprocess=affine").eval()
    k = torch.randint(0, 17, (5, 1, 8, 8))
    x = from_levels(k, 17)
    got = method.nll(x)["exact"]
    g = torch.Generator().manual_seed(0)  # the method's nll_seed
    y = (k.float() + torch.rand(k.shape, generator=g)) / 17
    by_hand = 0.5 * ((y - 0.5) ** 2).flatten(1).sum(1) + 32 * math.log(2 * math.pi) + 64 * math.log(17)
    assert torch.allclose(got, by_hand, atol=1e-3)
    assert torch.equal(method.nll(x)["exact"], got)  # the same noise every time
    table = nll_results({"exact": float(got.mean())}, "test", 64)
    assert table["bpd/exact@test"] == pytest.approx(float(got.mean()) / (64 * math.log(2)))
    assert bits_per_dim(64 * math.log(17), 64) == pytest.approx(math.log2(17))  # uniform: log2(levels) bits


def test_logit_input_counts_its_log_det():
    method = method_for("realnvp", "model.flow.hidden=8", "model.flow.couplings=1")
    y = torch.rand(3, 1, 8, 8, dtype=torch.float64)
    z, logdet = method.to_real(y)
    slope = torch.autograd.functional.jacobian(lambda v: method.to_real(v)[0].sum(), y)  # elementwise map
    assert torch.allclose(logdet, slope.log().flatten(1).sum(1))
    assert torch.allclose(method.from_real(z), y)


def test_train_steps_lower_the_nll_and_samples_sit_on_the_levels():
    from genexp.data.digits import DigitsDataset

    data = DigitsDataset(resolution=8, split="train")
    torch.manual_seed(0)
    method = method_for("glow", "model.flow.steps=2", "model.flow.hidden=16", "optim.lr=3e-3").train()

    def batches():
        while True:
            yield data.x[:64], data.y[:64]

    it = batches()
    losses = [float(method.train_step(it, step)["loss/nll"]) for step in range(8)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    method.eval()
    samples = method.sample(6, generator=torch.Generator().manual_seed(0), temperature=0.7)
    assert samples.shape == (6, 1, 8, 8)
    assert torch.equal(from_levels(to_levels(samples, 17), 17), samples)  # exactly on the 17 levels
    again = method.sample(6, generator=torch.Generator().manual_seed(0), temperature=0.7)
    assert torch.equal(samples, again)
    cold = [method.sample(3, generator=torch.Generator().manual_seed(s), temperature=0.0) for s in (1, 2)]
    assert torch.equal(cold[0], cold[1])  # temperature 0: every prior's mean, no noise left


def test_too_many_scales_for_the_resolution_is_a_user_error():
    from genexp.commands import user_error_in

    with pytest.raises(Exception) as info:
        method_for("realnvp", "model.flow.scales=4")
    assert "divisible by 16" in str(user_error_in(info.value))


def test_temperature_goes_only_to_methods_that_take_it():
    from omegaconf import OmegaConf

    from genexp.commands.sample import temperature_option
    from genexp.errors import UserError

    class NoTemperature:
        def sample(self, n, generator=None, ema=True, labels=None):
            pass

    class WithTemperature:
        def sample(self, n, generator=None, ema=True, labels=None, temperature=1.0):
            pass

    cfg = OmegaConf.create({"temperature": 0.7})
    assert temperature_option(cfg, WithTemperature()) == {"temperature": 0.7}
    with pytest.raises(UserError, match="temperature=0.7"):
        temperature_option(cfg, NoTemperature())
    assert temperature_option(OmegaConf.create({"temperature": 1.0}), NoTemperature()) == {}
    with pytest.raises(UserError, match="temperature=-1: must be at least 0"):
        temperature_option(OmegaConf.create({"temperature": -1}), WithTemperature())


def test_realnvp_train_eval_sample_through_the_cli(run, tmp_path):
    small = ["model=realnvp", "model.flow.couplings=1", "model.flow.hidden=8"]
    res = run("train", *small, *FLOW_TINY, f"hydra.run.dir={tmp_path / 't'}")
    assert res.code == 0, res
    lines = [json.loads(line) for line in (tmp_path / "t/metrics.jsonl").read_text().splitlines()]
    assert "loss/nll" in lines[0] and "bpd" in lines[0]
    trained = lines[-1]["nll/exact@test"]
    assert lines[-1]["bpd/exact@test"] == pytest.approx(trained / (64 * math.log(2)))

    ckpt = tmp_path / "t/checkpoints/last.pt"
    res = run("eval", f"ckpt={ckpt}", "metrics=[nll]", "metrics.nll.batch_size=200", f"hydra.run.dir={tmp_path / 'e'}")
    assert res.code == 0, res
    assert "nll/exact@test" in res.out and "bpd/exact@test" in res.out
    record = json.loads((tmp_path / "e/metrics.json").read_text())
    assert record["metrics"]["nll/exact@test"] == pytest.approx(trained, abs=1e-6)  # fixed dequantisation noise

    res = run("sample", f"ckpt={ckpt}", "n=9", "temperature=0.7", f"hydra.run.dir={tmp_path / 's'}")
    assert res.code == 0, res
    samples = torch.load(tmp_path / "s/samples.pt", weights_only=True)["samples"]
    assert samples.shape == (9, 1, 8, 8) and samples.abs().max() <= 1
