"""Mode-collapse benchmarks: the 2-D ring and grid (every GAN objective under one protocol) and Stacked MNIST.

    python scripts/bench_modes.py [--seeds 5] [--steps 3000] [--decay constant] [--losses ns,wgan_gp]
                                  [--experiments ring_mlp,grid_mlp]

Protocol (PacGAN's): the experiment packs ring_mlp / grid_mlp (and *_pacgan), MLP G and D
of 3 x 256, batch 500, Adam or each objective's own optimizer family at lr 1e-3, each
objective's own D steps and penalties, the given number of G steps, the learning rate
constant or decayed linearly to 0 over the second half (--decay linear); then 2,500 samples
scored by `modes` (modes captured, % high quality within 3 std, reverse KL to uniform).
Two protocols are tabled: every objective at 3,000 steps and constant lr (the sweep), and
our best configuration per dataset, which the packs ship (ring: LSGAN, 8,000 steps; grid: NS-GAN,
12,000 steps; both with the lr decayed linearly over the second half).

Stacked MNIST (VEEGAN / PacGAN): --experiments stacked_mnist_dcgan,stacked_mnist_pacgan
with MNIST idx files in --mnist (../shared/data/mnist by default); 26,000 samples labelled
channel by channel by genexp's MNIST classifier give modes covered of 1,000 and
KL(generated || uniform).
Runs go two at a time with one thread each; every finished run is appended to
docs/bench/modes.jsonl (tracked, so a rerun in any session skips what is there), and the
table (mean +- std over seeds) is written to docs/modes.md with the commands behind it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LOSSES = ["ns", "minimax", "wgan", "wgan_gp", "wgan_div", "gan_qp", "rsgan", "rasgan", "ralsgan", "lsgan", "hinge"]
BEST = {  # what conf/experiment/{ring,grid}_mlp.yaml ship: experiment -> (loss, steps, decay)
    "ring_mlp": ("lsgan", 8000, "linear"),
    "grid_mlp": ("ns", 12000, "linear"),
}
PUBLISHED = {  # PacGAN table 2/3 (10 runs), for orientation
    "ring": "PacGAN paper: GAN 6.3 modes / 98.2% HQ; PacGAN2 7.9 / 95.6%",
    "grid": "PacGAN paper: GAN 17.3 modes / 94.8% HQ; PacGAN4 24.8 / 93.6%",
    "stacked": "Published (VEEGAN / PacGAN, about 100k steps): DCGAN 99 modes / KL 3.4; PacGAN2 1000 / 0.06",
}
COLUMNS = [  # metric key, column title, format
    ("modes/captured", "modes captured", "{:.1f}"), ("modes/hq_percent", "high quality %", "{:.1f}"),
    ("modes/reverse_kl", "reverse KL", "{:.3f}"), ("stacked/modes", "modes of 1,000", "{:.0f}"),
    ("stacked/kl", "KL to uniform", "{:.2f}"),
]


def run_one(experiment: str, loss: str, seed: int, steps: int, decay: str, mnist: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        cmd = [sys.executable, "-m", "genexp", "train", f"experiment={experiment}", f"loss={loss}",
               f"trainer.seed={seed}", f"trainer.max_steps={steps}", f"trainer.eval_every={steps}",
               f"optim.decay={decay}", "optim.decay_start=0.5",
               f"trainer.ckpt_every={steps}", "trainer.sample_every=0", "logger=none", "trainer.progress=plain",
               f"hydra.run.dir={tmp}/run"] + ([f"data.root={mnist}"] if experiment.startswith("stacked") else [])
        start = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
        record = {"experiment": experiment, "loss": loss, "seed": seed, "steps": steps, "decay": decay,
                  "seconds": round(time.perf_counter() - start, 1)}
        if proc.returncode != 0:
            return {**record, "error": proc.stderr.strip().splitlines()[-1][:300] if proc.stderr.strip() else "?"}
        last = [json.loads(line) for line in Path(tmp, "run", "metrics.jsonl").read_text().splitlines()][-1]
        return {**record, **{k.split("@")[0]: v for k, v in last.items() if k.startswith(("modes/", "stacked/"))}}


def mean_std(values: list[float], fmt: str) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{fmt.format(statistics.mean(values))} ± {fmt.format(sd)}"


def protocol(record: dict) -> tuple[int, str]:
    return record["steps"], record.get("decay", "constant")


def table(records: list[dict], steps: int, decay: str) -> str:
    """One table per experiment, from every stored run of this protocol."""
    lines = []
    experiments = list(dict.fromkeys(r["experiment"] for r in records))
    for exp in experiments:
        rows = [r for r in records if r["experiment"] == exp and "error" not in r]
        if not rows:
            continue
        losses = [loss for loss in LOSSES if any(r["loss"] == loss for r in rows)]
        seeds = max(r["seed"] for r in rows) + 1
        data = exp.split("_")[0]
        command = (f"python scripts/bench_modes.py --seeds {seeds} --steps {steps} --decay {decay} "
                   f"--losses {','.join(losses)} --experiments {exp}")
        columns = [c for c in COLUMNS if all(c[0] in r for r in rows)]
        lines += [f"### {exp}", "", f"`{command}`", "", PUBLISHED.get(data, ""), "",
                  "| loss | seeds | " + " | ".join(title for _, title, _ in columns) + " | s / run |",
                  "|---" * (len(columns) + 3) + "|"]
        for loss in losses:
            rs = [r for r in rows if r["loss"] == loss]
            if not rs:
                continue

            cells = [mean_std([r[key] for r in rs], fmt) for key, _, fmt in columns]
            seconds = statistics.mean(r["seconds"] for r in rs)
            lines.append(f"| {loss} | {len(rs)} | " + " | ".join(cells) + f" | {seconds:.0f} |")
        failed = [r for r in records if r["experiment"] == exp and "error" in r]
        if failed:
            lines += ["", "Failed runs: " + "; ".join(f"{r['loss']} seed {r['seed']}: {r['error']}" for r in failed)]
        lines.append("")
    return "\n".join(lines)


def best_summary(records: list[dict]) -> str:
    lines = ["## Best configuration (the experiment packs as shipped)", "",
             "| experiment | loss, steps, lr | seeds | modes captured | high quality % | reverse KL |",
             "|---" * 6 + "|"]
    for exp, (loss, steps, decay) in BEST.items():
        rs = [r for r in records if r["experiment"] == exp and r["loss"] == loss and protocol(r) == (steps, decay)
              and "error" not in r]
        if rs:
            cells = [mean_std([r[key] for r in rs], fmt) for key, _, fmt in COLUMNS[:3]]
            lines.append(f"| {exp} | {loss}, {steps}, {decay} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--decay", default="constant", choices=["constant", "linear", "cosine"],
                    help="learning-rate decay over the second half of the run")
    ap.add_argument("--losses", default=",".join(LOSSES))
    ap.add_argument("--experiments", default="ring_mlp,grid_mlp,ring_pacgan,grid_pacgan")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist",
                    help="MNIST idx files for Stacked MNIST")
    ap.add_argument("--results", type=Path, default=REPO / "docs" / "bench" / "modes.jsonl")
    ap.add_argument("--doc", type=Path, default=REPO / "docs" / "modes.md")
    ap.add_argument("--report", action="store_true", help="only rewrite the doc from the stored results")
    args = ap.parse_args()
    losses, experiments = args.losses.split(","), args.experiments.split(",")
    args.results.parent.mkdir(parents=True, exist_ok=True)
    done = [json.loads(line) for line in args.results.read_text().splitlines()] if args.results.is_file() else []
    have = {(r["experiment"], r["loss"], r["seed"], *protocol(r)) for r in done}
    todo = [] if args.report else [(e, loss, s) for s in range(args.seeds) for e in experiments for loss in losses
                                   if (e, loss, s, args.steps, args.decay) not in have]
    print(f"{len(todo)} runs to do, {len(have)} already in {args.results}", flush=True)
    with ThreadPoolExecutor(args.jobs) as pool, open(args.results, "a") as out:
        for record in pool.map(lambda t: run_one(*t, args.steps, args.decay, args.mnist.resolve()), todo):
            out.write(json.dumps(record) + "\n")
            out.flush()
            done.append(record)
            print(json.dumps(record), flush=True)
    sections = []
    for steps, decay in sorted({protocol(r) for r in done}, key=lambda p: (p[1] == "constant", -p[0])):
        sections.append(f"## {steps} G steps, {decay} learning rate\n\n"
                        + table([r for r in done if protocol(r) == (steps, decay)], steps, decay))
    doc = ("# Mode coverage: the 2-D ring and grid, Stacked MNIST\n\nMean ± std over seeds; 2,500 samples a run on "
           "the ring and grid, 26,000 on Stacked MNIST. The protocol is in the docstring of scripts/bench_modes.py. "
           "Each table gives the command that produces it "
           "(results accumulate in docs/bench/modes.jsonl; `--report` rewrites this page from them).\n\n"
           + best_summary(done) + "\n".join(sections))
    args.doc.parent.mkdir(parents=True, exist_ok=True)
    args.doc.write_text(doc)
    print(doc)


if __name__ == "__main__":
    main()
