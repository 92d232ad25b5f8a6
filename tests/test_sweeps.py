"""Sweeps: Optuna hparams_search packs, the submitit launchers, and a failing job that stops no other."""

from __future__ import annotations

import csv
import json

import pytest
from omegaconf import OmegaConf

from .conftest import TINY, compose
from .test_bad_input import one_error_line

pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="needs the sweeps extra")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="needs the sweeps extra")

# TINY fixes data.batch_size, which digits_fid searches: the command line's fixed value wins.
FID = "fid/digits_lenet@32"


def statuses(sweep) -> dict[str, dict]:
    return {p.name: json.loads((p / "run.json").read_text()) for p in sorted(sweep.iterdir())
            if (p / "run.json").is_file()}


def test_optuna_sweep_of_three_trials(run, tmp_path):
    sweep = tmp_path / "sweep"
    res = run("train", "-m", "hparams_search=digits_fid", "hydra.sweeper.n_trials=3", *TINY,
              f"hydra.sweep.dir={sweep}")
    assert res.code == 0, res
    runs = statuses(sweep)
    assert sorted(runs) == ["0", "1", "2"] and all(r["status"] == "done" for r in runs.values()), res
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    assert set(result.best_params) == {"optim.lr", "loss"}  # data.batch_size is fixed by the command line
    assert 5e-5 <= result.best_params["optim.lr"] <= 2e-3 and result.best_params.loss in ("ns", "hinge", "lsgan")
    # the value each trial returned is its run's best FID; Optuna minimises it
    assert result.best_value == pytest.approx(min(r["best"][FID] for r in runs.values()))
    best = min(runs.values(), key=lambda r: r["best"][FID])
    assert f"optim.lr={result.best_params['optim.lr']}" in best["overrides"]


def test_a_failing_trial_stops_no_other(run, tmp_path):
    sweep = tmp_path / "sweep"
    # lr=1e30: a non-finite loss at the first step stops that trial (exit 3 on its own); with the pack's
    # seed, trials 0 and 2 draw it and trial 1 draws 2e-4.
    res = run("train", "-m", "hparams_search=digits_fid", "hydra.sweeper.n_trials=3", *TINY,
              "optim.lr=choice(2e-4,1e30)", f"hydra.sweep.dir={sweep}")
    runs = statuses(sweep)
    bad = sorted(k for k, r in runs.items() if "optim.lr=1e+30" in r["overrides"])
    good = sorted(k for k, r in runs.items() if "optim.lr=0.0002" in r["overrides"])
    assert bad and good and len(runs) == 3, res
    assert all(runs[k]["status"] == "stopped" and "non-finite" in runs[k]["message"] for k in bad)
    assert all(runs[k]["status"] == "done" for k in good)
    assert "Traceback" not in res.err, res
    # each failure on one line as it happens, a summary at the end, exit status 1
    for k in bad:
        assert f"genexp: job #{k} ({sweep / k}) stopped: non-finite" in res.err, res
    assert res.code == 1, res
    assert res.err.strip().splitlines()[-1].startswith(f"genexp: {len(bad)} of 3 jobs failed"), res
    # Optuna told the trial FAIL and still wrote its result, from the good trials
    result = OmegaConf.load(sweep / "optimization_results.yaml")
    assert result.best_params["optim.lr"] == 2e-4
    assert result.best_value == pytest.approx(min(runs[k]["best"][FID] for k in good))

    res = run("report", str(sweep), "--metric", "fid")
    assert res.code == 0, res
    assert f"{bad[0]}: stopped: non-finite" in res.out, res
    with open(sweep / "report.csv") as f:
        rows = {row["run"]: row for row in csv.DictReader(f)}
    assert [rows[k]["status"] for k in bad] == ["stopped"] * len(bad)


