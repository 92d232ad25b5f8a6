"""Throughput of the scale-out options, each as a ratio against fp32 eager in the same invocation.

    python scripts/bench_scale.py [--steps 60] [--model dcgan] [--out docs/bench/scale.json]

Every row is a real `genexp train` (a subprocess; two under torchrun for DDP) of the same model on
the same data; a row's rate is the mean of the steady-state log intervals (the first one, with
start-up and torch.compile's compilation, is left out). Rows:
  - ddp:        1 process with all cores vs 2 gloo processes (nccl on 2+ GPUs) with half each, the
                same global batch; plus the gradient bytes each process all-reduces per step.
Rows run in rounds (every row once per round, --repeats rounds) and report the median rate.
  - precision:  32 vs bf16 vs 16 (float16 autocast + GradScaler); on a CPU without bf16/fp16
                units these are slower, and only run with --cpu-amp.
  - compile:    trainer.compile=true vs eager.
  - channels_last and accumulate=2 (the same global batch in two micro-batches).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
RATE = re.compile(r"step\s+(\d+)/\d+ .*? ([\d.]+) (it/s|s/it)")  # under 1 it/s the line says s/it


def train(args: list[str], steps: int, log_every: int, threads: int, nproc: int = 1) -> dict:
    """Steady-state steps/s of one run (the mean over log intervals after the first)."""
    with tempfile.TemporaryDirectory() as tmp:
        common = ["logger=none", "trainer.progress=plain", f"trainer.max_steps={steps}",
                  f"trainer.log_every={log_every}", "trainer.sample_every=0", "trainer.eval_every=0",
                  "trainer.ckpt_every=0", "metrics=[]", f"hydra.run.dir={tmp}/run", *args]
        launcher = [sys.executable, "-m", "genexp"] if nproc == 1 else \
            [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", "-m", "genexp"]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
        start = time.perf_counter()
        proc = subprocess.run([*launcher, "train", *common], cwd=REPO, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail)[:400], "args": args, "nproc": nproc}
    rates = [float(m.group(2)) if m.group(3) == "it/s" else 1 / float(m.group(2)) for m in RATE.finditer(proc.stdout)]
    steady = rates[1:] or rates
    return {"steps_per_s": round(sum(steady) / len(steady), 3), "wall_s": round(wall, 1), "args": args,
            "nproc": nproc, "threads": threads}


def gradient_bytes(model_args: list[str]) -> dict:
    """Bytes of gradients each process all-reduces per training step (float32): every D step's D
    gradients and the G step's (lazy regularizers add their own steps every N)."""
    from omegaconf import open_dict

    from genexp.cli import conf_dir
    from genexp.config.prepare import compose
    from genexp.methods import build_method

    cfg = compose("train", ["logger=none", *model_args], conf_dir())
    with open_dict(cfg):
        del cfg["hydra"]
    method = build_method(cfg, torch.device("cpu"))
    per_opt = {name: sum(p.numel() for g in opt.param_groups for p in g["params"]) * 4
               for name, opt in method.optimizers.items()}
    d_steps = int(cfg.loss.get("d_steps", 1))
    per_step = sum(v * (d_steps if name == "D" else 1) for name, v in per_opt.items())
    # a ring all-reduce sends 2 (W - 1) / W of the buffer from each process
    return {"per_optimizer": per_opt, "per_step": per_step,
            "ring_sent_per_process": {w: int(2 * (w - 1) / w * per_step) for w in (2, 4, 8)}}


def ratio(row: dict, base: dict) -> float | None:
    if "steps_per_s" not in row or "steps_per_s" not in base:
        return None
    return round(row["steps_per_s"] / base["steps_per_s"], 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--log-every", type=int, default=15)
    parser.add_argument("--model", default="dcgan", help="model config (data=digits, default batch)")
    parser.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    parser.add_argument("--cpu-amp", action="store_true", help="also time bf16 / 16 on a CPU")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every row (the median is reported)")
    parser.add_argument("--out", default=str(REPO / "docs" / "bench" / "scale.json"))
    a = parser.parse_args()
    cores = os.cpu_count() or 1
    cuda = torch.cuda.is_available()
    base_args = [f"model={a.model}", *a.extra]
    report = {"device": torch.cuda.get_device_name(0) if cuda else f"cpu ({cores} cores)", "torch": torch.__version__,
              "steps": a.steps, "model": a.model, "rows": {}}
    rows = report["rows"]
    # (name, overrides, processes, threads each): on a CPU the two DDP processes share the cores the
    # single one had (same total threads)
    plan = [("fp32_eager", [], 1, cores)]
    if not cuda or torch.cuda.device_count() >= 2:
        plan.append(("ddp_2proc", [], 2, max(1, cores // 2)))
    if cuda or a.cpu_amp:
        plan += [(f"precision_{p}", [f"trainer.precision={p}"], 1, cores) for p in ("bf16", "16")]
    else:
        report["precision_note"] = "bf16 / 16 skipped: this CPU has no bf16/fp16 units (--cpu-amp runs them)"
    plan += [("compile", ["trainer.compile=true"], 1, cores),
             ("channels_last", ["trainer.channels_last=true"], 1, cores),
             ("accumulate_2", ["trainer.accumulate=2"], 1, cores)]
    # Rounds of every row in turn, so that a slow spell of a shared machine hits every row alike.
    for round_ in range(a.repeats):
        for name, args, nproc, threads in plan:
            result = train([*base_args, *args], a.steps, a.log_every, threads, nproc)
            row = rows.setdefault(name, {"args": args, "nproc": nproc, "threads": threads, "rates": []})
            if "error" in result:
                row["error"] = result["error"]
            else:
                row["rates"].append(result["steps_per_s"])
            print(f"round {round_ + 1} {name:<20} {result.get('steps_per_s', result.get('error'))}", flush=True)
    for row in rows.values():
        if row["rates"]:
            row["steps_per_s"] = round(statistics.median(row["rates"]), 3)
    base = rows["fp32_eager"]
    for name, row in rows.items():
        if name != "fp32_eager":
            row["ratio_vs_fp32_eager"] = ratio(row, base)
    report["gradient_bytes"] = gradient_bytes(base_args)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: {kk: v.get(kk) for kk in ("steps_per_s", "ratio_vs_fp32_eager", "error") if kk in v}
                      for k, v in rows.items()}, indent=1))
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
