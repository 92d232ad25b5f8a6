"""EDM against DCGAN and StyleGAN2 at matched CPU budgets on digits and MNIST (issue 18, item 5).

Each run: `genexp train` single-threaded (OMP_NUM_THREADS=1) with trainer.max_time_s=<budget>
trainer.time_clock=process (this process's CPU time, so neighbours on a shared machine do not change
the budget), then `genexp eval ckpt=.../last.pt metrics=[fid] n=<n>` with the shipped classifier
extractor (extractor=auto: digits_lenet / mnist_lenet). One process at a time.

    python scripts/bench_families.py --data digits --seeds 0 1 2 --budget 20 --n 512
    python scripts/bench_families.py --data mnist --seeds 0 --budget 60 --n 512 --root /work/shared/data/mnist

Results are appended to docs/bench/families.json (one record per run, re-runs replace their record);
--table rewrites docs/bench/families.md from it.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUT_JSON = REPO / "docs" / "bench" / "families.json"
OUT_MD = REPO / "docs" / "bench" / "families.md"

# The data sets' own packs where they exist; StyleGAN2 narrowed to CPU size (the layout of the 32 px preset:
# 2 mapping layers, no style mixing), non-saturating loss with lazy R1 and the official Adam settings.
STYLEGAN2_SMALL = ["model=stylegan2_32", "model.channel_base=2048", "model.channel_max=64", "model.z_dim=64",
                   "model.w_dim=64", "model.discriminator.mbstd_group=4", "loss=ns", "+loss/reg=[r1]",
                   "optim.lr=0.0025", "optim.betas=[0,0.99]"]
MODELS = {
    "edm": {"digits": ["experiment=edm_digits"], "mnist": ["experiment=edm_digits", "data=mnist"]},
    "dcgan": {"digits": ["experiment=digits_dcgan"], "mnist": ["experiment=mnist_dcgan"]},
    "stylegan2": {"digits": ["data=digits", *STYLEGAN2_SMALL], "mnist": ["data=mnist", *STYLEGAN2_SMALL]},
}
# Nothing but training inside the budget: no periodic grids or evaluations; one checkpoint at the end.
QUIET = ["logger=none", "trainer.progress=plain", "trainer.log_every=100", "trainer.sample_every=0",
         "trainer.eval_every=0", "trainer.ckpt_every=100000000", "trainer.max_steps=100000000", "metrics=[]"]


def child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(argv: list[str], log: Path) -> tuple[float, float]:
    """Runs `python -m genexp argv`; returns (wall seconds, CPU seconds of the child)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cpu, start = child_cpu(), time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run([sys.executable, "-m", "genexp", *argv], cwd=REPO, env=env, stdout=f,
                              stderr=subprocess.STDOUT)
    wall, cpu = time.perf_counter() - start, child_cpu() - cpu
    if proc.returncode:
        raise SystemExit(f"failed ({proc.returncode}): genexp {' '.join(argv)}; see {log}")
    return wall, cpu


def bench_one(data: str, model: str, seed: int, budget: float, n: int, root: str | None, out: Path) -> dict:
    run_dir = out / f"{data}_{model}_s{seed}"
    data_args = [f"data.root={root}", "data.download=false"] if data == "mnist" and root else []
    train = ["train", *MODELS[model][data], *data_args, *QUIET, f"trainer.seed={seed}",
             f"trainer.max_time_s={budget}", "trainer.time_clock=process", f"hydra.run.dir={run_dir}"]
    out.mkdir(parents=True, exist_ok=True)
    wall, cpu = run(train, out / f"{run_dir.name}.train.log")
    import torch

    ckpt = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    steps, batch = int(ckpt["step"]), int(ckpt["config"]["data"]["batch_size"])
    eval_dir = run_dir / "eval"
    # The checkpoint names its data (root included): eval reads the same set.
    evaluate = ["eval", f"ckpt={run_dir}/checkpoints/last.pt", "metrics=[fid]", f"n={n}", "seed=0",
                f"hydra.run.dir={eval_dir}"]
    eval_wall, eval_cpu = run(evaluate, out / f"{run_dir.name}.eval.log")
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    values = metrics.get("metrics", metrics)
    fid_key = next(k for k in values if k.startswith("fid/"))
    return {"data": data, "model": model, "seed": seed, "budget_cpu_s": budget, "steps": steps,
            "batch": batch, "images_seen": steps * batch, "fid_key": fid_key, "fid": float(values[fid_key]),
            "train_wall_s": round(wall, 1), "train_cpu_s": round(cpu, 1), "eval_wall_s": round(eval_wall, 1),
            "eval_cpu_s": round(eval_cpu, 1), "train_cmd": "genexp " + " ".join(train),
            "eval_cmd": "genexp " + " ".join(evaluate)}


def load() -> list[dict]:
    return json.loads(OUT_JSON.read_text())["runs"] if OUT_JSON.exists() else []


def save(records: list[dict], machine: str) -> None:
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{machine}, torch {__import__('torch').__version__} CPU, 1 thread a run"
    OUT_JSON.write_text(json.dumps({"machine": machine, "runs": records}, indent=1) + "\n")


