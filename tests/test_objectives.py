"""Every GAN objective verified: hand-computed values, gradient directions, the optimal D, and the
constraints and penalties that go with them."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from genexp.data.loader import InfiniteLoader
from genexp.data.toy import RingDataset
from genexp.losses import objectives as O
from genexp.losses.constraints import WeightClip
from genexp.losses.regularizers import GradientPenalty, GradientPowerPenalty
from genexp.methods import build_method

from .conftest import CONF, compose

REAL, FAKE = [2.0, -1.0], [0.5, -3.0]


def sp(x: float) -> float:
    return math.log1p(math.exp(x))


def mean(xs) -> float:
    return sum(xs) / len(xs)


r_mean, f_mean = mean(REAL), mean(FAKE)
REAL_X = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
FAKE_X = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
L1 = [1.0, 1.0]  # mean |real_x - fake_x| per pair

# (objective, expected D loss, expected G loss), computed by hand from REAL and FAKE
CASES = [
    (O.Minimax(), mean([sp(-r) for r in REAL]) + mean([sp(f) for f in FAKE]), -mean([sp(f) for f in FAKE])),
    (O.NonSaturating(), mean([sp(-r) for r in REAL]) + mean([sp(f) for f in FAKE]), mean([sp(-f) for f in FAKE])),
    (O.Wasserstein(), f_mean - r_mean, -f_mean),
    (O.LeastSquares(), 0.5 * mean([(r - 1) ** 2 for r in REAL]) + 0.5 * mean([f ** 2 for f in FAKE]),
     0.5 * mean([(f - 1) ** 2 for f in FAKE])),
    (O.Hinge(), mean([max(0, 1 - r) for r in REAL]) + mean([max(0, 1 + f) for f in FAKE]), -f_mean),
    (O.RelativisticStandard(), mean([sp(-(r - f)) for r, f in zip(REAL, FAKE)]),
     mean([sp(-(f - r)) for r, f in zip(REAL, FAKE)])),
    (O.RelativisticAverage(), mean([sp(-(r - f_mean)) for r in REAL]) + mean([sp(f - r_mean) for f in FAKE]),
     mean([sp(-(f - r_mean)) for f in FAKE]) + mean([sp(r - f_mean) for r in REAL])),
    (O.RelativisticAverageLeastSquares(),
     (mean([(r - f_mean - 1) ** 2 for r in REAL]) + mean([(f - r_mean + 1) ** 2 for f in FAKE])) / 2,
     (mean([(f - r_mean - 1) ** 2 for f in FAKE]) + mean([(r - f_mean + 1) ** 2 for r in REAL])) / 2),
    (O.QuadraticPotential(10.0, "l1"),
     mean([-(r - f) + 0.5 * (r - f) ** 2 / (10 * d) for r, f, d in zip(REAL, FAKE, L1)]),
     mean([r - f for r, f in zip(REAL, FAKE)])),
]


@pytest.mark.parametrize("objective, d_expected, g_expected", CASES, ids=lambda c: type(c).__name__)
def test_values_on_fixed_logits(objective, d_expected, g_expected):
    real, fake = torch.tensor(REAL), torch.tensor(FAKE)
    assert objective.d_loss(real, fake, REAL_X, FAKE_X).item() == pytest.approx(d_expected, rel=1e-6)
    g = objective.g_loss(fake, real if objective.g_needs_real else None)
    assert g.item() == pytest.approx(g_expected, rel=1e-6)


def test_gan_qp_l2_distance():
    qp = O.QuadraticPotential(10.0, "l2")
    assert qp.pair_distance(REAL_X, FAKE_X).tolist() == pytest.approx([1.0, math.sqrt(2.0)])


@pytest.mark.parametrize("objective", [c[0] for c in CASES], ids=lambda c: type(c).__name__)
def test_gradient_directions(objective):
    """D's loss falls as its real logits rise and its fake logits fall; G's falls as fake logits rise
    (at logits where every objective is in its working range: real < 1, 0 < fake < 1)."""
    real = torch.tensor([0.3, -0.5], requires_grad=True)
    fake = torch.tensor([0.2, 0.6], requires_grad=True)
    objective.d_loss(real, fake, REAL_X, FAKE_X).backward()
    assert (real.grad < 0).all() and (fake.grad > 0).all()
    fake.grad = None
    objective.g_loss(fake, real.detach() if objective.g_needs_real else None).backward()
    assert (fake.grad < 0).all()


def test_minimax_saturates_where_non_saturating_does_not():
    fake = torch.tensor([-6.0], requires_grad=True)  # a fake that D rejects with confidence
    O.Minimax().g_loss(fake).backward()
    weak = fake.grad.abs().item()
    fake.grad = None
    O.NonSaturating().g_loss(fake).backward()
    assert weak < 0.01 < 0.99 < fake.grad.abs().item()


def test_optimal_discriminator_for_a_fixed_generator():
    """Goodfellow et al. 2014, prop. 1: for a fixed G, D*(x) = p_data(x) / (p_data(x) + p_g(x)).
    p_data = N(0, 1), p_g = N(1, 1): D*(x) = sigmoid(0.5 - x)."""
    torch.manual_seed(0)
    D = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 400, 0.3)
    objective = O.NonSaturating()
    for _ in range(1600):
        real, fake = torch.randn(4096, 1), torch.randn(4096, 1) + 1.0
        loss = objective.d_loss(D(real).squeeze(1), D(fake).squeeze(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    xs = torch.tensor([[-1.0], [0.0], [0.5], [1.0], [2.0]])
    with torch.no_grad():
        got = torch.sigmoid(D(xs)).squeeze(1)
    want = torch.sigmoid(0.5 - xs.squeeze(1))
    assert (got - want).abs().max().item() < 0.02, (got, want)


def method_for(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = hydra_compose("train", ["model=mlp", "data=ring", "metrics=[]", *overrides])
    return build_method(cfg, torch.device("cpu"))


def test_weight_clipping_keeps_every_critic_weight_in_bounds():
    method = method_for(["loss=wgan", "optim.lr=0.05"])  # a large step, so that clipping has work to do
    loader = InfiniteLoader(RingDataset(num_samples=2048), 64, seed=0)
    for step in range(3):
        method.train_step(loader, step)
    weights = torch.cat([p.detach().flatten() for p in method.D.parameters()])
    assert weights.abs().max().item() <= 0.01 + 1e-9
    assert (weights.abs() > 0.0099).float().mean() > 0.1  # many sit at the bound: the clip acted


def test_weight_clip_alone():
    net = torch.nn.Linear(4, 4)
    torch.nn.init.normal_(net.weight, 0, 1)
    WeightClip(0.05)(net)
    assert net.weight.abs().max().item() <= torch.tensor(0.05).item()  # the bound as float32


def test_gradient_penalty_measures_the_norm_at_interpolates():
    critic = lambda x, labels=None: 0.5 * x.pow(2).sum(1)  # grad = x, so ||grad|| = ||x||
    real, fake = torch.randn(64, 3) + 2, torch.randn(64, 3) - 2
    gp = GradientPenalty(weight=10.0, center=1.0, at="interpolates")
    seen = {}
    points = gp.points

    def spy(r, f):
        seen["x"] = points(r, f)
        return seen["x"]
    gp.points = spy
    value = gp(critic, real, fake)
    expected = 10.0 * (seen["x"].norm(dim=1) - 1).pow(2).mean()
    assert value.item() == pytest.approx(expected.item(), rel=1e-5)
    on_line = (seen["x"] - fake) / (real - fake)  # each interpolate is fake + eps (real - fake)
    assert torch.allclose(on_line, on_line[:, :1].expand_as(on_line), atol=1e-4)


def test_wgan_div_penalty_on_real_and_fake():
    critic = lambda x, labels=None: 0.5 * x.pow(2).sum(1)
    real, fake = torch.randn(16, 2), torch.randn(16, 2) * 3
    got = GradientPowerPenalty(weight=2.0, power=6.0)(critic, real, fake)
    want = 2.0 / 2 * (real.norm(dim=1).pow(6).mean() + fake.norm(dim=1).pow(6).mean())
    assert got.item() == pytest.approx(want.item(), rel=1e-5)


def test_lazy_regularizer_runs_on_its_interval_and_is_scaled_by_it():
    method = method_for(["loss=ns", "+loss/reg=[r1]", "loss.d_regularizers.r1.every=4"])
    real, fake = torch.randn(32, 2), torch.randn(32, 2)
    raw = method.d_regularizers["r1"](method.D, real, fake)
    due = []
    for step in range(8):
        method.d_steps_done = step
        out: dict = {}
        value = method.regularize(real, fake, None, out)
        due.append("reg/r1" in out)
        if due[-1]:
            assert value.item() == pytest.approx(4 * raw.item(), rel=1e-5)
        else:
            assert value == 0.0
    assert due == [True, False, False, False, True, False, False, False]


GAN_LOSSES = sorted(p.stem for p in (CONF / "loss").glob("*.yaml") if "family: gan" in p.read_text())


def test_the_other_families_losses_are_their_own():
    """elbo, vq, nll and edm belong to the VAE, VQ-VAE, likelihood and diffusion families (their tests
    train them)."""
    others = {p.stem for p in (CONF / "loss").glob("*.yaml")} - set(GAN_LOSSES)
    assert others == {"elbo", "vq", "nll", "edm"}


@pytest.mark.parametrize("loss", GAN_LOSSES)
def test_every_loss_config_builds_and_trains_a_step(loss):
    method = method_for([f"loss={loss}"])
    cfg = compose("train", [f"loss={loss}"])
    assert isinstance(instantiate(OmegaConf.create(OmegaConf.to_container(cfg.loss.objective))), O.Objective)
    loader = InfiniteLoader(RingDataset(num_samples=4096), 64, seed=0)
    out = method.train_step(loader, 0)
    assert all(torch.isfinite(v) for v in out.values()), out
