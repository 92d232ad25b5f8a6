"""Data-parallel training (genexp/distributed.py): two gloo processes on the CPU under torchrun."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from torch.utils.data import TensorDataset

from genexp.data.loader import InfiniteLoader
from genexp.distributed import World, first_host, from_env
from genexp.errors import UserError
from genexp.training.checkpoint import load_checkpoint

from .conftest import REPO, TINY, Result
from .test_bad_input import one_error_line

GAN = [*TINY, "trainer.max_steps=3", "trainer.eval_every=3", "trainer.ckpt_every=3", "trainer.sample_every=3",
       "trainer.eval_samples=500", "metrics=[fid,kid,is,pr]"]
# MADE's loss is a function of the batch alone (no noise): one process with batch B and two with
# B / 2 each must take the same steps, up to the order of floating-point sums.
MADE = ["logger=none", "trainer.progress=plain", "model=made", "data=digits8", "model.net.hidden=[64]",
        "data.batch_size=32", "trainer.max_steps=6", "trainer.log_every=1", "trainer.sample_every=6",
        "trainer.eval_every=6", "trainer.ckpt_every=3", "trainer.grid_samples=4", "metrics=[nll]",
        "metrics.nll.num_samples=64"]


def torchrun(*args: str, nproc: int = 2, timeout: int = 300) -> Result:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={nproc}", "-m", "genexp", "train", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout, env=env)
    return Result(proc)


def logged(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one_process_with_the_same_global_batch(run, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    assert (res := run("train", *MADE, f"hydra.run.dir={one}")).code == 0, res
    res = torchrun(*MADE, f"hydra.run.dir={two}")
    assert res.code == 0, res
    assert "2 processes (cpu), 16 images per process" in res.out
    assert res.out.count("done:") == 1  # rank 0 speaks for the run
    ckpt = load_checkpoint(two / "checkpoints/last.pt")
    assert len(ckpt["rank_checksums"]) == 2 and len(set(ckpt["rank_checksums"])) == 1  # identical weights
    assert len(ckpt["rng_ranks"]) == 2
    a, b = load_checkpoint(one / "checkpoints/last.pt")["method"]["modules"], ckpt["method"]["modules"]
    for key in a:
        if a[key].is_floating_point():
            # measured: about 1e-7 (summation order of the split batch); Adam amplifies nothing at 6 steps
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-5, msg=key)
    one_log, two_log = logged(one), logged(two)
    assert [r["step"] for r in two_log] == list(range(1, 7))  # written once, by rank 0
    for r1, r2 in zip(one_log, two_log):
        assert r2["loss/nll"] == pytest.approx(r1["loss/nll"], rel=1e-4)
    nll = [k for k in two_log[-1] if k.startswith("nll/")]
    assert nll and two_log[-1][nll[0]] == pytest.approx(one_log[-1][nll[0]], rel=1e-4)
    assert json.loads((two / "run.json").read_text())["status"] == "done"


@pytest.mark.slow  # make test under 10 min; DDP steps: the MADE test; ranks' metrics: hostile/test_distributed_eval
def test_two_process_gan_trains_in_step_and_its_metrics_cover_both_ranks(run, tmp_path):
    out = tmp_path / "gan"
    res = torchrun(*GAN, f"hydra.run.dir={out}")
    assert res.code == 0, res
    assert "weights differ" not in res.err
    ckpt = load_checkpoint(out / "checkpoints/last.pt")
    assert len(set(ckpt["rank_checksums"])) == 1
    trained = logged(out)[-1]
    # 500 fakes in two batches of 250: one per rank. Per-batch latents make them the very fakes a
    # single-process evaluation of the checkpoint draws, so the numbers agree.
    res = run("eval", f"ckpt={out}/checkpoints/last.pt", "metrics=[fid,kid,is,pr]", "metrics.fid.num_samples=500",
              "metrics.kid.num_samples=500", "metrics.is.num_samples=500", "metrics.pr.num_samples=500",
              f"hydra.run.dir={tmp_path / 'eval'}")
    assert res.code == 0, res
    single = json.loads((tmp_path / "eval" / "metrics.json").read_text())["metrics"]
    keys = [k for k in single if k.split("/")[0] in ("fid", "kid_x1e3", "is", "precision", "recall")]
    assert len(keys) >= 5
    for key in keys:
        assert trained[key] == pytest.approx(single[key], rel=1e-3, abs=1e-6), key


def test_loader_ranks_split_each_global_batch():
    x = torch.arange(40.0).view(40, 1)
    dataset = TensorDataset(x, torch.zeros(40, dtype=torch.long))  # no get_batch: the DataLoader path

    class InMemory(TensorDataset):
        def get_batch(self, idx):
            return self.tensors[0][idx], self.tensors[1][idx]

    for data in (dataset, InMemory(x, torch.zeros(40, dtype=torch.long))):
        whole = InfiniteLoader(data, 8, seed=3)
        ranks = [InfiniteLoader(data, 8, seed=3, rank=r, world=2) for r in range(2)]
        for _ in range(12):  # across an epoch boundary (5 batches an epoch)
            expected = next(whole)[0]
            assert torch.equal(torch.cat([next(r)[0] for r in ranks]), expected)
    with pytest.raises(UserError, match="global batch"):
        InfiniteLoader(dataset, 9, seed=0, world=2)


def test_world_from_torchrun_and_srun_variables():
    assert from_env({}) == World()
    assert from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == World(3, 4, 1)
    srun = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0"}
    assert from_env(srun) == World(5, 8, 1)
    batch_script = {k: v for k, v in srun.items() if k != "SLURM_STEP_ID"}  # sbatch without srun: one process
    assert from_env(batch_script) == World()
    assert first_host("gpu[03-05,07],cpu1") == "gpu03" and first_host("node7") == "node7"


def test_what_cannot_run_data_parallel_says_so(run):
    env = {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}
    assert "-m" in one_error_line(run("train", "-m", "optim.lr=1e-4,2e-4", env=env))
    assert "one process" in one_error_line(run("eval", "ckpt=x.pt", env=env))


@pytest.mark.slow
def test_two_process_run_stopped_and_resumed_is_bit_exact(tmp_path):
    args = [*TINY, "trainer.max_steps=8", "trainer.ckpt_every=4", "trainer.eval_every=0", "trainer.sample_every=0"]
    full, split = tmp_path / "full", tmp_path / "split"
    assert (res := torchrun(*args, f"hydra.run.dir={full}")).code == 0, res
    assert (res := torchrun(*args, "trainer.max_steps=4", f"hydra.run.dir={split}")).code == 0, res
    res = torchrun(*args, "resume=auto", f"hydra.run.dir={split}")
    assert res.code == 0 and "at step 4" in res.out, res
    a = load_checkpoint(full / "checkpoints/last.pt")
    b = load_checkpoint(split / "checkpoints/last.pt")
    assert a["rank_checksums"] == b["rank_checksums"]  # every rank's weights, bit for bit
    for key, value in a["method"]["modules"].items():
        other = b["method"]["modules"][key]
        assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, key
