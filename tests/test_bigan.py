"""BiGAN / ALI, BiGAN-QP and O-GAN: the nets, the losses, one step per objective, and the CLI end to end."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from genexp.data import build_dataset
from genexp.data.loader import InfiniteLoader
from genexp.errors import UserError
from genexp.losses.objectives import NonSaturating, QuadraticPotential, Wasserstein
from genexp.methods import build_method
from genexp.methods.bigan import BiGAN, generator_side_loss
from genexp.methods.ogan import pearson, standardise
from genexp.models.encoders import ImageEncoder, JointDiscriminator, OrthogonalDiscriminator, join

from .conftest import compose
from .test_combinations import one_step

SMALL_NETS = ["model.generator.base_channels=8", "model.discriminator.base_channels=8", "data.batch_size=4",
              "metrics=[]", "model.z_dim=8"]
BIGAN = ["model=bigan", *SMALL_NETS, "model.encoder.base_channels=8", "model.discriminator.hidden=16"]
OGAN = ["model=ogan", *SMALL_NETS]


def test_pearson_is_per_sample_correlation_and_ignores_shift_and_scale():
    a, b = torch.randn(5, 8), torch.randn(5, 8)
    expected = torch.tensor([torch.corrcoef(torch.stack([a[i], b[i]]))[0, 1] for i in range(5)])
    assert torch.allclose(pearson(a, b), expected, atol=1e-6)
    assert torch.allclose(pearson(a, 3.0 * b - 2.0), expected, atol=1e-6)
    assert torch.allclose(pearson(a, a), torch.ones(5))
    code = standardise(4.0 * b + 1.0)
    assert torch.allclose(code.mean(1), torch.zeros(5), atol=1e-6) and torch.allclose(code.std(1), torch.ones(5))


def test_orthogonal_discriminator_scores_the_mean_of_its_code():
    D = OrthogonalDiscriminator(z_dim=6, resolution=8, channels=1, base_channels=4, norm="none")
    x = torch.randn(3, 1, 8, 8)
    assert D.features(x).shape == (3, 6)
    assert torch.allclose(D(x), D.features(x).mean(1))


def test_joint_discriminator_reads_both_halves_of_the_pair():
    D = JointDiscriminator(z_dim=4, resolution=8, channels=1, base_channels=4, hidden=8, layers=1)
    x, z = torch.randn(2, 1, 8, 8), torch.randn(2, 4)
    assert join(x, z).shape == (2, 64 + 4)
    base = D(join(x, z))
    assert base.shape == (2,)
    assert not torch.allclose(base, D(join(x, z + 1)))
    assert not torch.allclose(base, D(join(x + 1, z)))


def test_stochastic_encoder_samples_in_training_and_gives_its_mean_otherwise():
    E = ImageEncoder(z_dim=4, resolution=8, channels=1, base_channels=4, norm="none", stochastic=True)
    x = torch.randn(2, 1, 8, 8)
    assert not torch.equal(E(x), E(x))
    E.eval()
    mean = E.head.linear(E.trunk(x)).chunk(2, 1)[0]
    assert torch.equal(E(x), mean)


def test_generator_side_loss_inverts_labels_or_uses_the_pair_loss():
    fake, real = torch.randn(6), torch.randn(6)
    # BiGAN's inverted labels: G wants its pair called real, E wants its pair called fake.
    expected = F.softplus(-fake).mean() + F.softplus(real).mean()
    assert torch.allclose(generator_side_loss(NonSaturating(), fake, real), expected)
    assert torch.allclose(generator_side_loss(Wasserstein(), fake, real), real.mean() - fake.mean())
    # BiGAN-QP: E[T(x, E(x)) - T(G(z), z)], one term that moves both.
    assert torch.allclose(generator_side_loss(QuadraticPotential(), fake, real), (real - fake).mean())


# One of each kind of G loss: inverted labels (ns), with a penalty on pairs (wgan_gp), BiGAN-QP, relativistic.
@pytest.mark.parametrize("loss", ["ns", "wgan_gp", "gan_qp", "rsgan"])
def test_bigan_one_step_trains_g_e_and_d(loss):
    overrides = [*BIGAN, f"loss={loss}"]
    result = one_step(overrides)
    assert result["sample"].shape == (3, 1, 16, 16) and result["sample"].abs().max() <= 1
    cfg = compose("train", overrides)
    torch.manual_seed(0)
    method = build_method(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in method.E.state_dict().items()}
    method.train_step(InfiniteLoader(build_dataset(cfg.data), 4, seed=0), 0)
    after = method.E.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in after if after[k].dtype.is_floating_point)
    assert any(not torch.equal(a, b) for a, b in zip(method.E_ema.state_dict().values(), before.values()))
    if loss == "wgan_gp":
        assert "reg/gp" in result["out"]


def test_bigan_qp_pack_adds_both_reconstruction_terms():
    result = one_step(["experiment=digits_bigan_qp", *BIGAN[1:]])
    assert {"recon/latent", "recon/pixel"} <= set(result["out"])
    cfg = compose("train", ["experiment=digits_bigan_qp"])
    assert cfg.loss.name == "gan_qp" and cfg.model.method.latent_recon_weight == 2.0


def test_ali_stochastic_encoder_trains():
    one_step([*BIGAN, "model.encoder.stochastic=true", "model.discriminator.dropout=0.2"])


@pytest.mark.parametrize("loss", ["gan_qp", "ns"])
def test_ogan_one_step_raises_the_correlation_term(loss):
    result = one_step([*OGAN, f"loss={loss}"])
    assert "corr/z" in result["out"] and -1 <= float(result["out"]["corr/z"]) <= 1


def test_ogan_with_gradient_penalty_needs_a_per_sample_norm():
    one_step([*OGAN, "loss=wgan_gp", "model.discriminator.norm=layer"])


def test_ogan_defaults_to_gan_qp_and_the_command_line_wins():
    assert compose("train", ["model=ogan"]).loss.name == "gan_qp"
    assert compose("train", ["model=ogan", "loss=hinge"]).loss.name == "hinge"


def test_reconstruct_and_encode_shapes():
    for overrides in (BIGAN, OGAN):
        cfg = compose("train", overrides)
        method = build_method(cfg, torch.device("cpu"))
        x = build_dataset(cfg.data)[0][0].unsqueeze(0).repeat(3, 1, 1, 1)
        assert method.encode(x).shape == (3, 8)
        x_hat = method.reconstruct(x, None)
        assert x_hat.shape == x.shape and x_hat.abs().max() <= 1
        assert method.training  # reconstructing leaves the nets' modes alone


@pytest.mark.parametrize("override, message", [("+model.method.pack=2", "pack=2"),
                                               ("+model.method.augment=[translation]", "augment"),
                                               ("model.encoder.z_dim=5", "encoder.z_dim=5")])
def test_bigan_refuses_options_that_break_pairs(override, message):
    cfg = compose("train", [*BIGAN, override])
    with pytest.raises(Exception) as caught:  # Hydra wraps it; the CLI prints the cause's line
        build_method(cfg, torch.device("cpu"))
    cause = caught.value if isinstance(caught.value, UserError) else caught.value.__cause__
    assert isinstance(cause, UserError) and message in str(cause)


def test_bigan_on_points_with_the_mlp_nets():
    cfg = compose("train", ["model=mlp", "data=ring", "metrics=[]"])
    net = {"hidden": 16, "layers": 2}
    model = OmegaConf.create({
        "name": "bigan_mlp",
        "generator": {"_target_": "genexp.models.mlp.Generator", "z_dim": 2, "out_dim": 2, **net},
        "encoder": {"_target_": "genexp.models.encoders.PointEncoder", "z_dim": 2, "in_dim": 2, **net},
        "discriminator": {"_target_": "genexp.models.encoders.JointPointDiscriminator", "z_dim": 2, "in_dim": 2,
                          **net}})
    torch.manual_seed(0)
    method = BiGAN(model, cfg.loss, cfg.optim, ema_beta=0.0)
    out = method.train_step(InfiniteLoader(build_dataset(cfg.data), 32, seed=0), 0)
    assert all(torch.isfinite(v) for v in out.values())
    x = torch.randn(5, 2)
    assert method.sample(4).shape == (4, 2) and method.reconstruct(x).shape == (5, 2)


# O-GAN's CLI run is slow-marked: the BiGAN-QP one covers the same CLI path in the default suite.
@pytest.mark.parametrize("model", ["experiment=digits_bigan_qp", pytest.param("model=ogan", marks=pytest.mark.slow)])
def test_train_eval_recon_and_sample_through_the_cli(run, tmp_path, model):
    tiny = ["logger=none", "trainer.progress=plain", "trainer.max_steps=2", "trainer.log_every=1",
            "trainer.sample_every=2", "trainer.eval_every=2", "trainer.ckpt_every=2", "trainer.grid_samples=8",
            "trainer.eval_samples=16", "data.batch_size=8", "metrics=[recon]", *SMALL_NETS[:2], "model.z_dim=8"]
    if "bigan" in model:
        tiny += ["model.encoder.base_channels=8", "model.discriminator.hidden=16"]
    one_thread = {"OMP_NUM_THREADS": "1"}  # tiny nets: threads only contend on a busy machine
    train_dir = tmp_path / "train"
    res = run("train", model, *tiny, f"hydra.run.dir={train_dir}", env=one_thread)
    assert res.code == 0, res
    assert (train_dir / "samples" / "recon_000002.png").is_file()  # real rows above their G(E(x)) rows
    lines = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert "recon/mse@test:16" in lines[-1]

    ckpt = train_dir / "checkpoints" / "last.pt"
    res = run("eval", f"ckpt={ckpt}", "metrics=[recon]", "metrics.recon.num_samples=16",
              f"hydra.run.dir={tmp_path / 'eval'}", env=one_thread)
    assert res.code == 0, res
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    # the same nets and the same 16 test digits as the in-training evaluation
    assert abs(scores["recon/mse@test:16"] - lines[-1]["recon/mse@test:16"]) < 1e-6

    if "ogan" in model:
        return  # sampling is the GAN method's own: checked once, with BiGAN-QP
    res = run("sample", f"ckpt={ckpt}", "n=9", "seed=3", f"hydra.run.dir={tmp_path / 'sample'}", env=one_thread)
    assert res.code == 0, res
    samples = torch.load(tmp_path / "sample" / "samples.pt", weights_only=True)["samples"]
    assert samples.shape == (9, 1, 16, 16) and samples.abs().max() <= 1
