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


def write_pngs(images, folder: Path) -> None:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    pixels = images.add(1).mul(127.5).round().clamp(0, 255).byte().squeeze(1).numpy()
    for i, image in enumerate(pixels):
        Image.fromarray(image, mode="L").save(folder / f"{i:05d}.png")


def references(data: str, n: int, root: str, out: Path) -> list[dict]:
    """The FID a model's sits between, at the same n and extractor: n other real images and n images of
    uniform noise. The metric's real side is n training images, a fixed subset (randperm with seed 0,
    genexp/metrics/suite.py); the real fakes are the next n of that order on digits, MNIST's test split."""
    import torch

    from genexp.data.digits import DigitsDataset
    from genexp.data.idx import IdxDataset

    if data == "digits":
        real = DigitsDataset(resolution=16, split="all").x
        data_args = ["data=digits"]
    else:
        real = IdxDataset(root, "mnist", split="test", resolution=32, download=False).x
        data_args = ["data=mnist", f"data.root={root}", "data.download=false"]
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    picks = {"real": real[order[n:2 * n]] if data == "digits" else real[order[:n]],
             "noise": torch.rand((n, *real.shape[1:]), generator=generator).mul(2).sub(1)}
    records = []
    for what, images in picks.items():
        folder = out / f"{data}_{what}{n}"
        write_pngs(images, folder)
        evaluate = ["eval", *data_args, f"fake={folder}", "metrics=[fid]", f"n={n}", "seed=0",
                    f"hydra.run.dir={folder}_eval"]
        run(evaluate, out / f"{folder.name}.eval.log")
        values = json.loads((Path(f"{folder}_eval") / "metrics.json").read_text())["metrics"]
        key = next(k for k in values if k.startswith("fid/"))
        records.append({"data": data, "what": what, "n": n, "fid_key": key, "fid": float(values[key]),
                        "eval_cmd": "genexp " + " ".join(evaluate)})
    return records


def eval_raw(record: dict, out: Path) -> dict:
    """A GAN's FID from its raw G as well (ema=false): the default EMA of G (DCGAN: beta 0.999 a step from
    step 0; StyleGAN2: a 10 kimg half-life) still holds much of the initial weights after the few kimg a CPU
    budget allows, which EDM's ramped-up EMA does not. The table shows the better of the two."""
    if record["model"] == "edm":
        return record
    run_dir = out / f"{record['data']}_{record['model']}_s{record['seed']}"
    eval_dir = run_dir / "eval_raw"
    evaluate = ["eval", f"ckpt={run_dir}/checkpoints/last.pt", "metrics=[fid]", f"n={record['fid_key'].split('@')[1]}",
                "seed=0", "ema=false", f"hydra.run.dir={eval_dir}"]
    if not (eval_dir / "metrics.json").is_file():
        run(evaluate, out / f"{run_dir.name}.eval_raw.log")
    values = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    return {**record, "fid_raw": float(values[record["fid_key"]]), "eval_raw_cmd": "genexp " + " ".join(evaluate)}


def load() -> list[dict]:
    return json.loads(OUT_JSON.read_text())["runs"] if OUT_JSON.exists() else []


def save(records: list[dict], machine: str) -> None:
    OUT_JSON.parent.mkdir(parents=True, exist_ok=True)
    machine = f"{machine}, torch {__import__('torch').__version__} CPU, 1 thread a run"
    whole = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    OUT_JSON.write_text(json.dumps({**whole, "machine": machine, "runs": records}, indent=1) + "\n")


