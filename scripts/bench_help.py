"""`genexp <command> --help` time (issue: under 0.5 s, no torch import), against a bare interpreter start
and a Hydra composition of the same config (`--cfg job`, what the help used to cost) in the same run.

    python scripts/bench_help.py [--repeats 5]   # writes docs/bench/help.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall s, CPU s of the child) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(argv, cwd=ROOT, capture_output=True, check=True, env={**os.environ, "GENEXP_OFFLINE": "1"})
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "docs" / "bench" / "help.json"))
    args = ap.parse_args()
    py = [sys.executable]
    cases = {"python -c pass": py + ["-c", "pass"]}
    for command in ("train", "eval", "sample", "project"):
        cases[f"genexp {command} --help"] = py + ["-m", "genexp", command, "--help"]
    cases["genexp train --cfg job (Hydra + torch)"] = py + ["-m", "genexp", "train", "--cfg", "job"]
    rows = {}
    for _ in range(args.repeats):  # interleaved, so a busy moment on a shared machine hits every case
        for name, argv in cases.items():
            rows.setdefault(name, []).append(timed(argv))
    result = {"machine": f"{platform.machine()} {os.cpu_count()} cores, python {platform.python_version()}",
              "repeats": args.repeats, "cases": {}}
    print(f"{'case':40s} {'wall median s':>14s} {'cpu median s':>13s}")
    for name, runs in rows.items():
        wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        result["cases"][name] = {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3)}
        print(f"{name:40s} {wall:14.3f} {cpu:13.3f}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
