"""genexp report: a sweep folder becomes one table (CSV, Markdown, console) and one plot."""

from __future__ import annotations

import csv
import json

from .conftest import TINY


def test_report_of_a_sweep_with_a_failed_and_a_killed_run(run, tmp_path):
    sweep = tmp_path / "sweep"
    res = run("train", "-m", *TINY, "metrics=[fid]", "trainer.max_steps=2", "trainer.eval_every=1",
              "optim.lr=1e-4,2e-4", f"hydra.sweep.dir={sweep}")
    assert res.code == 0, res
    assert json.loads((sweep / "0" / "run.json").read_text())["status"] == "done"
    # two more runs as they are left behind when they break: one failed, one killed (its process is gone)
    for name, status in (("2", "failed"), ("3", "running")):
        (sweep / name).mkdir()
        (sweep / name / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss/g": 0.7}) + "\n")
        (sweep / name / "run.json").write_text(json.dumps(
            {"status": status, "step": 1, "max_steps": 2, "wall_s": 1.0, "pid": 2 ** 22 + 7,
             "overrides": [f"optim.lr={name}e-4"], "message": "RuntimeError: boom" if status == "failed" else ""}))

    res = run("report", str(sweep), "--metric", "fid")
    assert res.code == 0, res
    with open(sweep / "report.csv") as f:
        header, *rows = list(csv.reader(f))
    assert header[:5] == ["run", "optim.lr", "status", "step", "wall (s)"]
    fid = [h for h in header if h.startswith("fid/") and h.endswith(" best")]
    assert len(fid) == 1
    by_run = {row[0]: dict(zip(header, row)) for row in rows}
    assert [by_run[r]["status"] for r in "0123"] == ["done", "done", "failed", "killed"]
    assert float(by_run["1"]["optim.lr"]) == 2e-4 and by_run["0"]["step"] == "2/2"
    assert float(by_run["0"][fid[0]]) > 0 and by_run["2"][fid[0]] == ""
    assert "RuntimeError: boom" in res.out
    assert "report: runs read 4/4" in res.err  # progress on stderr; the table stays alone on stdout
    assert (sweep / "report.md").read_text().count("\n") == 2 + 4
    assert (sweep / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_mistakes(run, tmp_path):
    from .test_bad_input import one_error_line

    assert "no such directory" in one_error_line(run("report", str(tmp_path / "nope")))
    assert "holds no runs" in one_error_line(run("report", str(tmp_path)))
