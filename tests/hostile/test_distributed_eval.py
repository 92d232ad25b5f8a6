"""Data-parallel evaluation for any sample count and any number of ranks: a rank that draws no batch
joins the collectives with empty states, and the numbers are a one-process evaluation's (the fakes
are the same for any number of ranks: a generator per batch)."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from omegaconf import OmegaConf

from genexp.training.checkpoint import load_checkpoint

from ..conftest import TINY, compose
from ..test_ddp import logged, torchrun

METRICS = ["metrics=[fid,kid,is,pr]", "metrics.kid.subsets=10", "metrics.kid.subset_size=8", "metrics.is.splits=3"]
BATCH = 16
# 16 fakes a batch over 2 ranks: 10 samples are 1 batch (rank 1 draws none); 40 are 3 batches, the last
# partial (rank 0 draws two, rank 1 one).
COUNTS = [10, 40]


def evaluate(counts: list[int]) -> list[dict[str, float]]:
    from genexp.data import build_dataset
    from genexp.metrics.suite import MetricSuite

    cfg = compose("train", METRICS)
    dataset = build_dataset(cfg.data)
    metrics = OmegaConf.create({k: {**OmegaConf.to_container(v), "allow_small": True} for k, v in cfg.metrics.items()})
    side = int(cfg.data.resolution)

    def sample(n, g):
        return torch.rand(n, int(cfg.data.channels), side, side, generator=g) * 2 - 1

    out = []
    for n in counts:
        suite = MetricSuite(metrics, dataset, cfg.data, torch.device("cpu"), lambda _: None, num_samples=n,
                            batch_size=BATCH)
        out.append(suite.compute(sample, seed=3))
    return out


def rank_main(rank: int, world: int, rendezvous: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        results = evaluate(COUNTS)
    finally:
        dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as f:
        json.dump(results, f)


def assert_same(one: dict[str, float], many: dict[str, float], what: str) -> None:
    assert one.keys() == many.keys(), what
    for key, value in one.items():
        if math.isnan(value):
            assert math.isnan(many[key]), (what, key)
        else:
            # FID sums features in float64 in another grouping; the rest sees the very same features
            assert many[key] == pytest.approx(value, rel=1e-6, abs=1e-9), (what, key, many[key], value)


def test_ranks_score_any_sample_count_as_one_process_does(tmp_path):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    world, out = 2, str(tmp_path / "results")
    ranks = mp.start_processes(rank_main, args=(world, str(tmp_path / "rendezvous"), out), nprocs=world,
                               join=False, start_method="spawn")
    single = evaluate(COUNTS)  # meanwhile, in one process
    while not ranks.join():
        pass
    ranks = [json.loads(open(f"{out}.{r}").read()) for r in range(world)]
    for n, one, *many in zip(COUNTS, single, *ranks):
        assert len(one) >= 5, one
        for rank, result in enumerate(many):  # every rank holds the numbers (all of them take decisions on them)
            assert_same(one, result, f"{n} samples, rank {rank}")


# The README's CPU example with small settings: 2 processes, an evaluation at step 2 of 32 fakes
# (one batch of 250: rank 1 draws none).
README = ["trainer.device=cpu", *TINY, "metrics=[fid,kid,is,pr]"]
ALLOW = ["metrics.fid.allow_small=true", "metrics.kid.allow_small=true", "metrics.pr.allow_small=true"]


def single_eval(run, ckpt, tmp_path, n: int) -> dict[str, float]:
    counts = [f"metrics.{m}.num_samples={n}" for m in ("fid", "kid", "is", "pr")]
    res = run("eval", f"ckpt={ckpt}", "metrics=[fid,kid,is,pr]", *counts, *ALLOW, f"hydra.run.dir={tmp_path / 'eval'}")
    assert res.code == 0, res
    return json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]


@pytest.mark.slow  # a 2-process run and a one-process evaluation: about a minute and a half here
def test_the_readme_cpu_torchrun_example_evaluates_with_a_rank_that_draws_nothing(run, tmp_path):
    out = tmp_path / "run"
    res = torchrun(*README, f"hydra.run.dir={out}")
    assert res.code == 0, res
    assert "2 processes (cpu)" in res.out and "orig_dtype" not in res.err
    trained = logged(out)[-1]
    assert len(set(load_checkpoint(out / "checkpoints/last.pt")["rank_checksums"])) == 1
    single = single_eval(run, out / "checkpoints/last.pt", tmp_path, 32)
    keys = [k for k in single if k.split("/")[0] in ("fid", "kid_x1e3", "is", "precision", "recall")]
    assert len(keys) >= 5
    for key in keys:
        assert trained[key] == pytest.approx(single[key], rel=1e-5, abs=1e-9), key


@pytest.mark.slow
def test_an_eval_count_that_ranks_times_batch_does_not_divide(run, tmp_path):
    # 600 fakes: batches of 250, 250 and 100 over 2 ranks (rank 0 draws two, rank 1 the partial one)
    out = tmp_path / "run"
    res = torchrun(*README, "trainer.eval_samples=600", f"hydra.run.dir={out}")
    assert res.code == 0, res
    trained = logged(out)[-1]
    single = single_eval(run, out / "checkpoints/last.pt", tmp_path, 600)
    keys = [k for k in single if k.split("/")[0] in ("fid", "kid_x1e3", "is", "precision", "recall")]
    assert len(keys) >= 5
    for key in keys:
        assert trained[key] == pytest.approx(single[key], rel=1e-5, abs=1e-9), key
