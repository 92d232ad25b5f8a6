"""The VAE family: its bounds (ELBO <= IWAE <= log p <= 0 on discrete data), its likelihoods, its nets,
and train -> eval nll -> sample through the CLI."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genexp.data.discrete import from_levels
from genexp.errors import UserError
from genexp.methods.pixel_likelihood import Bernoulli, Categorical, Gaussian, build_likelihood

from .conftest import compose

SMALL = ["model=vae", "data=digits8", "model.hidden=32", "model.latent_dim=4", "trainer.device=cpu"]
CLI_TINY = ["logger=none", "trainer.progress=plain", "trainer.max_steps=3", "trainer.log_every=1",
            "trainer.sample_every=3", "trainer.eval_every=3", "trainer.ckpt_every=3", "trainer.grid_samples=4",
            "data.batch_size=16", "model.hidden=32", "model.latent_dim=4", "metrics=[nll,recon]",
            "metrics.nll.iwae_samples=8", "metrics.nll.num_samples=40", "metrics.recon.num_samples=40"]


def build(overrides: list[str]):
    from genexp.methods import build_method

    torch.manual_seed(0)
    return build_method(compose("train", SMALL + overrides), torch.device("cpu"))


def digits8(split: str = "test", n: int = 24) -> torch.Tensor:
    from genexp.data.digits import DigitsDataset

    return DigitsDataset(resolution=8, split=split).x[:n]


@pytest.mark.parametrize("decoder, keys", [("categorical", ("elbo", "iwae")), ("gaussian", ("elbo", "iwae")),
                                           ("bernoulli", ("elbo_binarized", "iwae_binarized"))])
def test_elbo_below_iwae_below_zero_for_discrete_likelihoods(decoder, keys):
    vae = build([f"model.decoder={decoder}"])
    batches = iter(lambda: (digits8("train", 16), -torch.ones(16, dtype=torch.long)), None)
    for step in range(3):  # bounds hold for any weights; a few steps move them off the initial ones
        vae.train_step(batches, step)
    vae.eval()
    x = digits8()
    torch.manual_seed(1)
    # a chunk of 7 draws: k=50 spans several chunks and a ragged last one
    vae.iwae_chunk_elements = 7 * len(x) * 64 * vae.likelihood.params_per_pixel
    out = vae.nll(x, None, iwae_samples=50)
    assert set(out) == set(keys)
    elbo, iwae = out[keys[0]], out[keys[1]]
    assert elbo.shape == iwae.shape == (len(x),) and torch.isfinite(elbo).all() and torch.isfinite(iwae).all()
    # In NLL terms: -ELBO >= -IWAE >= -log p(x) >= 0 (a probability of a discrete image is at most 1).
    assert (iwae <= elbo + 1e-4).all()
    assert (iwae > 0).all()
    assert (elbo - iwae).max() > 1e-3  # the bounds are not the same estimate under two names
    torch.manual_seed(1)
    again = vae.nll(x, None, iwae_samples=50)
    assert torch.equal(again[keys[1]], iwae)  # the global RNG decides the draws


def test_iwae_approaches_the_likelihood_from_above():
    """One latent dimension: log p(x) by quadrature over z, against the bounds."""
    vae = build(["model.latent_dim=1"])
    vae.eval()
    x = digits8(n=6)
    with torch.no_grad():
        z = torch.linspace(-10, 10, 4001).view(-1, 1)
        params = vae.decoder(z)
        log_px_z = torch.stack([vae.likelihood.log_prob(params, xi.expand(len(z), *xi.shape)) for xi in x])
        log_joint = log_px_z - 0.5 * z.view(1, -1) ** 2 - 0.5 * math.log(2 * math.pi)
        exact = -(torch.logsumexp(log_joint.double(), 1) + math.log(float(z[1] - z[0])))
    torch.manual_seed(0)
    out = vae.nll(x, None, iwae_samples=2000)
    assert (out["elbo"] >= out["iwae"]).all()
    assert (out["iwae"] >= exact.float() - 0.05).all()  # an upper bound on the NLL, up to Monte Carlo noise
    assert (out["iwae"] - exact.float()).abs().max() < 1.0  # and a tight one with many draws


@pytest.mark.parametrize("likelihood, values", [
    (Categorical(17), from_levels(torch.arange(17), 17)),
    (Gaussian(17), from_levels(torch.arange(17), 17)),
    (Gaussian(5, scale=0.3), from_levels(torch.arange(5), 5)),
    (Bernoulli(2), torch.tensor([-1.0, 1.0])),
])
def test_discrete_likelihoods_sum_to_one_over_the_levels(likelihood, values):
    params = torch.randn(3, likelihood.params_per_pixel, 1, 1, 1) * 2
    logp = torch.stack([likelihood.log_prob(params, v.expand(3, 1, 1, 1)) for v in values])
    assert torch.allclose(logp.exp().sum(0), torch.ones(3), atol=1e-5)
    assert (logp <= 0).all()


def test_gaussian_bins_stay_finite_far_in_the_tails():
    g = Gaussian(256)
    params = torch.stack([torch.full((1, 1, 1, 1), 0.9), torch.full((1, 1, 1, 1), -7.0)], 1)
    x = torch.tensor([-1.0, -0.2, 0.9]).view(3, 1, 1, 1)
    logp = g.log_prob(params.expand(3, -1, -1, -1, -1), x)
    assert torch.isfinite(logp).all() and logp[2] > -1 and logp[0] < -1000
    density = Gaussian(None, scale=0.5)
    assert density.suffix == "_density" and Bernoulli(17).suffix == "_binarized"


def test_samples_lie_on_the_levels_and_follow_the_generator():
    g = torch.Generator().manual_seed(3)
    for likelihood in (Categorical(17), Gaussian(17)):
        params = torch.randn(4, likelihood.params_per_pixel, 1, 8, 8)
        draw = likelihood.sample(params, torch.Generator().manual_seed(3))
        assert torch.equal(draw, likelihood.sample(params, torch.Generator().manual_seed(3)))
        levels = draw.add(1).mul(8)
        assert torch.allclose(levels, levels.round(), atol=1e-5) and draw.abs().max() <= 1
    vae = build(["model.method.pixels=sample"])
    a, b = vae.sample(5, generator=g), vae.sample(5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == (5, 1, 8, 8)


def test_user_mistakes_are_one_line_errors():
    with pytest.raises(UserError, match="model.decoder=poisson"):
        build_likelihood("poisson", 17)
    with pytest.raises(UserError, match="data.levels is null"):
        build_likelihood("categorical", None)
    with pytest.raises(UserError, match="gaussian_scale"):
        build_likelihood("gaussian", 17, "wide")
    from genexp.commands import user_error_in

    with pytest.raises(Exception) as info:  # Hydra's instantiate wraps it; the CLI finds it inside
        build(["model.method.pixels=best"])
    assert "pixels=best" in str(user_error_in(info.value))


def test_kl_warmup_ramps_beta():
    vae = build(["loss.beta=2.0", "loss.warmup_steps=4"])
    assert [vae.kl_weight(s) for s in range(6)] == [0.5, 1.0, 1.5, 2.0, 2.0, 2.0]


def test_conv_and_conditional_vaes_train_reconstruct_and_sample():
    x, y = digits8("train", 8), torch.arange(8) % 10
    batches = iter(lambda: (x, y), None)
    for overrides in (["model=vae_conv", "model.base_channels=4"], ["model.num_classes=10"]):
        vae = build(overrides)
        out = vae.train_step(batches, 0)
        assert all(torch.isfinite(v) for v in out.values()), out
        vae.eval()
        assert vae.reconstruct(x, y).shape == x.shape and vae.encode(x, y).shape == (8, 4)
        assert vae.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, 1, 8, 8)
        assert set(vae.nll(x, y, iwae_samples=3)) == {"elbo", "iwae"}
    from genexp.models.vae import ConvDecoder, ConvEncoder

    enc, dec = ConvEncoder(28, 1, 3, base_channels=4), ConvDecoder(28, 1, 3, params_per_pixel=2, base_channels=4)
    assert dec(enc(torch.zeros(2, 1, 28, 28))[0]).shape == (2, 2, 1, 28, 28)
    with pytest.raises(UserError, match="resolution 7"):
        ConvEncoder(7, 1, 3)


def test_composition_refuses_continuous_data(run, tmp_path):
    res = run("train", "model=vae", "data=digits", "logger=none", f"hydra.run.dir={tmp_path}")
    assert res.code == 2 and "data.levels=null" in res.err and "Traceback" not in res.err, res


def test_train_eval_nll_sample_through_the_cli(run, tmp_path):
    train_dir = tmp_path / "train"
    res = run("train", "model=vae", "data=digits8", *CLI_TINY, f"hydra.run.dir={train_dir}")
    assert res.code == 0, res
    lines = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines] == [1, 2, 3]
    assert {"loss/neg_elbo", "loss/recon", "loss/kl"} <= set(lines[0])
    assert lines[-1]["nll/iwae@test:40"] <= lines[-1]["nll/elbo@test:40"]
    assert (train_dir / "samples" / "recon_000003.png").is_file()

    ckpt = train_dir / "checkpoints" / "last.pt"
    eval_dir = tmp_path / "eval"
    res = run("eval", f"ckpt={ckpt}", "metrics=[nll]", "metrics.nll.iwae_samples=20", f"hydra.run.dir={eval_dir}")
    assert res.code == 0, res
    assert "nll/elbo@test" in res.out and "nll/iwae@test" in res.out
    scores = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    assert 0 < scores["nll/iwae@test"] <= scores["nll/elbo@test"]
    assert scores["bpd/iwae@test"] == pytest.approx(scores["nll/iwae@test"] / (64 * math.log(2)))

    sample_dir = tmp_path / "sample"
    res = run("sample", f"ckpt={ckpt}", "n=9", "seed=3", f"hydra.run.dir={sample_dir}")
    assert res.code == 0, res
    saved = torch.load(sample_dir / "samples.pt", weights_only=True)
    assert saved["samples"].shape == (9, 1, 8, 8) and saved["samples"].abs().max() <= 1
