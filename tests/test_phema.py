"""Post-hoc EMA (EDM2, Karras et al. 2024): the tracks against the closed-form power-function profile,
sigma_rel <-> gamma against the paper's formula and published pairs, the least-squares reconstruction
against the directly computed EMA of a toy weight sequence, and `genexp phema` on a tiny real run."""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pytest
import torch
from scipy.optimize import brentq
from torch import nn

from genexp.errors import UserError
from genexp.training.phema import SIGMA_REL_MAX, PowerEMA, gamma_of, sigma_rel_of, solve_coefficients
from tests.conftest import compose


def paper_sigma_rel(gamma: float) -> float:
    """EDM2 eq. 123, written out here: the std of the profile t^gamma on [0, 1]."""
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def paper_gamma(sigma_rel: float) -> float:
    """eq. 123 inverted by bracketing (genexp solves the cubic instead) on the branch gamma > 0."""
    return brentq(lambda g: paper_sigma_rel(g) - sigma_rel, 0.0, 1e4, xtol=1e-13)


def direct_ema(W: np.ndarray, gamma: float) -> np.ndarray:
    """The power-function EMA of the rows of W (one per step) after len(W) steps: step s weighs
    the normalised profile (gamma + 1) tau^gamma / T^(gamma + 1) integrated over (s - 1, s]."""
    T = len(W)
    s = np.arange(1, T + 1, dtype=np.float64)
    weights = (s ** (gamma + 1) - (s - 1) ** (gamma + 1)) / T ** (gamma + 1)
    return weights @ W