def record_run(record: dict, machine: str) -> None:
    """Replaces the run's earlier record; a lock, since one bench per data set may run at once."""
    with open(Path(tempfile.gettempdir()) / "genexp-bench-families.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = ("data", "model", "seed", "budget_cpu_s", "fid_key")
        records = [r for r in load() if tuple(r[k] for k in key) != tuple(record[k] for k in key)]
        save(records + [record], machine)


def mean_std(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}"


def table(records: list[dict]) -> str:
    rows = ["| data | model | budget (CPU s) | seeds | steps | images seen | FID | train CPU s | train wall s | "
            "eval CPU s | eval wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["data"], r["model"], r["budget_cpu_s"], r["fid_key"]), []).append(r)
    for (data, model, budget, key), rs in groups.items():
        rows.append(f"| {data} | {model} | {budget:g} | {len(rs)} | {mean_std([r['steps'] for r in rs])} | "
                    f"{mean_std([r['images_seen'] for r in rs])} | {mean_std([r['fid'] for r in rs])} (`{key}`) | "
                    f"{mean_std([r['train_cpu_s'] for r in rs])} | {mean_std([r['train_wall_s'] for r in rs])} | "
                    f"{mean_std([r['eval_cpu_s'] for r in rs])} | {mean_std([r['eval_wall_s'] for r in rs])} |")
    return "\n".join(rows)


def markdown(records: list[dict]) -> str:
    """docs/bench/families.md: the table, the machine, one run's exact commands per row, the caveats."""
    machine = json.loads(OUT_JSON.read_text())["machine"] if OUT_JSON.exists() else ""
    commands = {}
    for r in records:
        commands.setdefault((r["data"], r["model"]), (r["train_cmd"], r["eval_cmd"]))
    lines = ["# EDM, DCGAN and StyleGAN2 at matched CPU budgets (issue 18)", "",
             f"Machine: {machine}. Budget: `trainer.max_time_s` of this process's CPU time "
             "(`trainer.time_clock=process`), so the other workers on the machine do not change it; training "
             "stops at the first step boundary past it. FID: the shipped classifier's features "
             "(`extractor=auto`: digits_lenet on digits), the same fake sample count for every model, against "
             "all real images of the data set. EDM samples with its default sampler: 18 Heun steps, 35 NFE. "
             "Mean ± std over the seeds (`trainer.seed`; every eval uses seed=0). Wall seconds include "
             "Python start-up and depend on the load of the machine; CPU seconds of a training include "
             "start-up (~15-20 s) beyond the budget.", "",
             "Made by `python scripts/bench_families.py --data digits --models stylegan2 dcgan edm "
             "--seeds 0 1 2 --budget 20 --n 512` (records: docs/bench/families.json, one per run). MNIST "
             "(`--data mnist`) was not run: at ~250 CPU s per EDM evaluation it did not fit the session.", "",
             table(records), "",
             "## What this does and does not show", "",
             "- Budgets this small favour fast-converging models, and at 20 CPU seconds (~20 steps of EDM or "
             "StyleGAN2, ~120 of DCGAN on this machine) no model has learnt digits: every FID sits at or above "
             "that of uniform noise (1331 for 512 noise images). The table measures how far each family gets in "
             "the first seconds, not which family is better; longer budgets on a less loaded machine are the "
             "real comparison (the script takes --budget).",
             "- experiment=edm_digits warms its learning rate up over 10 kimg (~156 steps): within the budget EDM "
             "trains at under a seventh of its rate. Without the warm-up, EDM reaches FID 144.9 "
             "(`fid/digits_lenet@256/heun35`) after 100 steps (the slow test tests/test_families_slow.py).",
             "- DCGAN's early samples are saturated, which the classifier scores worse than noise.",
             "- EDM's evaluation costs 35 network evaluations per sample: ~250 CPU s for 512 samples here, "
             "against ~20 s for a GAN.", "",
             "## Commands (seed 0; other seeds change trainer.seed and the run directory)", ""]
    for (data, model), (train, evaluate) in commands.items():
        train, evaluate = (c.replace(str(REPO) + "/", "") for c in (train, evaluate))
        lines += [f"- {data} / {model}:", f"  - `OMP_NUM_THREADS=1 {train}`", f"  - `OMP_NUM_THREADS=1 {evaluate}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--budget", type=float, default=20.0, help="CPU seconds of training per run")
    parser.add_argument("--n", type=int, default=512, help="generated samples per FID")
    parser.add_argument("--root", default="/work/shared/data/mnist", help="MNIST idx folder")
    parser.add_argument("--out", default="outputs/bench_families")
    parser.add_argument("--machine", default="2-core shared CPU", help="the machine, for the table's note")
    parser.add_argument("--table", action="store_true", help="only print the table of docs/bench/families.json")
    parser.add_argument("--markdown", action="store_true", help="only write docs/bench/families.md from the json")
    args = parser.parse_args()
    if args.table:
        print(table(load()))
        return
    if args.markdown:
        OUT_MD.write_text(markdown(load()))
        return
    out = (REPO / args.out).resolve()
    for seed in args.seeds:  # seed-major: a cut-short bench still has every model at the first seeds
        for model in args.models:
            record = bench_one(args.data, model, seed, args.budget, args.n, args.root, out)
            print(json.dumps({k: v for k, v in record.items() if not k.endswith("_cmd")}), flush=True)
            record_run(record, args.machine)
    print(table(load()))


if __name__ == "__main__":
    main()
