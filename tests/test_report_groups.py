"""genexp report --group-by: seeds aggregated (mean ± std, n), sorted by the metric's direction, the best
marked, rounded to the spread; checked against numpy on run folders written here."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from genexp.commands import report
from genexp.commands.report_groups import round_mean_std
from genexp.errors import UserError

FID = "fid/digits_lenet@2k"
MODES = "modes/captured@2k"


def write_run(path, overrides, fid_curve, modes):
    path.mkdir(parents=True)
    rows = [{"step": 100 * (i + 1), FID: v, MODES: modes} for i, v in enumerate(fid_curve)]
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (path / "run.json").write_text(json.dumps({
        "status": "done", "step": 100 * len(fid_curve), "max_steps": 100 * len(fid_curve), "wall_s": 1.0,
        "overrides": overrides, "final": {FID: fid_curve[-1], MODES: modes},
        "best": {FID: min(fid_curve), MODES: modes}}))


@pytest.fixture
def sweep(tmp_path):
    rng = np.random.default_rng(0)
    truth = {}
    for i, loss in enumerate(("ns", "hinge", "wgan_gp")):
        for seed in range(3):
            curve = list(np.round(rng.uniform(10, 60, size=3), 6))
            modes = float(rng.integers(5, 11))
            truth.setdefault(loss, []).append((min(curve), curve[-1], modes))
            write_run(tmp_path / f"{3 * i + seed}", [f"loss={loss}", f"trainer.seed={seed}"], curve, modes)
    return tmp_path, truth


def read_csv(path):
    with open(path) as f:
        header, *rows = list(csv.reader(f))
    return header, rows


def test_seeds_aggregate_sorted_with_the_best_marked(sweep):
    root, truth = sweep
    report.main([str(root), "--metric", "fid", "--group-by", "loss"])
    header, rows = read_csv(root / "report_groups.csv")
    assert header[0] == "loss" and header[1].startswith(f"{FID} (best, mean ± std; lower is better)")
    means = {loss: np.mean([b for b, _, _ in v]) for loss, v in truth.items()}
    assert [r[0] for r in rows] == sorted(means, key=means.get)  # lower FID first
    assert [r[3] for r in rows] == ["*", "", ""] and all(r[2] == "3" for r in rows)
    for r in rows:
        values = [b for b, _, _ in truth[r[0]]]
        assert r[1] == round_mean_std(float(np.mean(values)), float(np.std(values, ddof=1)), 3)
        shown = r[1].split(" ± ")[0]
        mean, std = (float(x) for x in r[1].split(" ± "))
        decimals = len(shown.split(".")[1]) if "." in shown else 0
        assert abs(mean - np.mean(values)) <= 0.5 * 10 ** -decimals + 1e-12
        assert abs(std - np.std(values, ddof=1)) < 0.05 * np.std(values, ddof=1) + 1e-9
    assert (root / "report_groups.png").read_bytes()[:4] == b"\x89PNG"
    assert (root / "report_groups.md").read_text().count("\n") == 2 + 3


def test_higher_is_better_sorts_the_other_way_and_final_values_can_be_chosen(sweep):
    root, truth = sweep
    report.main([str(root), "--metric", "modes/captured", "--value", "final"])  # default group-by: all but the seed
    header, rows = read_csv(root / "report_groups.csv")
    assert "higher is better" in header[1] and "final" in header[1]
    means = {loss: np.mean([m for _, _, m in v]) for loss, v in truth.items()}
    assert rows[0][0] == max(means, key=means.get)
    _, runs = read_csv(root / "report.csv")
    assert runs[0][-1] == "*" and all(r[-1] == "" for r in runs[1:])


def test_rounding_follows_the_spread():
    assert round_mean_std(12.3456, 0.678, 3) == "12.35 ± 0.68"
    assert round_mean_std(12.3456, 3.21, 3) == "12.3 ± 3.2"
    assert round_mean_std(1234.7, 45.6, 5) == "1235 ± 46"
    assert round_mean_std(0.0123456, None, 1) == "0.01235"


def test_group_by_mistakes(sweep):
    root, _ = sweep
    with pytest.raises(UserError, match="--group-by model: no run set it"):
        report.main([str(root), "--metric", "fid", "--group-by", "model"])
