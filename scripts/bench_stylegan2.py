"""StyleGAN2 training-step time and peak memory, with torch.compile and channels_last on and off.

    python scripts/bench_stylegan2.py [--resolutions 32,64] [--batch 8] [--steps 6]

Each (resolution, variant) runs in a fresh process: genexp's own training step (non-saturating
loss, EMA; the eager+r1+pl row adds lazy R1 every 16 D steps and path length every 4 G steps, which
torch.compile cannot run: it has no double backward) on random images,
with the preset for that resolution (model=stylegan2_32: the official CIFAR layout; 64: cfg=auto).
It reports seconds per step (median over ``--steps`` after two warm-up steps; compile's warm-up is
its compile time, reported apart), images per second, and peak RSS, or peak CUDA memory on a GPU,
each against eager + contiguous in the same invocation (the bf16 row: compare it with eager+r1+pl).
Results go to the console and docs/bench/stylegan2.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# (compile, channels_last, config overrides). torch.compile cannot differentiate twice (aot_autograd
# has no double backward), so R1 and path length run in eager mode only: the compile comparison is
# on the main step, and one eager row adds the regularizers. bf16: the top 4 resolutions of G and D
# in bf16 autocast (the official num_fp16_res=4). ada: the bgc pipeline at a fixed p = 0.5.
REGULARIZED = ["+loss/reg=[r1,pl]"]
VARIANTS = {"eager": (False, False, []), "channels_last": (False, True, []), "compile": (True, False, []),
            "compile+channels_last": (True, True, []), "eager+r1+pl": (False, False, REGULARIZED),
            "bf16+r1+pl": (False, False, REGULARIZED + ["model.generator.bf16_res=4"]),
            "eager+ada": (False, False, ["model.method.ada.enabled=true", "model.method.ada.target=null",
                                         "model.method.ada.p=0.5"])}


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class RandomImages:
    """An endless batch source shaped like the data (labels for the conditional preset)."""

    def __init__(self, batch: int, resolution: int, num_classes: int, device: torch.device):
        self.batch, self.resolution, self.num_classes, self.device = batch, resolution, num_classes, device

    def __iter__(self):
        return self

    def __next__(self):
        x = torch.rand(self.batch, 3, self.resolution, self.resolution, device=self.device) * 2 - 1
        y = torch.randint(self.num_classes, (self.batch,), device=self.device) if self.num_classes else None
        return x, y


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """Peak CUDA memory allocated on a GPU, else this process's peak RSS (MiB, and what it is)."""
    if device.type == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1), "cuda max allocated"
    return round(peak_rss_mib(), 1), "peak RSS"


def timed_steps(method, batches, device: torch.device, warmup: int, steps: int, cycle: int = 1,
                budget_s: float | None = None, after_warmup=None, progress=None) -> dict:
    """``warmup`` training steps, then up to ``steps`` timed ones (each synchronised on a GPU). With
    ``cycle`` > 1 the timed steps stop only at a whole number of cycles (lazy regularizers: every phase
    due as often as in training) and, past the first cycle, once ``budget_s`` seconds are spent.
    ``after_warmup``: called between the two; ``progress``: called with the figures so far after each
    timed step. Returns the warm-up time, the number of timed steps, their median and their mean."""
    def one(step: int) -> float:
        t = time.perf_counter()
        method.train_step(batches, step)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    def figures(times: list[float]) -> dict:
        return {"warmup_s": round(sum(warm), 2), "steps_timed": len(times),
                "s_per_step": statistics.median(times), "s_per_step_mean": sum(times) / len(times)}

    warm = [one(step) for step in range(warmup)]
    if after_warmup is not None:
        after_warmup()
    times: list[float] = []
    while len(times) < steps:
        times.append(one(warmup + len(times)))
        if progress is not None:
            progress(figures(times))
        if budget_s is not None and len(times) % cycle == 0 and sum(times) >= budget_s:
            break
    return figures(times[:max(cycle, len(times) - len(times) % cycle)] if cycle > 1 else times)


