"""The GPU check (issue 14.6): StyleGAN2 256² s/kimg, Inception FID throughput, `make demo`, on one CUDA GPU.

    scripts/gpu_check.sh                 # one CUDA GPU: under 8 minutes on an H200 -> docs/bench/gpu.json
    scripts/gpu_check.sh --cpu-smoke     # every part at tiny sizes on the CPU -> a temp file

1. StyleGAN2 training throughput with genexp's own training step (scripts/bench_stylegan2.py's
   machinery, one fresh process per variant) on random images, with the paper256 pack
   (experiment=stylegan2_ffhq256: lazy R1 every 16 iterations, path length every 4, style mixing,
   the official phase order), batch 32: fp32 (bf16_res=0); bf16_res=4 (the pack's own, the official
   table's mixed precision); trainer.channels_last=true; trainer.compile=true. The pack regularizes
   both nets, so trainer.compile compiles nothing there (Method.compile_targets leaves out nets a
   double backward goes through); the compile row then compiles G's forward and D for the phases
   that allow it (Dmain, Gmain and the fakes), while R1 takes D's eager forward and path length
   G's eager mapping and synthesis. s/kimg is the mean over whole 16-iteration cycles (every phase
   as often as in training) after a warm-up; compile's warm-up (its compile time) is reported apart.
   Beside it: the official 256², 1-GPU figures (A100 12.53, V100 20.84 s/kimg).
2. Inception FID feature extraction, images/s over 10k samples at 256², at the metric suite's batch
   size: random weights (that machine cannot download them), so throughput only, no FID value.
3. `make demo` with a time limit: wall time, exit status and the FID / IS lines it prints.

Every figure is written to the JSON with its settings as soon as it is measured (a timeout still
leaves the figures before it); a summary table ends the run. Without a CUDA device it refuses in
one line (exit 2) unless --cpu-smoke is given.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_stylegan2 import RandomImages, peak_memory_mib, run_child, timed_steps  # noqa: E402

DEFAULT_OUT = REPO / "docs" / "bench" / "gpu.json"
SMOKE_OUT = Path(tempfile.gettempdir()) / "genexp-gpu-smoke.json"
# stylegan2-ada-pytorch's README, "Expected training time", 256², 1 GPU: s/kimg at its batch for that
# table (mixed precision on the top 4 resolutions, its custom CUDA ops).
REFERENCE = {"A100": 12.53, "V100": 20.84, "resolution": 256, "gpus": 1,
             "source": "stylegan2-ada-pytorch README, expected training time (num_fp16_res=4, custom CUDA ops)"}
FP32 = ["model.generator.bf16_res=0"]
# name: (config overrides on top of the pack, compile the phases that allow it)
VARIANTS = {"fp32": (FP32, False), "bf16_res=4": (["model.generator.bf16_res=4"], False),
            "channels_last": (FP32 + ["trainer.channels_last=true"], False),
            "compile": (FP32 + ["trainer.compile=true"], True)}
CYCLE = 16  # R1 every 16 iterations, path length every 4: 16 iterations run every phase as in training


def settings(smoke: bool) -> dict:
    """Sizes and limits of each part (seconds: caps; the whole run stays under ``deadline_s``)."""
    if smoke:
        return {"deadline_s": 300, "stylegan2": {
            "resolution": 16, "batch": 2, "warmup": 1, "steps": 2, "cycle": 1, "budget_s": None,
            "extra": ["model.channel_base=128", "model.channel_max=16"], "compile_backend": "eager",
            "cap_s": 90, "compile_cap_s": 120},
            "inception": {"samples": 8, "batch": 4, "resolution": 16, "cap_s": 90}, "demo": None}
    return {"deadline_s": 450, "stylegan2": {
        "resolution": 256, "batch": 32, "warmup": 4, "steps": 4 * CYCLE, "cycle": CYCLE, "budget_s": 25.0,
        "extra": [], "compile_backend": "inductor", "cap_s": 80, "compile_cap_s": 240},
        "inception": {"samples": 10_000, "batch": None, "resolution": 256, "cap_s": 60}, "demo": {"cap_s": 150}}


# ---------------------------------------------------------------------------------------------- children


class Batches(RandomImages):
    """Random images, in channels_last order once trainer.channels_last asks the loader for it."""

    channels_last = False

    def __next__(self):
        x, y = super().__next__()
        return (x.contiguous(memory_format=torch.channels_last) if self.channels_last else x), y


class EagerD:
    """A D regularizer given D's eager forward: a compiled D cannot be differentiated twice (R1)."""

    def __init__(self, reg, D):
        self.reg, self.D = reg, D

    def __getattr__(self, name):
        return getattr(self.__dict__["reg"], name)

    def __call__(self, D, *args, **kwargs):
        return self.reg(self.D.forward, *args, **kwargs)


