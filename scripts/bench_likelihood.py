"""The digits likelihood table: test NLL in nats per image on data=digits8 (Tomczak's protocol).

    python scripts/bench_likelihood.py [--seeds 3] [--models vae,made,pixelcnn,realnvp,glow] [--steps-scale 1]

Protocol (Tomczak, Deep Generative Modeling, code for the book): scikit-learn's 8x8 digits, the 17
intensity levels kept, train = the first 1,000 images, val = the next 350, test = the last 447. Each
model trains with `genexp train` on train (its pack or config below, chosen on val), then
`genexp eval metrics=[nll]` scores test. Baselines anyone can compute come first: the uniform
distribution over 17 levels and independent per-pixel categoricals fitted on train (add-one
smoothing). Results: the console, docs/likelihood.md and docs/bench/likelihood.jsonl.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

# model -> (train overrides, the nll key reported, note). Each is the configuration its helper chose on val.
MODELS: dict[str, tuple[list[str], str, str]] = {
    "vae": (["experiment=digits8_vae"], "iwae", "MLP VAE, categorical decoder, 16 latents; IWAE k=1000 (ELBO beside)"),
    "pixelcnn": (["experiment=digits8_pixelcnn"], "exact", "gated PixelCNN, hidden 24, 6 layers (0.07M parameters)"),
    "made": (["experiment=digits8_made"], "exact", "MADE, 8 random orderings, level inputs, dropout 0.3"),
    "realnvp": (["model=realnvp", "data=digits8", "trainer.max_steps=1000", "trainer.sample_every=0",
                 "trainer.ckpt_every=1000"], "exact", "RealNVP, 2 scales, uniform dequantisation (an upper bound)"),
    "glow": (["model=glow", "data=digits8", "trainer.max_steps=1000", "trainer.sample_every=0",
              "trainer.ckpt_every=1000"], "exact", "Glow, 4 steps per scale, logit input, uniform dequantisation"),
}
PUBLISHED = {"uniform": 181.3, "independent": 106.4, "vae": 100.5, "pixelcnn": 88.7, "made": 88.7,
             "realnvp": 124.0, "glow": 124.0}


def baselines() -> dict[str, float]:
    from sklearn.datasets import load_digits

    data = load_digits().data.astype(int)
    train, test = data[:1000], data[1350:]
    counts = np.stack([np.bincount(train[:, j], minlength=17) for j in range(64)]) + 1.0  # add-one smoothing
    p = counts / counts.sum(1, keepdims=True)
    independent = float(-np.log(p[np.arange(64), test]).sum(1).mean())
    return {"uniform": 64 * math.log(17), "independent": independent}


def genexp(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    return subprocess.run([sys.executable, "-m", "genexp", *args], cwd=REPO, capture_output=True, text=True, env=env)


def run_model(name: str, seed: int, scale: float, work: Path) -> dict:
    overrides, key, _ = MODELS[name]
    run_dir, eval_dir = work / f"{name}-{seed}", work / f"{name}-{seed}-eval"
    extra = []
    if scale != 1:
        from genexp.cli import conf_dir
        from genexp.config.prepare import compose

        steps = int(compose("train", overrides, conf_dir()).trainer.max_steps)
        extra = [f"trainer.max_steps={max(1, int(steps * scale))}"]
    start = time.perf_counter()
    res = genexp("train", *overrides, *extra, f"trainer.seed={seed}", "logger=none", "trainer.progress=plain",
                 "metrics=[]", "trainer.eval_every=0", f"hydra.run.dir={run_dir}")
    if res.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} train failed: {res.stderr.strip()[-400:]}")
    train_s = time.perf_counter() - start
    res = genexp("eval", f"ckpt={run_dir / 'checkpoints/last.pt'}", "metrics=[nll]", f"hydra.run.dir={eval_dir}")
    if res.returncode != 0:
        raise RuntimeError(f"{name} seed {seed} eval failed: {res.stderr.strip()[-400:]}")
    metrics = json.loads((eval_dir / "metrics.json").read_text())["metrics"]
    return {"model": name, "seed": seed, "nll": metrics[f"nll/{key}@test"], "key": key, "train_s": round(train_s, 1),
            "all": {k: v for k, v in metrics.items() if k.startswith("nll/")}, "overrides": overrides + extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--steps-scale", type=float, default=1.0, help="fraction of each config's steps (quick look)")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    rows = [{"model": k, "seed": None, "nll": v, "key": "exact"} for k, v in baselines().items()]
    for name, value in baselines().items():
        print(f"  {name:12s} {value:7.2f} nats (published {PUBLISHED[name]})", flush=True)
    with tempfile.TemporaryDirectory(prefix="genexp-likelihood-") as tmp:
        for name in args.models.split(","):
            for seed in range(args.seeds):
                row = run_model(name, seed, args.steps_scale, Path(tmp))
                rows.append(row)
                print(f"  {name:12s} seed {seed}: {row['nll']:.2f} nats ({row['key']}, {row['train_s']:.0f}s)",
                      flush=True)
    (args.out / "bench").mkdir(parents=True, exist_ok=True)
    with open(args.out / "bench" / "likelihood.jsonl", "w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    lines = ["# Digits likelihood table", "",
             "Test NLL in nats per 8x8 image (447 test images, 17 levels; lower is better), Tomczak's split.",
             f"Command: `python scripts/bench_likelihood.py --seeds {args.seeds}"
             + (f" --steps-scale {args.steps_scale}" if args.steps_scale != 1 else "") + "`", "",
             "| model | test NLL (nats) | bits/dim | nll key | published (Tomczak) | configuration |",
             "|---|---|---|---|---|---|"]
    for name in ["uniform", "independent", *args.models.split(",")]:
        values = [r["nll"] for r in rows if r["model"] == name]
        if not values:
            continue
        mean = statistics.mean(values)
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        note = MODELS[name][2] if name in MODELS else ("log 17 per pixel" if name == "uniform" else
                                                       "per-pixel categoricals fitted on train, add-one smoothing")
        key = MODELS[name][1] if name in MODELS else "exact"
        lines.append(f"| {name} | {mean:.2f}{spread} | {mean / (64 * math.log(2)):.3f} | {key} | "
                     f"{PUBLISHED.get(name, '')} | {note} |")
    (args.out / "likelihood.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