@pytest.mark.slow
def test_a_failing_job_of_a_basic_sweep(run, tmp_path):
    """The basic sweeper runs every job, then names the first failure: two lines, no traceback, exit 1."""
    sweep = tmp_path / "sweep"
    res = run("train", "-m", *TINY, "metrics=[fid]", "optim.lr=1e30,2e-4", f"hydra.sweep.dir={sweep}")
    assert res.code == 1, res
    assert "Traceback" not in res.err, res
    runs = statuses(sweep)
    assert runs["0"]["status"] == "stopped" and "non-finite" in runs["0"]["message"]
    assert runs["1"]["status"] == "done" and runs["1"]["best"][FID] > 0
    assert res.err.count(f"genexp: job #0 ({sweep / '0'}) stopped: non-finite") == 2, res  # as it fails, at the end


@pytest.mark.slow  # make test under 10 min; the launcher's config composes in test_docs_commands (docs/distributed.md)
def test_submitit_local_launcher_runs_two_jobs(run, tmp_path):
    sweep = tmp_path / "sweep"
    res = run("train", "-m", "hydra/launcher=local", "hydra.launcher.timeout_min=5", *TINY, "metrics=[fid]",
              "optim.lr=1e-4,2e-4", f"hydra.sweep.dir={sweep}")
    assert res.code == 0, res
    assert "Submitit 'local'" in res.err + res.out, res  # it ran through submitit, each job its own process
    runs = statuses(sweep)
    assert sorted(runs) == ["0", "1"] and all(r["status"] == "done" for r in runs.values()), res
    assert len({r["pid"] for r in runs.values()}) == 2

    res = run("report", str(sweep), "--metric", "fid")
    assert res.code == 0, res
    with open(sweep / "report.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["run"] for r in rows) == ["0", "1"]
    assert sorted(float(r["optim.lr"]) for r in rows) == [1e-4, 2e-4]
    assert all(float(r[f"{FID} best"]) > 0 for r in rows)
    assert (sweep / "report.md").read_text().count("\n") == 2 + 2
    assert (sweep / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_packs_and_launchers_compose():
    cfg = compose("train", ["hparams_search=digits_fid", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                            "hydra.launcher.gpus_per_node=4", "hydra.launcher.timeout_min=600"])
    sweeper, launcher = cfg.hydra.sweeper, cfg.hydra.launcher
    assert sweeper._target_.endswith("OptunaSweeper") and sweeper.direction == "minimize"
    assert cfg.trainer.objective == "fid" and list(cfg.metrics) == ["fid"]
    assert sweeper.max_failure_rate == 1.0 and "interval" in sweeper.params["optim.lr"]
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.gpus_per_node, launcher.timeout_min) == ("gpu", 4, 600)
    assert launcher.additional_parameters.signal == "USR1@120" and "SUBMITIT_PREEMPT_SIGNAL=USR1" in launcher.setup[0]
    cfg = compose("train", ["hparams_search=ring_modes", "hydra/launcher=local"])
    assert cfg.model.name == "mlp" and cfg.data.name == "ring"  # the pack picks experiment=ring_mlp
    assert cfg.trainer.objective == "modes/captured" and cfg.hydra.sweeper.direction == "maximize"
    assert cfg.hydra.launcher._target_.endswith("LocalLauncher")


@pytest.mark.parametrize("args, expect", [
    (["-m", "hparams_search=nope"], "hparams_search=nope: no such option (available options in hparams_search: "
                                    "compare_losses, digits_fid, ring_modes)"),
    (["hparams_search=digits_fid"], "is a sweep: add -m"),
    (["-m", "hparams_search=digits_fid", "--cfg", "hydra"], "leave out -m"),
    (["-m", "optim.lr=interval(1e-4,1e-3)"], "the basic sweeper takes"),
    (["-m", "hparams_search=digits_fid", "trainer.max_steps=interval(2,4)"], "use int(interval(...))"),
    (["-m", "hparams_search=digits_fid", "optim.lr=choice(1e-4,fast)"], "optim.lr=fast: expected a number"),
    (["-m", "hparams_search=digits_fid", "trainer.objective=is"], "use hydra.sweeper.direction=maximize"),
    (["-m", "hparams_search=ring_modes", "loss=choice(lsgan,nope)"], "loss=nope: no such option"),
])
def test_sweep_mistakes(run, args, expect):
    assert expect in one_error_line(run("train", *args))
