"""The CLI end to end in subprocesses: train -> eval -> sample, help, --cfg, a sweep."""

from __future__ import annotations

import json
import re

import pytest
import torch
import yaml

from .conftest import TINY


def test_help_lists_commands_and_is_fast(run):
    res = run("--help")
    assert res.code == 0, res
    for command in ("train", "eval", "sample"):
        assert f"  {command}" in res.out


def test_command_help_lists_groups_and_keys(run):
    res = run("train", "--help")
    assert res.code == 0, res
    assert "genexp train:" in res.out
    groups = res.out.split("Keys (")[0]
    for group in ("model", "data", "loss", "optim", "metrics", "logger", "trainer", "experiment", "debug"):
        assert re.search(rf"^  {group}\b", groups, re.M), group
    assert "trainer.max_steps=" in res.out


def test_cfg_job_prints_the_composed_config(run):
    res = run("train", "--cfg", "job", "loss=wgan_gp", "trainer.max_steps=7")
    assert res.code == 0, res
    cfg = yaml.safe_load(res.out)
    assert cfg["loss"]["name"] == "wgan_gp" and cfg["trainer"]["max_steps"] == 7


def test_train_eval_sample(run, tmp_path):
    train_dir = tmp_path / "train"
    res = run("train", *TINY, f"hydra.run.dir={train_dir}")
    assert res.code == 0, res
    assert "skipped" not in res.err  # the default metrics that do not fit images are left out quietly
    assert (train_dir / ".hydra" / "config.yaml").is_file()
    for f in ("checkpoints/last.pt", "checkpoints/step_000002.pt", "samples/step_000002.png", "metrics.jsonl"):
        assert (train_dir / f).is_file(), f
    lines = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines] == [1, 2]
    assert "loss/d" in lines[0] and "fid/digits_lenet@32" in lines[-1]
    # the value a sweeper gets: the best FID over the run's evaluations (one here)
    assert f"objective fid: best {lines[-1]['fid/digits_lenet@32']:.6g}" in res.out + res.err

    eval_dir = tmp_path / "eval"
    ckpt = train_dir / "checkpoints" / "last.pt"
    res = run("eval", f"ckpt={ckpt}", "n=32", "metrics=[fid,kid]", "metrics.kid.subset_size=16",
              "metrics.fid.allow_small=true", "metrics.kid.allow_small=true", f"hydra.run.dir={eval_dir}")
    assert res.code == 0, res
    record = json.loads((eval_dir / "metrics.json").read_text())
    assert record["step"] == 2 and set(record["metrics"]) >= {"fid/digits_lenet@32", "kid_x1e3/digits_lenet@32"}
    # Same generator, same seed, same real set: eval reproduces the in-training FID.
    assert abs(record["metrics"]["fid/digits_lenet@32"] - lines[-1]["fid/digits_lenet@32"]) < 1e-6
    assert "fid/digits_lenet@32" in res.out

    sample_dir = tmp_path / "sample"
    res = run("sample", f"ckpt={ckpt}", "n=9", "seed=3", f"hydra.run.dir={sample_dir}")
    assert res.code == 0, res
    saved = torch.load(sample_dir / "samples.pt", weights_only=True)
    assert saved["samples"].shape == (9, 1, 16, 16) and saved["samples"].abs().max() <= 1
    from PIL import Image

    assert Image.open(sample_dir / "samples.png").size == (10 * (3 * 18 + 2),) * 2  # enlarged: ceil(512 / 56) = 10


def test_toy_data_gives_scatter_and_points(run, tmp_path):
    res = run("train", "experiment=ring_mlp", *TINY[:9], "data.batch_size=64", f"hydra.run.dir={tmp_path / 't'}")
    assert res.code == 0, res
    res = run("sample", f"ckpt={tmp_path / 't/checkpoints/last.pt'}", "n=100", f"hydra.run.dir={tmp_path / 's'}")
    assert res.code == 0, res
    assert torch.load(tmp_path / "s/points.pt", weights_only=True)["samples"].shape == (100, 2)
    assert (tmp_path / "s/samples.png").is_file()


@pytest.mark.slow  # make test under 10 min; a two-job sweep into hydra.sweep.dir runs in test_report
def test_multirun_two_jobs_into_sweep_dir(run, tmp_path):
    sweep = tmp_path / "sweep"
    res = run("train", "-m", "loss=ns,wgan_gp", *TINY, "metrics=[]", f"hydra.sweep.dir={sweep}")
    assert res.code == 0, res
    for job, loss in (("0", "ns"), ("1", "wgan_gp")):
        assert (sweep / job / "checkpoints" / "last.pt").is_file()
        cfg = yaml.safe_load((sweep / job / ".hydra" / "config.yaml").read_text())
        assert cfg["loss"]["name"] == loss


def test_wandb_offline_run_holds_the_logged_keys(run, tmp_path):
    out = tmp_path / "w"
    args = [a for a in TINY if a != "logger=none"]
    res = run("train", *args, "logger=wandb", "logger.wandb.mode=offline", f"hydra.run.dir={out}",
              env={"WANDB_MODE": None, "WANDB_API_KEY": None, "HOME": str(tmp_path)})
    assert res.code == 0, res
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list(out.rglob("*"))
    blob = runs[0].read_bytes()
    for key in (b"loss/d", b"loss/g", b"fid/digits_lenet@32", b"samples"):
        assert key in blob, key
    assert list((out / "wandb").glob("offline-run-*/files/media/images/samples_*.png"))