class Note:
    """The console speed_options reports to (stderr: the child's stdout carries its JSON line)."""

    @staticmethod
    def info(msg: str) -> None:
        print(msg, file=sys.stderr)

    note = info


def compile_main_phases(method, backend: str) -> dict[str, str]:
    """Compile in place (state_dict keys kept) what trainer.compile left eager because of its
    regularizers, for the phases that can take it: G's forward (Gmain and D's fakes; path length calls
    G.styles and G.synthesis, eager) and D (Dmain, Gmain; R1 through D's eager forward)."""
    done = {}
    if method.g_regularizers and "G" not in method.compile_targets():
        method.G.compile(backend=backend)
        done["G"] = "G.forward (Gmain, the fakes of Dmain); path length eager"
    if method.d_regularizers and "D" not in method.compile_targets():
        method.D.compile(backend=backend)
        for name, reg in list(method.d_regularizers.items()):
            method.d_regularizers[name] = EagerD(reg, method.D)
        done["D"] = f"D (Dmain, Gmain); {', '.join(method.d_regularizers)} eager"
    return done


def counters_now() -> int:
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def stylegan2_child(spec: dict, emit=None) -> dict:
    """One variant's figures; ``emit`` gets the figures so far after every timed step."""
    from omegaconf import open_dict

    from genexp.cli import conf_dir
    from genexp.commands.train import speed_options
    from genexp.config.prepare import compose
    from genexp.methods import build_method
    from genexp.training.runtime import seed_everything

    res, batch = spec["resolution"], spec["batch"]
    overrides, compiled = VARIANTS[spec["variant"]]
    device = torch.device(spec["device"])
    cfg = compose("train", ["experiment=stylegan2_ffhq256", "data.path=unused", f"data.resolution={res}",
                            f"data.batch_size={batch}", "metrics=[]", *spec["extra"], *overrides], conf_dir())
    with open_dict(cfg):
        cfg.model.discriminator.mbstd_group = min(int(cfg.model.discriminator.mbstd_group), batch)
    seed_everything(0, bool(cfg.trainer.deterministic))  # as genexp train sets the backends
    method = build_method(cfg, device)
    batches = Batches(batch, res, 0, device)
    speed_options(cfg.trainer, method, batches, Note)
    row = {"variant": spec["variant"], "overrides": overrides,
           "trainer_compile_targets": method.compile_targets() if cfg.trainer.get("compile") else None}
    if compiled:
        row["compiled"] = compile_main_phases(method, spec["compile_backend"])
        row["compile_backend"] = spec["compile_backend"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    graphs = {}
    if compiled:  # graphs compiled after the warm-up (recompilations) would be in the timed steps

        def count(key: str) -> None:
            from torch._dynamo.utils import counters

            graphs[key] = int(counters["stats"]["unique_graphs"])

        count("warmup")
    params = {"params_G": sum(p.numel() for p in method.G.parameters()),
              "params_D": sum(p.numel() for p in method.D.parameters())}

    def figures(timed: dict, partial: bool = False) -> dict:
        mean = timed["s_per_step_mean"]
        peak, memory = peak_memory_mib(device)
        out = {**row, "device": device.type, "resolution": res, "batch": batch, "warmup_steps": spec["warmup"],
               "warmup_s": timed["warmup_s"], "steps_timed": timed["steps_timed"],
               "s_per_step_mean": round(mean, 4), "s_per_step_median": round(timed["s_per_step"], 4),
               "s_per_kimg": round(1000 * mean / batch, 2), "images_per_s": round(batch / mean, 1),
               "peak_mib": peak, "memory": memory, "deterministic": bool(cfg.trainer.deterministic), **params}
        if compiled:
            out["graphs_compiled"] = {"in_warmup": graphs["timed"] - graphs["warmup"],
                                      "in_timed_steps": counters_now() - graphs["timed"]}
        return {**out, "partial": "figures so far: the timed steps did not end"} if partial else out

    timed = timed_steps(method, batches, device, spec["warmup"], spec["steps"], spec["cycle"], spec["budget_s"],
                        after_warmup=(lambda: count("timed")) if compiled else None,
                        progress=(lambda t: emit(figures(t, partial=True))) if emit else None)
    return figures(timed)


def inception_child(spec: dict) -> dict:
    from genexp.metrics.inception import FIDInceptionV3, InceptionFeatures

    device = torch.device(spec["device"])
    torch.manual_seed(0)
    net = InceptionFeatures(FIDInceptionV3(), "features", "tf1_bilinear").to(device)
    res, n, batch = spec["resolution"], spec["samples"], spec["batch"]
    # Two fixed batches of fakes, taken in turn: the time is the extractor's (quantise, resize, net).
    pool = [torch.rand(batch, 3, res, res, device=device) * 2 - 1 for _ in range(2)]

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    t = time.perf_counter()
    dims = net(pool[0]).shape[1]
    sync()
    warmup = time.perf_counter() - t
    t = time.perf_counter()
    for i, start in enumerate(range(0, n, batch)):
        net(pool[i % 2][:min(batch, n - start)])
    sync()
    seconds = time.perf_counter() - t
    peak, memory = peak_memory_mib(device)
    return {"device": device.type, "samples": n, "batch": batch, "resolution": res, "features": int(dims),
            "warmup_s": round(warmup, 2), "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 1),
            "peak_mib": peak, "memory": memory}


# ---------------------------------------------------------------------------------------------- parent


def refuse_without_cuda() -> str | None:
    """The one line to stop with when no CUDA device is there, else None."""
    if torch.cuda.is_available():
        return None
    return (f"gpu_check: no CUDA device (torch {torch.__version__} sees none): run it on a machine with "
            "one GPU, or give --cpu-smoke for the tiny CPU run")


def write_json(path: Path, data: dict) -> None:
    """Write atomically: a reader (or a timeout) never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def machine(device: str) -> dict:
    cpu = f"CPU ({platform.processor() or platform.machine()})"
    return {"device": torch.cuda.get_device_name(0) if device == "cuda" else cpu,
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
            "matmul_precision": torch.get_float32_matmul_precision()}


def metric_lines(text: str) -> list[str]:
    """The demo's lines that report FID / IS / KID values."""
    pattern = re.compile(r"\b(fid|is|kid)[/_ @:=]", re.IGNORECASE)
    return [line.strip() for line in text.splitlines() if pattern.search(line) and re.search(r"\d", line)][-12:]


def run_demo(limit: float, make_args: list[str]) -> dict:
    """`make demo` in its own process group, killed whole at ``limit`` seconds."""
    cmd = ["make", "demo", *make_args]
    t = time.perf_counter()
    try:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    except OSError as exc:  # no make on the machine
        return {"command": " ".join(cmd), "limit_s": round(limit), "wall_s": 0.0, "rc": None, "timed_out": False,
                "metric_lines": [], "error": str(exc)[:200]}
    try:
        out, _ = proc.communicate(timeout=limit)
        rc, timed_out = proc.returncode, False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        rc, timed_out = None, True
    wall = time.perf_counter() - t
    tail = [line for line in out.splitlines() if line.strip()][-3:]
    return {"command": " ".join(cmd), "limit_s": round(limit), "wall_s": round(wall, 1), "rc": rc,
            "timed_out": timed_out, "metric_lines": metric_lines(out), "last_lines": tail}


def summary(result: dict) -> str:
    rows = [("part", "figure", "settings")]
    sg = result.get("stylegan2", {})
    for row in sg.get("rows", []):
        what = f"StyleGAN2 {row.get('variant')}"
        if "s_per_kimg" not in row:
            rows.append((what, "failed", str(row.get("error"))[:70]))
            continue
        ratio = f" ({row['time_vs_fp32']:.2f}x fp32)" if "time_vs_fp32" in row else ""
        extra = f", compile warm-up {row['warmup_s']:.0f} s" if row.get("compiled") is not None else ""
        extra += f"; partial: {row['error']}" if "error" in row else ""
        rows.append((what, f"{row['s_per_kimg']:.2f} s/kimg{ratio}",
                     f"{row['resolution']}², batch {row['batch']}, {row['steps_timed']} steps, "
                     f"{row['peak_mib']:.0f} MiB{extra}"))
    if sg:
        ref = sg["reference_s_per_kimg"]
        rows.append(("StyleGAN2 official", f"A100 {ref['A100']} / V100 {ref['V100']} s/kimg", "256², 1 GPU"))
    inc = result.get("inception")
    if inc:
        rows.append(("Inception FID", "failed" if "error" in inc else f"{inc['images_per_s']:.4g} images/s",
                     inc.get("error", f"{inc.get('samples')} samples, batch {inc.get('batch')}, random weights")[:70]))
    demo = result.get("demo")
    if demo:
        state = "timed out" if demo.get("timed_out") else f"exit {demo.get('rc')}"
        rows.append(("make demo", f"{demo['wall_s']:.0f} s ({state})", "; ".join(demo["metric_lines"][-2:])[:70]))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="every part at tiny sizes on the CPU, no make demo")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the JSON (default {DEFAULT_OUT.relative_to(REPO)}; --cpu-smoke: {SMOKE_OUT})")
    parser.add_argument("--parts", default="stylegan2,inception,demo")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--deadline-s", type=float, default=None, help="the whole run's time limit")
    parser.add_argument("--make-arg", action="append", default=[], help="passed to `make demo` (e.g. VENV=...)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.out = args.out or (SMOKE_OUT if args.cpu_smoke else DEFAULT_OUT)
    unknown = [v for v in args.variants.split(",") if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant {unknown[0]}: use {', '.join(VARIANTS)}")
    unknown = [p for p in args.parts.split(",") if p not in ("stylegan2", "inception", "demo")]
    if unknown:
        parser.error(f"unknown part {unknown[0]}: use stylegan2, inception, demo")
    if args.cpu_smoke and args.out.resolve() == DEFAULT_OUT.resolve():
        parser.error(f"--cpu-smoke does not write {DEFAULT_OUT.relative_to(REPO)}: that file holds GPU figures")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)  # a list of StyleGAN2 variants (one process for all), or Inception's
        if isinstance(spec, list):
            rows: list[dict] = []  # every line printed holds the rows so far: a timeout still leaves them

            def emit(partial: dict) -> None:
                print(json.dumps({"rows": [*rows, partial]}), flush=True)

            for one in spec:
                rows.append(stylegan2_child(one, emit))
                print(json.dumps({"rows": rows}), flush=True)
        else:
            print(json.dumps(inception_child(spec)))
        return 0
    line = None if args.cpu_smoke else refuse_without_cuda()
    if line:
        print(line, file=sys.stderr)
        return 2
    from genexp.metrics.suite import MetricSuite

    device = "cpu" if args.cpu_smoke else "cuda"
    if args.cpu_smoke:  # one thread per child: 2 threads on a shared, loaded CPU spin (15x slower steps)
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    plan = settings(args.cpu_smoke)
    start = time.perf_counter()
    deadline = args.deadline_s or plan["deadline_s"]

    def left() -> float:
        return deadline - (time.perf_counter() - start)

    result = {"mode": "cpu-smoke" if args.cpu_smoke else "gpu", "complete": False,
              "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": machine(device), "command": " ".join(["scripts/bench_gpu.py", *(argv or sys.argv[1:])]),
              "deadline_s": deadline}
    write_json(args.out, result)
    parts = args.parts.split(",")
    me = str(Path(__file__).resolve())

    if "inception" in parts:  # the short parts first: the compile row takes what is left
        inc = plan["inception"]
        suite_batch = inspect.signature(MetricSuite.__init__).parameters["batch_size"].default
        batch = inc["batch"] or suite_batch
        spec = {"device": device, "samples": inc["samples"], "resolution": inc["resolution"],
                "batch": batch}
        print(f"Inception FID features: {inc['samples']} samples at {inc['resolution']}², batch {batch} ...",
              flush=True)
        row = run_child([me, "--child", json.dumps(spec)], timeout=max(1.0, min(inc["cap_s"], left())))
        result["inception"] = {**row, "weights": "random (FIDInceptionV3's own init; no weight file can be downloaded "
                                                 "there): throughput only, no FID value",
                               "settings": {k: spec[k] for k in ("samples", "resolution", "batch")},
                               "batch_from": f"MetricSuite's batch_size default, {suite_batch} (what genexp eval "
                                             f"and train use)" if batch == suite_batch else "--cpu-smoke's own",
                               "timed": "quantise to uint8, resize to 299 (tf1_bilinear), pool features; images "
                                        "already on the device"}
        print(f"  {row.get('images_per_s', row.get('error'))} images/s", flush=True)
        write_json(args.out, result)

    if "demo" in parts and plan["demo"]:
        limit = max(1.0, min(plan["demo"]["cap_s"], left() - 120))  # keep time for the StyleGAN2 rows
        print(f"make demo (limit {limit:.0f} s) ...", flush=True)
        result["demo"] = run_demo(limit, args.make_arg)
        print(f"  {result['demo']['wall_s']} s, exit {result['demo']['rc']}", flush=True)
        for text in result["demo"]["metric_lines"]:
            print(f"    {text}")
        write_json(args.out, result)
    elif "demo" in parts:
        result["demo_skipped"] = "--cpu-smoke runs no make demo"

    if "stylegan2" in parts:
        sg = plan["stylegan2"]
        result["stylegan2"] = {
            "reference_s_per_kimg": REFERENCE,
            "settings": {"config": "experiment=stylegan2_ffhq256 (paper256: R1 gamma 1 every 16, path length "
                                   "every 4 on half the batch, style mixing 0.9, phases Gmain Greg Dmain Dreg)",
                         "data": "random images on the device (no loader, no disk)",
                         **{k: sg[k] for k in ("resolution", "batch", "warmup", "steps", "cycle", "budget_s",
                                               "extra")},
                         "s_per_kimg": "1000 x mean s/iteration / batch over whole cycles after the warm-up",
                         "compile": "trainer.compile=true, then G.forward and D compiled for the phases that "
                                    "allow it (R1 and path length eager)"},
            "rows": []}
        variants = args.variants.split(",")
        # A process per variant (its own peak memory); --cpu-smoke: one for all (imports cost most there).
        groups = [variants] if args.cpu_smoke else [[v] for v in variants]
        for i, group in enumerate(groups):
            cap = sum(sg["compile_cap_s"] if VARIANTS[v][1] else sg["cap_s"] for v in group)
            later = len(groups) - i - 1  # leave the later rows a chance: 45 s each, or an equal share
            timeout = max(1.0, min(cap, max(left() - 45 * later, left() / (1 + later))))
            specs = [{"device": device, "variant": v, **{k: sg[k] for k in (
                "resolution", "batch", "warmup", "steps", "cycle", "budget_s", "extra", "compile_backend")}}
                for v in group]
            print(f"StyleGAN2 {sg['resolution']}² batch {sg['batch']} {', '.join(group)} (limit {timeout:.0f} s) ...",
                  flush=True)
            out = run_child([me, "--child", json.dumps(specs)], timeout=timeout)
            found = {row["variant"]: row for row in out.get("rows", [])}
            for variant in group:  # a timeout: its error on the row it stopped in, and on those not begun
                row = found.get(variant) or {"variant": variant, "error": out.get("error", "not run")}
                if "error" in out and (row.get("partial") or variant not in found):
                    row["error"] = out["error"]
                rows = result["stylegan2"]["rows"]
                base = rows[0] if rows else None
                if "error" not in row and variant == "fp32":
                    row["time_vs_fp32"] = row["memory_vs_fp32"] = 1.0
                elif "error" not in row and base and "error" not in base and base["variant"] == "fp32":
                    row["time_vs_fp32"] = round(row["s_per_kimg"] / base["s_per_kimg"], 3)
                    row["memory_vs_fp32"] = round(row["peak_mib"] / base["peak_mib"], 3)
                rows.append(row)
                print(f"  {variant}: {row.get('s_per_kimg', row.get('error'))} s/kimg"
                      + (f", warm-up {row['warmup_s']} s" if "warmup_s" in row else ""), flush=True)
            write_json(args.out, result)
        if args.cpu_smoke:
            result["stylegan2"]["note"] = "--cpu-smoke: every variant in one process (peak RSS cumulative)"

    result["complete"] = True
    result["wall_s"] = round(time.perf_counter() - start, 1)
    write_json(args.out, result)
    print()
    print(summary(result))
    print(f"wrote {args.out} ({result['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