def last_json(text: str | bytes | None) -> dict | None:
    """The last line of ``text`` that is a JSON object, or None."""
    text = text.decode(errors="replace") if isinstance(text, bytes) else (text or "")
    for line in reversed(text.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def run_child(argv: list[str], timeout: float | None = None) -> dict:
    """``python argv...`` in a fresh process whose last stdout line is a JSON object: that object, or
    {"error": one line} when it fails or runs past ``timeout`` seconds, added to the last JSON line it
    printed, if any (a child's figures so far)."""
    try:
        proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env={**os.environ},
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return {**(last_json(exc.stdout) or {}), "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {**(last_json(proc.stdout) or {}), "error": (proc.stderr.strip().splitlines() or ["?"])[-1][:200]}
    return last_json(proc.stdout) or {"error": "no JSON line in the output"}


def child(resolution: int, variant: str, batch: int, steps: int) -> dict:
    from omegaconf import open_dict

    from genexp.cli import conf_dir
    from genexp.config.prepare import compose
    from genexp.methods import build_method

    compiled, channels_last, overrides = VARIANTS[variant]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = compose("train", [f"model=stylegan2_{resolution}", "data=images", "data.path=unused",
                            f"data.resolution={resolution}", "optim.betas=[0,0.99]", "optim.lr=0.0025",
                            "metrics=[]", *overrides], conf_dir())
    with open_dict(cfg):
        cfg.model.discriminator.mbstd_group = min(4, batch)
    torch.manual_seed(0)
    method = build_method(cfg, device)
    if channels_last:
        method.G.to(memory_format=torch.channels_last)
        method.D.to(memory_format=torch.channels_last)
    if compiled:
        method.G.synthesis = torch.compile(method.G.synthesis)
        method.D = torch.compile(method.D)
    batches = RandomImages(batch, resolution, 0, device)
    start = time.perf_counter()
    timed = timed_steps(method, batches, device, 2, steps)
    per_step = timed["s_per_step"]
    peak, memory = peak_memory_mib(device)
    return {"resolution": resolution, "variant": variant, "device": device.type, "batch": batch,
            "params_G": sum(p.numel() for p in method.G.parameters()),
            "params_D": sum(p.numel() for p in method.D.parameters()),
            "warmup_s": timed["warmup_s"], "s_per_step": round(per_step, 4),
            "images_per_s": round(batch / per_step, 2), "s_per_kimg": round(1000 * per_step / batch, 1),
            "total_s": round(time.perf_counter() - start, 1),
            "peak_mib": peak, "memory": memory}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        res, variant, batch, steps = sys.argv[2:6]
        print(json.dumps(child(int(res), variant, int(batch), int(steps))))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", default="32,64")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--cpu-bf16", action="store_true", help="also time the bf16 row on a CPU (very slow)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "stylegan2.json")
    args = parser.parse_args()
    rows = []
    for res in [int(r) for r in args.resolutions.split(",")]:
        base = None
        for variant in args.variants.split(","):
            if variant.startswith("bf16") and not torch.cuda.is_available() and not args.cpu_bf16:
                # Measured on the 2-core CPU: 6 bf16 steps did not finish in 18 minutes (fp32: 4.6 s/step).
                print(f"  {res}px {variant:22s} skipped: bf16 is for GPUs (--cpu-bf16 runs it anyway)", flush=True)
                continue
            row = run_child([__file__, "--child", str(res), variant, str(args.batch), str(args.steps)])
            if "error" in row:
                print(f"  {res}px {variant:22s} failed: {row['error']}", flush=True)
                rows.append({"resolution": res, "variant": variant, "error": row["error"]})
                continue
            base = base or row
            row["time_vs_eager"] = round(row["s_per_step"] / base["s_per_step"], 3)
            row["memory_vs_eager"] = round(row["peak_mib"] / base["peak_mib"], 3)
            rows.append(row)
            print(f"  {res}px {variant:22s} {row['s_per_step']:.3f} s/step ({row['images_per_s']:.1f} img/s, "
                  f"{row['time_vs_eager']:.3f}x eager), {row['memory']} {row['peak_mib']:.0f} MiB "
                  f"({row['memory_vs_eager']:.3f}x), warm-up {row['warmup_s']:.1f}s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows},
                                   indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