class Toy(nn.Module):
    """A 'method' with one net whose weights are a vector the test sets at every step."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Linear(dim, 1, bias=False).double()


def tracked(W: np.ndarray, sigma_rels, every: int):
    """Runs PowerEMA over the weight sequence; returns it and the tracks at every ``every``-th step."""
    model = Toy(W.shape[1])
    ema = PowerEMA(model, sigma_rels, every)
    snapshots = []
    for t in range(1, len(W) + 1):
        with torch.no_grad():
            model.net.weight.copy_(torch.from_numpy(W[t - 1])[None])
        ema.update(t)
        if t % every == 0:
            snapshots.append((t, [track[0].numpy().ravel().copy() for track in ema.tracks]))
    return ema, snapshots


def toy_weights(T=1000, dim=32, seed=0) -> np.ndarray:
    """A drifting random walk, like weights late in training."""
    rng = np.random.default_rng(seed)
    walk = np.cumsum(rng.normal(size=(T, dim)), axis=0) / np.sqrt(T)
    return walk + np.linspace(0, 1, T)[:, None] * rng.normal(size=dim)


def test_update_is_the_closed_form_power_function_average():
    W = toy_weights(T=400, dim=1)
    ema, _ = tracked(W, [0.05, 0.10], every=400)
    for sigma_rel, track in zip([0.05, 0.10], ema.tracks):
        gamma = paper_gamma(sigma_rel)
        got = float(track[0].item())
        assert got == pytest.approx(float(direct_ema(W, gamma)[0]), abs=1e-12)
        # and, up to the step's width, the profile p(t) ∝ t^gamma sampled at the steps
        t = np.arange(1, len(W) + 1, dtype=np.float64)
        p = t ** gamma / (t ** gamma).sum()
        assert got == pytest.approx(float(p @ W[:, 0]), abs=2e-3)
        assert abs(got - float(p @ W[:, 0])) < 0.05 * abs(got - W[-1, 0])


def test_sigma_rel_and_gamma_follow_the_paper():
    # EDM2's published pairs (sec. 3.1): sigma_rel 0.05 <-> gamma 16.97, 0.10 <-> 6.94
    assert gamma_of(0.05) == pytest.approx(16.97, abs=0.005)
    assert gamma_of(0.10) == pytest.approx(6.94, abs=0.005)
    for sigma_rel in (0.01, 0.05, 0.10, 0.15, 0.25):
        assert gamma_of(sigma_rel) == pytest.approx(paper_gamma(sigma_rel), rel=1e-9)
    for gamma in (0.0, 1.0, 6.94, 16.97, 100.0):
        assert sigma_rel_of(gamma) == pytest.approx(paper_sigma_rel(gamma), rel=1e-12)
    grid = np.linspace(-0.99, 5, 200001)
    assert SIGMA_REL_MAX == pytest.approx(max(paper_sigma_rel(g) for g in grid[::100]), rel=1e-5)
    for bad in (0.0, -0.1, SIGMA_REL_MAX, 0.5):
        with pytest.raises(ValueError):
            gamma_of(bad)


def test_reconstruction_matches_the_direct_ema():
    """Two tracks (0.05, 0.10) snapshotted every 50 of 1000 steps. Measured here: the error of the
    reconstructed 0.07 / 0.15 is 0.04% / 0.12% of the distance between the 0.05 and 0.10 EMAs (and
    0.2% / 0.6% of that between the EMA and the one 0.01 longer); the stored lengths come back to ~1e-13."""
    W = toy_weights()
    _, snapshots = tracked(W, [0.05, 0.10], every=50)
    profiles = [(float(t), paper_gamma(s)) for t, _ in snapshots for s in (0.05, 0.10)]
    stack = np.stack([v for _, tracks in snapshots for v in tracks])
    spread = np.linalg.norm(direct_ema(W, paper_gamma(0.05)) - direct_ema(W, paper_gamma(0.10)))
    for sigma_rel, bound in ((0.07, 0.002), (0.15, 0.005)):
        x, residual = solve_coefficients(profiles, (1000.0, gamma_of(sigma_rel)))
        want = direct_ema(W, paper_gamma(sigma_rel))
        error = np.linalg.norm(x @ stack - want)
        neighbour = np.linalg.norm(want - direct_ema(W, paper_gamma(sigma_rel + 0.01)))
        assert error < bound * spread, (sigma_rel, error / spread)
        assert error < 0.02 * neighbour, (sigma_rel, error / neighbour)
        assert 0 < residual < 0.01
    for k, sigma_rel in enumerate((0.05, 0.10)):
        x, residual = solve_coefficients(profiles, (1000.0, gamma_of(sigma_rel)))
        np.testing.assert_allclose(x @ stack, snapshots[-1][1][k], atol=1e-6)
        assert residual < 1e-6


# -- a tiny real run, in process --------------------------------------------------------------------

COMMON = ["logger=none", "trainer.progress=plain", "trainer.log_every=2", "trainer.sample_every=0",
          "trainer.eval_every=0", "trainer.phema.sigma_rels=[0.05,0.10]", "trainer.phema.snapshot_every=2"]
RING = [*COMMON, "data=ring", "model=mlp", "model.generator.hidden=32", "model.discriminator.hidden=32",
        "data.batch_size=64", "data.dataset.num_samples=1000"]
DIGITS_GAN = [*COMMON, "model.generator.base_channels=8", "model.discriminator.base_channels=8", "data.batch_size=8"]
# a family without an EMA copy: its own nets are averaged and replaced
DIGITS_VAE = [*COMMON, "data=digits8", "model=vae", "model.hidden=32", "data.batch_size=8"]


@functools.cache
def composed(overrides: tuple[str, ...]):
    from omegaconf import open_dict

    cfg = compose("train", list(overrides))
    with open_dict(cfg):
        cfg.pop("hydra")
    return cfg


def train(run_dir, steps: int, ckpt_every: int, extra=(), resume=None, base=RING):
    """genexp train's order (seed, data, method, trainer, restore) without a subprocess."""
    from genexp.data import build_dataset
    from genexp.data.loader import InfiniteLoader
    from genexp.logger import QuietConsole, SilentLogger
    from genexp.methods import build_method
    from genexp.training.checkpoint import load_checkpoint
    from genexp.training.loop import Trainer, config_meta
    from genexp.training.runtime import seed_everything

    cfg = copy.deepcopy(composed((*base, f"trainer.max_steps={steps}", f"trainer.ckpt_every={ckpt_every}", *extra)))
    seed_everything(0, True)
    dataset = build_dataset(cfg.data)
    loader = InfiniteLoader(dataset, int(cfg.data.batch_size), 0)
    method = build_method(cfg, torch.device("cpu"))
    trainer = Trainer(cfg.trainer, method, loader, SilentLogger(), QuietConsole("plain"), run_dir,
                      meta=config_meta(cfg, []))
    if resume is not None:
        trainer.restore(load_checkpoint(resume))
    trainer.fit()
    return trainer


def test_tracks_resume_bit_exactly_and_snapshots_are_written(tmp_path):
    straight = train(tmp_path / "a", 4, 4)
    train(tmp_path / "b", 3, 3)
    resumed = train(tmp_path / "b", 4, 4, resume=tmp_path / "b" / "checkpoints" / "last.pt")
    for a, b in zip(straight.phema.tracks, resumed.phema.tracks):
        for x, y in zip(a, b):
            assert torch.equal(x, y)
    assert sorted(p.name for p in (tmp_path / "a" / "phema" / "snapshots").iterdir()) == \
        ["step_000002.pt", "step_000004.pt"]
    snap_a = torch.load(tmp_path / "a" / "phema" / "snapshots" / "step_000004.pt", weights_only=True)
    snap_b = torch.load(tmp_path / "b" / "phema" / "snapshots" / "step_000004.pt", weights_only=True)
    assert snap_a["step"] == 4 and snap_a["nimg"] == 256 and snap_a["nets"] == {"G": "G_ema"}
    for ta, tb in zip(snap_a["tracks"], snap_b["tracks"]):
        assert ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def phema(*args):
    from genexp.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["phema", *args])
        raise SystemExit(0)
    return exit_info.value.code


