"""Resume continues bit-exactly: the weights at step N equal those of an uninterrupted run."""

from __future__ import annotations

import json

import pytest
import torch

from .conftest import TINY

RUN = [*TINY, "trainer.max_steps=6", "trainer.ckpt_every=3", "trainer.eval_every=3", "trainer.log_every=1",
       "loss=wgan_gp", "data.batch_size=32"]  # 5 D steps a G step: the data position matters


def weights(path):
    return torch.load(path, weights_only=True)["method"]


def assert_bitwise_equal(a: dict, b: dict, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_bitwise_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_bitwise_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_resume_from_checkpoint_and_from_stopped_run(run, tmp_path):
    full = tmp_path / "full"
    assert (res := run("train", *RUN, f"hydra.run.dir={full}")).code == 0, res

    # (a) a mid-run checkpoint resumed into a new directory
    fork = tmp_path / "fork"
    res = run("train", f"resume={full / 'checkpoints/step_000003.pt'}", f"hydra.run.dir={fork}")
    assert res.code == 0, res
    assert "resumed from" in res.out and "at step 3" in res.out
    assert_bitwise_equal(weights(full / "checkpoints/last.pt"), weights(fork / "checkpoints/last.pt"))

    # (b) a run stopped at step 3, continued in its own run dir with more steps
    stopped = tmp_path / "stopped"
    assert (res := run("train", *RUN, "trainer.max_steps=3", f"hydra.run.dir={stopped}")).code == 0, res
    res = run("train", f"resume={stopped}", "trainer.max_steps=6")
    assert res.code == 0, res
    a, b = torch.load(full / "checkpoints/last.pt", weights_only=True), \
        torch.load(stopped / "checkpoints/last.pt", weights_only=True)
    assert a["step"] == b["step"] == 6
    assert_bitwise_equal(a["method"], b["method"])
    assert_bitwise_equal(a["rng"], b["rng"])
    assert a["data"] == b["data"]
    steps = [json.loads(line)["step"] for line in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_resume_of_an_interrupted_run_drops_its_orphan_log_lines(run, tmp_path):
    out = tmp_path / "r"
    assert (res := run("train", *RUN, "metrics=[]", f"hydra.run.dir={out}")).code == 0, res
    # as if killed after logging step 6 but before its checkpoint: last.pt is still step 3
    (out / "checkpoints/last.pt").write_bytes((out / "checkpoints/step_000003.pt").read_bytes())
    (out / "checkpoints/step_000006.pt").unlink()
    res = run("train", f"resume={out}")
    assert res.code == 0, res
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert torch.load(out / "checkpoints/last.pt", weights_only=True)["step"] == 6


@pytest.mark.slow
def test_resume_from_an_older_checkpoint_branches_and_keeps_the_run(run, tmp_path):
    out = tmp_path / "r"
    assert (res := run("train", *RUN, "metrics=[]", f"hydra.run.dir={out}")).code == 0, res
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = run("train", f"resume={out / 'checkpoints/step_000003.pt'}", "trainer.max_steps=4", cwd=tmp_path)
    assert res.code == 0, res
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (branch,) = (tmp_path / "outputs" / "train").iterdir()
    assert torch.load(branch / "checkpoints/last.pt", weights_only=True)["step"] == 4


def test_resume_of_a_finished_run_says_how_to_go_on(run, tmp_path):
    out = tmp_path / "r"
    assert (res := run("train", *RUN, "metrics=[]", "trainer.max_steps=2", f"hydra.run.dir={out}")).code == 0
    res = run("train", f"resume={out}")
    assert res.code == 0, res
    assert "pass a larger trainer.max_steps" in res.err
