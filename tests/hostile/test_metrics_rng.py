"""Training does not depend on the metric choice: building the metric suite and evaluating draw from
their own generators, never from the training run's random streams (torch, CUDA, numpy, python)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from genexp.training.checkpoint import load_checkpoint

from ..conftest import TINY, compose

# 20 steps with an evaluation at step 10 (mid-run) and at the end.
STEPS = [*TINY, "trainer.max_steps=20", "trainer.eval_every=10", "trainer.ckpt_every=20", "trainer.sample_every=0",
         "trainer.log_every=5"]


def last(run_dir) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")


@pytest.mark.slow  # two 20-step trainings: about a minute on a shared 2-core machine
def test_training_weights_are_bit_identical_with_and_without_metrics(run, tmp_path):
    none, some = tmp_path / "none", tmp_path / "some"
    assert (res := run("train", *STEPS, "metrics=[]", f"hydra.run.dir={none}")).code == 0, res
    res = run("train", *STEPS, "metrics=[fid,kid,pr]", "metrics.fid.allow_small=true", "metrics.kid.allow_small=true",
              "metrics.pr.allow_small=true", f"hydra.run.dir={some}")
    assert res.code == 0, res
    assert "fid/" in (some / "metrics.jsonl").read_text()  # the metrics did run, twice
    ckpt_a, ckpt_b = last(none), last(some)
    a, b = ckpt_a["method"]["modules"], ckpt_b["method"]["modules"]
    assert a.keys() == b.keys()
    for key, value in a.items():
        other = b[key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, key
    # and the run's random streams end where they would have without metrics
    assert torch.equal(ckpt_a["rng"]["torch"], ckpt_b["rng"]["torch"])
    assert torch.equal(ckpt_a["rng"]["numpy"]["keys"], ckpt_b["rng"]["numpy"]["keys"])
    assert ckpt_a["rng"]["python"] == ckpt_b["rng"]["python"]


def streams() -> tuple:
    return (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())


def same(a: tuple, b: tuple) -> bool:
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


CASES = {
    "features": ["metrics=[fid,kid,pr,is]"],
    # a model metric walking the generator with a feature-space distance
    "ppl": ["metrics=[ppl]", "metrics.ppl.sim=digits_lenet", "model.generator.base_channels=8",
            "model.discriminator.base_channels=8"],
    # held-out likelihood (importance samples) and reconstructions of a VAE
    "vae": ["model=vae", "data=digits8", "metrics=[nll,recon,fid]", "metrics.nll.iwae_samples=4"],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_building_and_evaluating_the_suite_leaves_the_global_streams_alone(case):
    from genexp.data import build_dataset
    from genexp.methods import build_method
    from genexp.metrics.suite import MetricSuite

    cfg = compose("train", CASES[case])
    dataset = build_dataset(cfg.data)
    method = build_method(cfg, torch.device("cpu"))
    metrics = OmegaConf.create({k: {**OmegaConf.to_container(v), "allow_small": True} for k, v in cfg.metrics.items()})
    torch.manual_seed(5), np.random.seed(5), random.seed(5)
    before = streams()
    notes = []
    suite = MetricSuite(metrics, dataset, cfg.data, torch.device("cpu"), notes.append, num_samples=40,
                        batch_size=16)
    assert same(before, streams()), "building the suite moved a global random stream"
    assert suite and not suite.skipped, notes
    method.eval()
    results = suite.compute(lambda n, g: method.sample(n, generator=g), seed=3, model=(method, True))
    assert results and not suite.skipped, notes
    assert same(before, streams()), "evaluating moved a global random stream"


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no GPU"))])
def test_own_rng_draws_the_same_inside_and_gives_every_stream_back(device):
    from genexp.metrics.rng import own_rng

    dev = torch.device(device)
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    before = streams()
    cuda_before = torch.cuda.get_rng_state() if dev.type == "cuda" else None
    draws = []
    for _ in range(2):
        with own_rng(7, dev):
            draws.append((torch.randn(3, device=dev).cpu(), np.random.rand(), random.random()))
    assert torch.equal(draws[0][0], draws[1][0]) and draws[0][1:] == draws[1][1:]  # seeded inside
    assert same(before, streams())
    if cuda_before is not None:
        assert torch.equal(cuda_before, torch.cuda.get_rng_state())