def record_run(record: dict, machine: str) -> None:
    """Replaces the run's earlier record; a lock, since one bench per data set may run at once."""
    with open(Path(tempfile.gettempdir()) / "genexp-bench-families.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        key = ("data", "model", "seed", "budget_cpu_s", "fid_key")
        records = [r for r in load() if tuple(r[k] for k in key) != tuple(record[k] for k in key)]
        save(records + [record], machine)


def mean_std(values: list[float]) -> str:
    def number(v: float) -> str:  # 17,344 rather than 1.734e+04
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"

    if len(values) == 1:
        return number(values[0])
    std = statistics.stdev(values)
    return f"{number(statistics.mean(values))} ± {f'{std:,.0f}' if std >= 100 else f'{std:.2g}'}"


def table(records: list[dict], references: list[dict] = ()) -> str:
    """One row per (data, budget, model), best FID first within a data set and budget; then the data set's
    references at the same n (other real images: the floor small samples leave; uniform noise)."""
    rows = ["| data | budget (CPU s) | model | seeds | steps | images seen | FID (GANs: EMA G / raw G) | train CPU s | "
            "train wall s | eval CPU s | eval wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["data"], r["budget_cpu_s"], r["model"], r["fid_key"]), []).append(r)
    order = sorted(groups, key=lambda g: (g[0], -g[1], statistics.mean(r["fid"] for r in groups[g])))
    for (data, budget, model, key) in order:
        rs = groups[(data, budget, model, key)]
        raw = f" / {mean_std([r['fid_raw'] for r in rs])}" if all("fid_raw" in r for r in rs) else ""
        rows.append(f"| {data} | {budget:g} | {model} | {len(rs)} | {mean_std([r['steps'] for r in rs])} | "
                    f"{mean_std([r['images_seen'] for r in rs])} | {mean_std([r['fid'] for r in rs])}{raw} (`{key}`) | "
                    f"{mean_std([r['train_cpu_s'] for r in rs])} | {mean_std([r['train_wall_s'] for r in rs])} | "
                    f"{mean_std([r['eval_cpu_s'] for r in rs])} | {mean_std([r['eval_wall_s'] for r in rs])} |")
    for ref in references:
        what = {"real": "other real images", "noise": "uniform noise"}[ref["what"]]
        fid = f"{ref['fid']:.4g} (`{ref['fid_key']}`)"
        rows.append(f"| {ref['data']} | - | {what} | - | - | - | {fid} | - | - | - | - |")
    return "\n".join(rows)


# What the numbers show, written after reading them (docs/bench/families.md keeps it under the table).
NOTES = """
- **digits, 300 CPU seconds a run (n = 512):** EDM's samples score 22 ± 4, close to the floor that 512 other
  real digits leave (18.2), against DCGAN's 60 ± 10 and StyleGAN2's 253 ± 26 (their raw G). EDM took ~270
  steps (17 kimg), its learning rate warmed up over the first 10 of them, DCGAN ~1,740 steps (111 kimg),
  StyleGAN2 ~280 (18 kimg). Per CPU second EDM learns the most here, although every sample costs it 35
  network evaluations.
- **MNIST at 32 px, 300 CPU seconds (n = 256):** the same budget buys ~80 steps (5 kimg) of EDM or StyleGAN2
  and ~330 of DCGAN: nothing has converged (real floor 11.9, noise 721). EDM, mid-warm-up, is ahead at
  243 ± 14; StyleGAN2's EMA G 480 ± 14, DCGAN's raw G 538 ± 42. DCGAN's EMA G (915) scores worse than
  noise: at ~330 steps it still holds 72 % of the initial weights (0.999^330).
- **EMA of G.** GANs are evaluated from their EMA G (the default, `ema=true`) and their raw G (`ema=false`,
  `--raw`). With DCGAN's per-step beta 0.999 from step 0 or StyleGAN2's 10 kimg half-life, the EMA still
  holds much of the initial weights after a CPU budget's few kimg (0.999^1740 = 18 %; 2^(-18/10) = 29 %),
  while EDM's EMA ramps up (half-life at most 0.05 x images seen). On digits the raw G is 3x better for
  DCGAN. For runs this short, `model.method.ema_rampup=true` (what `hparams_search=compare_losses` sets)
  or `model.method.ema_kimg_rampup=0.05` for StyleGAN2 is the fair setting.
- **What this does not show:** quality at convergence. The budgets are CPU minutes, every family runs its
  pack's defaults (batch 64, its own lr and EMA), nothing was tuned, and StyleGAN2 is narrowed to CPU
  size (channel_max 64, 2 mapping layers). The 20-CPU-second rows are an earlier run in which no family
  had learnt digits yet. The issue's GPU number (CIFAR-10 kimg/s of DDPM++) was not measured: no GPU was
  lent.
- **Cost of evaluation:** EDM's FID took ~270 CPU s for 512 digits and ~490 CPU s for 256 MNIST images
  (18 Heun steps), a GAN's 15-25 s.
"""


def markdown(records: list[dict]) -> str:
    """docs/bench/families.md: the table, the machine, the commands that made it, the caveats."""
    whole = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}
    references = whole.get("references", [])
    invocations = {}
    for r in records:
        n = r["fid_key"].split("@", 1)[1].split("/")[0]
        root = " --root /work/shared/data/mnist" if r["data"] == "mnist" else ""
        seeds = sorted({x["seed"] for x in records if (x["data"], x["budget_cpu_s"]) == (r["data"], r["budget_cpu_s"])})
        invocations[(r["data"], r["budget_cpu_s"])] = (
            f"python scripts/bench_families.py --data {r['data']} --seeds {' '.join(map(str, seeds))} "
            f"--budget {r['budget_cpu_s']:g} --n {n}{root}")
    for data in sorted({ref["data"] for ref in references}):
        ref = next(x for x in references if x["data"] == data)
        root = " --root /work/shared/data/mnist" if data == "mnist" else ""
        invocations[(data, "references")] = (f"python scripts/bench_families.py --references --data {data} "
                                              f"--n {ref['n']}{root}")
    commands = {}
    for r in sorted(records, key=lambda r: -r["budget_cpu_s"]):  # the longest budget's commands
        commands.setdefault((r["data"], r["model"]), (r["train_cmd"], r["eval_cmd"]))
    lines = ["# EDM, DCGAN and StyleGAN2 at matched CPU budgets (issue 18)", "",
             f"Machine: {whole.get('machine', '')}. Budget: `trainer.max_time_s` of the training process's CPU time "
             "(`trainer.time_clock=process`), so what else runs on the machine does not change it; training "
             "stops at the first step boundary past it. FID: the shipped classifier's features "
             "(`extractor=auto`: digits_lenet on digits, mnist_lenet on MNIST), n generated images against n "
             "training images (the metric's fixed subset, a seed-0 permutation), the same n for every model of a "
             "data set. EDM samples with its default sampler: 18 Heun steps, 35 network evaluations a sample. "
             "Mean ± std over the seeds (`trainer.seed`; every eval uses seed=0). Wall seconds include Python "
             "start-up and depend on the load of the machine; a training's CPU seconds include start-up "
             "(~15-20 s) beyond the budget.", "",
             "Made by (records: docs/bench/families.json, one per run; `--markdown` writes this page):", ""]
    lines += [f"- `{cmd}`" for cmd in invocations.values()]
    lines += ["", table(records, references), ""]
    if NOTES.strip():
        lines += ["## What this does and does not show", "", NOTES.strip(), ""]
    lines += ["## Commands (seed 0; other seeds change trainer.seed and the run directory)", ""]
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
    parser.add_argument("--raw", action="store_true",
                        help="only evaluate the recorded GAN runs' raw G (ema=false) as well, into their records")
    parser.add_argument("--references", action="store_true",
                        help="only the FID of n real and of n noise images (the floor and the ceiling)")
    args = parser.parse_args()
    if args.table:
        print(table(load(), json.loads(OUT_JSON.read_text()).get("references", []) if OUT_JSON.exists() else []))
        return
    if args.raw:
        out = (REPO / args.out).resolve()
        for record in [r for r in load() if r["data"] == args.data and r["budget_cpu_s"] == args.budget]:
            record = eval_raw(record, out)
            print(record["data"], record["model"], record["seed"], record["fid"], record.get("fid_raw"), flush=True)
            record_run(record, args.machine)
        return
    if args.references:
        out = (REPO / args.out).resolve()
        records = references(args.data, args.n, args.root, out)
        print(json.dumps(records, indent=1))
        with open(Path(tempfile.gettempdir()) / "genexp-bench-families.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            whole = json.loads(OUT_JSON.read_text())
            whole["references"] = [r for r in whole.get("references", []) if (r["data"], r["n"]) != (args.data, args.n)]
            whole["references"] += records
            OUT_JSON.write_text(json.dumps(whole, indent=1) + "\n")
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
