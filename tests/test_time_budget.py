"""trainer.max_time_s: a compute budget ends training at a step boundary, as max_steps would."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tests.conftest import TINY

HUGE = "trainer.max_steps=100000000"


# wall in the slow set (make test under 10 min): the budget code is one, the clock a function of it
@pytest.mark.parametrize("clock", ["process", pytest.param("wall", marks=pytest.mark.slow)])
def test_budget_stops_the_run_with_a_final_checkpoint(run, tmp_path, clock):
    out = tmp_path / "run"
    res = run("train", *TINY, HUGE, "trainer.max_time_s=1.5", f"trainer.time_clock={clock}", "metrics=[]",
              "trainer.ckpt_every=100000000", f"hydra.run.dir={out}")
    assert res.code == 0, res
    reached = re.search(r"max_time_s=1.5 \((\w+) clock\) reached: training stops at step (\d+)", res.out + res.err)
    assert reached and reached.group(1) == clock, res
    steps = int(reached.group(2))
    assert 0 < steps < 100000000
    ckpt = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    assert ckpt["step"] == steps  # the final checkpoint, though ckpt_every was never due
    logged = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == steps


@pytest.mark.parametrize("override, words", [
    ("trainer.max_time_s=-5", "trainer.max_time_s=-5"),
    ("trainer.max_time_s=0", "trainer.max_time_s=0"),
    ("trainer.max_time_s=soon", "trainer.max_time_s=soon"),
    ("trainer.time_clock=gpu", "trainer.time_clock=gpu"),
])
def test_bad_budget_is_refused_in_one_line(run, tmp_path, override, words):
    res = run("train", *TINY, override, f"hydra.run.dir={tmp_path / 'run'}")
    assert res.code == 2, res
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and words in lines[0] and "Traceback" not in res.err, res
    assert not (tmp_path / "run" / "checkpoints").exists()
