"""Overhead of genexp's training loop against a bare hand-written loop, in one process.

    python scripts/bench_loop_overhead.py [--steps 1200] [--chunk 25] [--demo]

Both loops train the same DCGAN (the demo's nets, non-saturating loss, EMA of G) on
the same digits batches from the same RNG state. The script first checks that they
end with bit-identical weights, so the timing compares equal work; then it times
them in alternating chunks (A B B A ...) and reports genexp / bare (goal <= 1.03).
With --demo it also runs the demo (`genexp train`, defaults) in a subprocess and
reports its wall time and peak memory (RSS).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import open_dict

from genexp.cli import conf_dir
from genexp.config.prepare import compose
from genexp.data import build_dataset
from genexp.data.loader import InfiniteLoader
from genexp.logger import Console, RunLogger
from genexp.methods import build_method
from genexp.methods.ema import update_ema
from genexp.training.loop import Trainer

REPO = Path(__file__).resolve().parents[1]


def config(steps: int):
    cfg = compose("train", ["logger=none", "metrics=[]", f"trainer.max_steps={steps}", "trainer.log_every=100",
                            "trainer.sample_every=0", "trainer.eval_every=0", "trainer.ckpt_every=0",
                            "trainer.progress=plain"], conf_dir())
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def genexp_loop(cfg, method, loader, run_dir: Path) -> float:
    console = Console("plain")
    console.info = lambda message: None  # the log lines are the same cost as a print; keep the output clean
    logger = RunLogger(run_dir, console)
    trainer = Trainer(cfg.trainer, method, loader, logger, console, run_dir)
    start = time.perf_counter()
    trainer.fit()
    elapsed = time.perf_counter() - start
    logger.close()
    return elapsed


def bare_loop(steps: int, G, D, G_ema, opt_g, opt_d, loader, z_dim: int, beta: float) -> float:
    """What a researcher would write by hand for the same training."""
    start = time.perf_counter()
    for _ in range(steps):
        real, _ = next(loader)
        with torch.no_grad():
            fake = G(torch.randn(len(real), z_dim))
        d_loss = F.softplus(-D(real)).mean() + F.softplus(D(fake)).mean()
        opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        opt_d.step()
        D.requires_grad_(False)
        g_loss = F.softplus(-D(G(torch.randn(len(real), z_dim)))).mean()
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        D.requires_grad_(True)
        update_ema(G_ema, G, beta)
    return time.perf_counter() - start


def check_same_work(cfg, template, dataset, tmp: Path) -> bool:
    """Both loops from the same state and RNG end with the same weights: they do the same work."""
    weights = []
    for loop in ("genexp", "bare"):
        method = copy.deepcopy(template)
        loader = InfiniteLoader(dataset, int(cfg.data.batch_size), seed=0)
        torch.manual_seed(1)
        if loop == "genexp":
            genexp_loop(cfg, method, loader, Path(tempfile.mkdtemp(dir=tmp)))
        else:
            bare_loop(int(cfg.trainer.max_steps), method.G, method.D, method.G_ema, method.optimizers["G"],
                      method.optimizers["D"], loader, method.z_dim, method.ema_beta)
        weights.append(method.G.state_dict())
    return all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def interleaved(cfg, template, dataset, steps: int, chunk: int, tmp: Path) -> tuple[list[float], list[float]]:
    """Chunks of ``chunk`` steps, alternating A B B A ...: slow drifts of a shared machine hit
    both loops alike, and each adjacent pair gives one ratio."""
    g_method, b_method = copy.deepcopy(template), copy.deepcopy(template)
    g_loader = InfiniteLoader(dataset, int(cfg.data.batch_size), seed=0)
    b_loader = InfiniteLoader(dataset, int(cfg.data.batch_size), seed=0)
    console = Console("plain")
    console.info = lambda message: None
    run_dir = Path(tempfile.mkdtemp(dir=tmp))
    logger = RunLogger(run_dir, console)
    trainer = Trainer(cfg.trainer, g_method, g_loader, logger, console, run_dir)
    g_times, b_times = [], []

    def genexp_chunk():
        trainer.cfg.max_steps = trainer.step + chunk
        start = time.perf_counter()
        trainer.fit()
        g_times.append(time.perf_counter() - start)

    def bare_chunk():
        b_times.append(bare_loop(chunk, b_method.G, b_method.D, b_method.G_ema, b_method.optimizers["G"],
                                 b_method.optimizers["D"], b_loader, b_method.z_dim, b_method.ema_beta))

    for i in range(steps // chunk):
        for run in ((genexp_chunk, bare_chunk) if i % 2 == 0 else (bare_chunk, genexp_chunk)):
            run()
    logger.close()
    return g_times, b_times


def demo_run() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "genexp", "train", "trainer.progress=plain",
                               f"hydra.run.dir={tmp}/demo"], env=env, capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"demo failed:\n{proc.stderr[-2000:]}")
        last = [json.loads(line) for line in Path(tmp, "demo", "metrics.jsonl").read_text().splitlines()][-1]
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"wall_s": round(wall, 1), "peak_rss_mib": round(peak_mib),
            "metrics": {k: round(v, 3) for k, v in last.items() if "/" in k and not k.startswith(("loss", "d/"))}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1200)
    ap.add_argument("--chunk", type=int, default=25)
    ap.add_argument("--demo", action="store_true", help="also time the demo run (about 3 minutes on 2 cores)")
    ap.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "loop_overhead.json")
    args = ap.parse_args()

    cfg = config(args.steps)
    dataset = build_dataset(cfg.data)
    torch.manual_seed(0)
    template = build_method(cfg, torch.device("cpu"))
    with tempfile.TemporaryDirectory() as tmp:
        same = check_same_work(config(20), template, dataset, Path(tmp))
        if not same:
            raise SystemExit("the two loops did not compute the same thing: the comparison would be void")
        interleaved(cfg, template, dataset, 2 * args.chunk, args.chunk, Path(tmp))  # warm-up
        g_times, b_times = interleaved(cfg, template, dataset, args.steps, args.chunk, Path(tmp))
    ratios = [g / b for g, b in zip(g_times, b_times)]
    result = {
        "steps": args.steps, "chunk": args.chunk, "threads": torch.get_num_threads(),
        "same_weights_after_20_steps": same,
        "genexp_ms_per_step": round(1000 * sum(g_times) / args.steps, 3),
        "bare_ms_per_step": round(1000 * sum(b_times) / args.steps, 3),
        "ratio_total": round(sum(g_times) / sum(b_times), 4),
        "ratio_median_of_chunks": round(statistics.median(ratios), 4),
        "ratio_chunks_p10_p90": [round(q, 4) for q in statistics.quantiles(ratios, n=10)[::8]],
        "goal": "<= 1.03",
    }
    if args.demo:
        result["demo"] = demo_run()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
