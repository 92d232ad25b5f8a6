"""`genexp report --group-by loss --metric fid`: runs that differ only in their seed become one row,
mean ± std over n seeds, sorted best first (the metric's direction from the registry), the best marked,
rounded to what the spread can tell apart."""

from __future__ import annotations

import math
import statistics

SEED_KEYS = ("trainer.seed", "seed")


def is_seed(key: str) -> bool:
    return key in SEED_KEYS or key.endswith(".seed")


def given(run: dict) -> dict[str, str]:
    return dict(o.partition("=")[::2] for o in run["overrides"])


def metric_key(runs: list[dict], wanted: str, value: str) -> str | None:
    """The evaluation key ``wanted`` names (fid -> fid/digits_lenet@2k), among the runs' final/best values."""
    from genexp.metrics.registry import names_key

    keys = sorted({k for r in runs for k in r[value] if "@" in k})
    return next((k for k in keys if k == wanted or names_key(wanted, k)), None)


def higher_is_better(key: str) -> bool:
    from genexp.metrics.registry import MAX, direction_of_key

    return direction_of_key(key) == MAX


def round_mean_std(mean: float, std: float | None, n: int) -> str:
    """Two significant digits of the spread fix the digits of the mean (12.345 ± 0.678 -> 12.35 ± 0.68);
    a single run keeps four significant digits."""
    if n < 2 or std is None or not math.isfinite(std) or std == 0:
        return f"{mean:.4g}" + ("" if n < 2 else " ± 0")
    decimals = max(0, 1 - math.floor(math.log10(std)))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def aggregate(runs: list[dict], by: list[str], key: str, value: str = "best") -> list[dict]:
    """One row per value combination of ``by``: n, mean, std (sample, n-1) of ``key`` over the runs that
    report it, sorted best first."""
    from genexp.metrics.registry import MAX, direction_of_key

    groups: dict[tuple, list[float]] = {}
    counts: dict[tuple, int] = {}
    for r in runs:
        label = tuple(given(r).get(k, "") for k in by)
        counts[label] = counts.get(label, 0) + 1
        v = r[value].get(key, r["final"].get(key) if value == "best" else None)
        if v is not None and math.isfinite(float(v)):
            groups.setdefault(label, []).append(float(v))
    higher = direction_of_key(key) == MAX
    rows = []
    for label, runs_in in counts.items():
        values = groups.get(label, [])
        mean = statistics.fmean(values) if values else math.nan
        std = statistics.stdev(values) if len(values) > 1 else None
        rows.append({"group": dict(zip(by, label)), "n": len(values), "runs": runs_in, "mean": mean, "std": std,
                     "values": values})
    rows.sort(key=lambda row: (math.isnan(row["mean"]), -row["mean"] if higher else row["mean"]))
    for i, row in enumerate(rows):
        row["best"] = i == 0 and not math.isnan(row["mean"])
    return rows


def table(rows: list[dict], by: list[str], key: str, value: str) -> tuple[list[str], list[list[str]]]:
    from genexp.metrics.registry import MAX, direction_of_key

    arrow = "higher is better" if direction_of_key(key) == MAX else "lower is better"
    header = [*by, f"{key} ({value}, mean ± std; {arrow})", "n", "best"]
    out = []
    for row in rows:
        cell = "" if math.isnan(row["mean"]) else round_mean_std(row["mean"], row["std"], row["n"])
        n = f"{row['n']}" if row["n"] == row["runs"] else f"{row['n']} of {row['runs']}"
        out.append([*(row["group"][k] for k in by), cell, n, "*" if row["best"] else ""])
    return header, out


def plot_bands(runs: list[dict], by: list[str], key: str, path) -> None:
    """Mean ± std over the runs of each group against the step (steps where every run of the group logged)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from genexp.files import atomic_write_bytes

    curves: dict[tuple, list[dict[int, float]]] = {}
    for r in runs:
        label = tuple(given(r).get(k, "") for k in by)
        points = {int(row["step"]): float(row[key]) for row in r["curve"] if key in row}
        if points:
            curves.setdefault(label, []).append(points)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    for label, members in sorted(curves.items()):
        steps = sorted(set.intersection(*(set(m) for m in members)))
        if not steps:
            continue
        values = np.array([[m[s] for s in steps] for m in members])
        mean, std = values.mean(0), values.std(0, ddof=1) if len(members) > 1 else np.zeros(len(steps))
        name = " ".join(f"{k}={v}" for k, v in zip(by, label)) + f" (n={len(members)})"
        line, = ax.plot(steps, mean, marker="o" if len(steps) < 20 else None, label=name)
        ax.fill_between(steps, mean - std, mean + std, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(f"{key} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue(), shared=True)
