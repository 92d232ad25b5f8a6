"""genexp report <sweep dir>: every run in a (multirun) folder on one table, and its curves on one plot.

    genexp report outputs/train/2026-11-21_10-00-00_multirun [--metric fid] [--group-by loss] [--out DIR]

A run is a folder with a metrics.jsonl, a run.json or a .hydra/ (searched three levels deep). The
table has the overrides that differ between runs, status (done / stopped / failed / running, or
killed when a "running" run's process is gone), steps, wall time, and the final and best value of
every evaluation metric; it is printed (rich) and written as report.csv and report.md. report.png
plots one metric against the step for every run (--metric, default: the first evaluation metric,
else the first loss); with --metric the runs are sorted best first. Where runs differ in their seed
(or with --group-by), report_groups.{csv,md,png} aggregate the seeds: mean ± std, n, best marked.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

from genexp.errors import UserError
from genexp.files import atomic_write_bytes, atomic_write_text

MAX_DEPTH = 3


def find_runs(root: Path) -> list[Path]:
    found = []

    def walk(path: Path, depth: int) -> None:
        if (path / "metrics.jsonl").is_file() or (path / "run.json").is_file():
            found.append(path)
            return
        if depth < MAX_DEPTH:
            for child in sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")):
                walk(child, depth + 1)

    walk(root, 0)
    return found


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut by a kill
                continue
    return rows


def overrides_of(run: Path, status: dict) -> list[str]:
    path = run / ".hydra" / "overrides.yaml"
    if path.is_file():
        from omegaconf import OmegaConf

        return [str(o) for o in OmegaConf.load(path) if not str(o).startswith(("hydra.", "hydra/"))]
    return list(status.get("overrides", []))


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError):
        return False
    return True


def is_metric(key: str) -> bool:
    """Evaluation metrics carry their protocol after '@' (fid/digits_lenet@2k); spreads are not ranked."""
    return "@" in key and "_std/" not in key


def summarize(run: Path, root: Path) -> dict:
    status = {}
    if (run / "run.json").is_file():
        try:
            status = json.loads((run / "run.json").read_text())
        except ValueError:
            status = {}
    logs = read_jsonl(run / "metrics.jsonl")
    state = status.get("status", "unknown")
    if state == "running" and not alive(status.get("pid")):
        state = "killed"
    final: dict[str, float] = {}
    for row in logs:  # the newest logged value of every key
        final.update({k: v for k, v in row.items() if k != "step"})
    final.update(status.get("final", {}))
    best = dict(status.get("best", {}))
    return {"run": str(run.relative_to(root)) or ".", "status": state,
            "step": int(status.get("step", logs[-1]["step"] if logs else 0)), "max_steps": status.get("max_steps"),
            "wall_s": status.get("wall_s"), "overrides": overrides_of(run, status), "final": final, "best": best,
            "message": status.get("message", ""), "curve": logs}


def varying(runs: list[dict]) -> list[str]:
    """Override keys set to different values in different runs (the ones that tell runs apart)."""
    values: dict[str, set[str]] = {}
    for r in runs:
        for o in r["overrides"]:
            key, _, value = o.partition("=")
            values.setdefault(key, set()).add(value)
    keys = [k for k, v in values.items() if len(v) > 1]
    return keys or list(values)[:3]


def table_rows(runs: list[dict]) -> tuple[list[str], list[list[str]]]:
    keys = varying(runs)
    metrics = sorted({k for r in runs for k in r["final"] if is_metric(k)})
    header = ["run", *keys, "status", "step", "wall (s)"]
    for m in metrics:
        header += [f"{m} final", f"{m} best"]
    rows = []
    for r in runs:
        given = dict(o.partition("=")[::2] for o in r["overrides"])
        row = [r["run"], *(given.get(k, "") for k in keys), r["status"],
               f"{r['step']}/{r['max_steps']}" if r["max_steps"] else str(r["step"]),
               "" if r["wall_s"] is None else f"{float(r['wall_s']):.1f}"]
        for m in metrics:
            row += [fmt(r["final"].get(m)), fmt(r["best"].get(m))]
        rows.append(row)
    return header, rows


def fmt(value) -> str:
    return "" if value is None else f"{float(value):.4g}"


def pick_metric(runs: list[dict], wanted: str | None) -> str | None:
    keys = sorted({k for r in runs for row in r["curve"] for k in row if k != "step"})
    if wanted:
        match = [k for k in keys if k == wanted or k.split("/", 1)[0] == wanted or k.split("@", 1)[0] == wanted]
        if not match:
            raise UserError(f"--metric {wanted}: no run logged it; logged keys: {', '.join(keys[:12])}")
        return match[0]
    evaluated = [k for k in keys if is_metric(k)]
    losses = [k for k in keys if k.startswith("loss/")]
    return (evaluated or losses or keys or [None])[0]


def label(run: dict, keys: list[str]) -> str:
    given = dict(o.partition("=")[::2] for o in run["overrides"])
    return " ".join([run["run"], *(f"{k}={given[k]}" for k in keys if k in given)])


def plot(runs: list[dict], key: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    keys = varying(runs)
    for r in runs:
        points = [(row["step"], row[key]) for row in r["curve"] if key in row]
        if points:
            steps, values = zip(*points, strict=True)
            ax.plot(steps, values, marker="o" if len(points) < 20 else None, label=label(r, keys))
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    ax.grid(alpha=0.3)
    if len(runs) <= 20:
        ax.legend(fontsize=7)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue(), shared=True)


def write_markdown(header: list[str], rows: list[list[str]], path: Path) -> None:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    atomic_write_text(path, "\n".join(lines) + "\n", shared=True)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="genexp report", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--metric", default=None, help="the plotted key or kind (e.g. fid, loss/g)")
    parser.add_argument("--out", type=Path, default=None, help="where the files go (default: the sweep dir)")
    parser.add_argument("--group-by", default=None,
                        help="override keys whose runs are aggregated over the rest (seeds): mean ± std, n, "
                             "sorted, best marked (e.g. loss or loss,model); default: every varying key but the seed")
    parser.add_argument("--value", choices=("best", "final"), default="best",
                        help="each run's best evaluation of --metric, or its final one (default best)")
    args = parser.parse_args(argv)
    root = args.sweep_dir
    if not root.is_dir():
        raise UserError(f"{root}: no such directory; give a sweep folder (e.g. outputs/train/<date>_<time>_multirun)")
    from genexp.logger.console import Counter

    found = find_runs(root)
    # A sweep of hundreds of runs on a network disk takes a while to read: say how far it got.
    counter = Counter(lambda line: print(line, file=sys.stderr, flush=True), "report: runs read", len(found),
                      unit="run")
    runs = []
    for done, run in enumerate(found, 1):
        runs.append(summarize(run, root))
        counter.update(done)
    if not runs:
        raise UserError(f"{root} holds no runs (no metrics.jsonl or run.json within {MAX_DEPTH} levels)")
    out = args.out or root
    out.mkdir(parents=True, exist_ok=True)
    from genexp.commands import report_groups

    ranked = report_groups.metric_key(runs, args.metric, args.value) if args.metric else None
    if ranked:  # best run first
        worst = float("-inf") if report_groups.higher_is_better(ranked) else float("inf")
        runs.sort(key=lambda r: r[args.value].get(ranked, r["final"].get(ranked, worst)),
                  reverse=report_groups.higher_is_better(ranked))
    header, rows = table_rows(runs)
    if ranked and any(ranked in r[args.value] or ranked in r["final"] for r in runs):
        header.append(f"best {ranked.split('@')[0]}")
        rows = [[*row, "*" if i == 0 else ""] for i, row in enumerate(rows)]
    table_csv = io.StringIO(newline="")
    csv.writer(table_csv).writerows([header, *rows])
    atomic_write_text(out / "report.csv", table_csv.getvalue(), shared=True)
    write_markdown(header, rows, out / "report.md")
    key = pick_metric(runs, args.metric)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{len(runs)} runs in {root}")
    for name in header:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*row)
    console = Console(width=max(120, min(240, 12 * len(header))))
    console.print(table)
    for r in (r for r in runs if r["message"]):
        console.print(f"{r['run']}: {r['status']}: {r['message']}", markup=False)
    written = [out / "report.csv", out / "report.md"]
    if key is not None:
        plot(runs, key, out / "report.png")
        written.append(out / "report.png")
    keys = varying(runs)
    by = ([k.strip() for k in args.group_by.split(",") if k.strip()] if args.group_by
          else [k for k in keys if not report_groups.is_seed(k)] if any(map(report_groups.is_seed, keys)) else [])
    if by:
        written += grouped(runs, by, args, out, console)
    elif args.group_by is not None:
        raise UserError("--group-by: give override keys, e.g. --group-by loss")
    console.print("wrote " + ", ".join(map(str, written)) + (f" ({key} against step)" if key else ""), markup=False)


def grouped(runs: list[dict], by: list[str], args, out: Path, console) -> list[Path]:
    """The seeds-aggregated table (report_groups.csv / .md, printed) and its mean ± std plot."""
    from genexp.commands import report_groups

    known = {o.partition("=")[0] for r in runs for o in r["overrides"]}
    unknown = [k for k in by if k not in known]
    if unknown:
        raise UserError(f"--group-by {','.join(unknown)}: no run set it; the runs' overrides: "
                        f"{', '.join(sorted(known))}")
    wanted = args.metric or next((k.split("/", 1)[0] for r in runs for k in r["final"] if is_metric(k)), None)
    key = report_groups.metric_key(runs, wanted, args.value) if wanted else None
    if key is None:
        raise UserError(f"--group-by needs an evaluation metric to aggregate (--metric fid ...); "
                        f"{'no run evaluated ' + wanted if wanted else 'no run has evaluations'}")
    rows = report_groups.aggregate(runs, by, key, args.value)
    header, cells = report_groups.table(rows, by, key, args.value)
    buffer = io.StringIO(newline="")
    csv.writer(buffer).writerows([header, *cells])
    atomic_write_text(out / "report_groups.csv", buffer.getvalue(), shared=True)
    write_markdown(header, cells, out / "report_groups.md")
    from rich.table import Table

    table = Table(title=f"{key}: {len(rows)} groups by {', '.join(by)} (mean ± std over seeds; * best)")
    for name in header:
        table.add_column(name, overflow="fold")
    for row in cells:
        table.add_row(*row)
    console.print(table)
    report_groups.plot_bands(runs, by, key, out / "report_groups.png")
    return [out / "report_groups.csv", out / "report_groups.md", out / "report_groups.png"]