@pytest.mark.parametrize("base, nets", [(DIGITS_GAN, {"G": "G_ema"}),
                                        (DIGITS_VAE, {"encoder": "encoder", "decoder": "decoder"})])
def test_phema_command_writes_checkpoints_the_loaders_take(tmp_path, capsys, base, nets):
    from genexp.commands.common import restore_method
    from genexp.training.checkpoint import load_checkpoint

    run_dir = tmp_path / "run"
    train(run_dir, 4, 4, base=base)
    assert phema(f"ckpt_dir={run_dir}", "sigma_rel=0.05,0.10,0.15") == 0
    lines = [line for line in capsys.readouterr().out.strip().splitlines() if not line.startswith("phema: ")]
    assert len(lines) == 3 and "2 snapshots" in lines[1] and "residual" in lines[1]
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    for sigma_rel, k in (("0.050", 0), ("0.100", 1), ("0.150", None)):
        path = run_dir / "phema" / f"phema-{sigma_rel}.pt"
        method, _, ckpt = restore_method(str(path), torch.device("cpu"))
        assert ckpt["phema"]["sigma_rel"] == float(sigma_rel)
        assert method.sample(4, generator=torch.Generator().manual_seed(0)).shape[0] == 4
        if k is not None:  # a stored length at the newest snapshot is that track
            weights = method.state_dict()
            track = dict(zip(last["phema"]["keys"], last["phema"]["tracks"][k]))
            assert {key.split(".", 1)[0] for key in track} == set(nets)
            for key, value in track.items():
                net, rest = key.split(".", 1)
                torch.testing.assert_close(weights[f"{nets[net]}.{rest}"], value, atol=1e-6, rtol=0)
    # the snapshots folder itself is a ckpt_dir too, and step= picks an older snapshot
    assert phema(f"ckpt_dir={run_dir}/phema/snapshots", "sigma_rel=0.07", "step=2") == 0
    assert (run_dir / "phema" / "phema-0.070-step_000002.pt").is_file()


@pytest.mark.parametrize("args, message", [
    (["ckpt_dir={tmp}/nowhere", "sigma_rel=0.1"], "does not exist"),
    (["ckpt_dir={tmp}", "sigma_rel=0.1"], "trainer.phema.sigma_rels="),
    (["ckpt_dir={tmp}", "sigma_rel=0"], "(0, 0.3003)"),
    (["ckpt_dir={tmp}", "sigma_rel=0.35"], "(0, 0.3003)"),
    (["ckpt_dir={tmp}", "sigma_rel=abc"], "not a number"),
    (["ckpt_dir={tmp}"], "needs sigma_rel="),
    (["ckpt_dir={tmp}", "sigma_rel=0.1", "bogus=1"], "takes ckpt_dir="),
])
def test_bad_command_lines_are_one_line(tmp_path, capsys, args, message):
    assert phema(*[a.format(tmp=tmp_path) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_lengths_the_tracks_cannot_express_and_bad_training_options(tmp_path, capsys):
    run_dir = tmp_path / "run"
    train(run_dir, 2, 2)
    assert phema(f"ckpt_dir={run_dir}", "sigma_rel=0.01") == 2
    err = capsys.readouterr().err.strip()
    assert "outside what the stored tracks" in err and len(err.splitlines()) == 1
    with pytest.raises(UserError, match="distinct EMA lengths"):
        train(tmp_path / "bad", 2, 2, ["trainer.phema.sigma_rels=[0.5]"])
    with pytest.raises(UserError, match="snapshot_every"):
        train(tmp_path / "bad", 2, 2, ["trainer.phema.snapshot_every=0"])
    plain = tmp_path / "plain"
    train(plain, 2, 2, ["trainer.phema.sigma_rels=null"])
    with pytest.raises(UserError, match="kept no post-hoc EMA tracks"):
        train(plain, 4, 4, resume=plain / "checkpoints" / "last.pt")
    with pytest.raises(UserError, match="the run's tracks are"):
        train(run_dir, 4, 4, ["trainer.phema.sigma_rels=[0.05,0.2]"], resume=run_dir / "checkpoints" / "last.pt")


@pytest.mark.parametrize("overrides, nets", [(["experiment=edm_digits"], {"net": "net_ema"}),
                                             (["model=bigan"], {"G": "G_ema", "E": "E_ema"}),
                                             (["model=realnvp", "data=digits8"], {"flow": "flow"})])
def test_each_family_tracks_the_nets_it_samples_with(overrides, nets):
    """The net the family's EMA averages (written into its EMA copy), or the whole model where there is none."""
    from genexp.methods import build_method
    from genexp.training.phema import tracked_nets

    method = build_method(copy.deepcopy(composed(tuple(overrides))), torch.device("cpu"))
    assert tracked_nets(method) == nets
