"""Metric benchmarks: extractor throughput, time and peak memory of each metric's own stage at 10k and
50k samples, blocked against unblocked k-NN distances, and the reference cache.

    python scripts/bench_metrics.py            # CPU: about 5 minutes on 2 cores; a GPU adds 2,048-d rows
    python scripts/bench_metrics.py --quick    # 2k and 10k samples, shorter timing windows (~2 minutes)
    python scripts/bench_metrics.py --full     # also PR/DC at 50k on the CPU (10-15 more minutes on 2 cores)

1. Images per second through each extractor (digits_lenet, mnist_lenet, Inception-v3 at 299 px), on the
   CPU and on CUDA when there is one: the feature pass that every metric on that extractor shares
   (metrics/featured.py). Inception uses the real FID weights when torch hub's cache has them, else a file
   of random values with the same keys (same cost, meaningless features).
2. The metric stage alone: FID, KID, and precision/recall/density/coverage (one k-NN pass, k = 3 / 5) on
   synthetic Gaussian features of an extractor's width (128: digits_lenet and mnist_lenet; 2,048:
   Inception, on a GPU or with --dims 128,2048), streamed in batches of 1,000 as the suite feeds them, each
   configuration in a fresh process: wall time and peak memory (CPU: peak RSS above the process's RSS
   before the metric, /proc/self/status VmHWM after resetting it; resource.getrusage's ru_maxrss where
   that reset is missing; GPU: torch.cuda.max_memory_allocated). PR/DC runs twice: in distance blocks
   (genexp's default, memory O(block x n)) and unblocked (one n x n matrix, as before blocking), with the
   ratios; an unblocked run that would not fit in memory is reported, not run.
3. Reference-statistics cache: the same MNIST evaluation (10k real, 10k fake, mnist_lenet FID) with an
   empty cache, then with the cache the first run wrote.
4. (--eval-rss) Peak RSS of a whole `MetricSuite.compute` at 1k / 5k / 20k, as genexp eval runs it
   (fixed mmap threshold, metrics/heap.py) and with glibc's default allocator settings.

Results go to the console (a table) and to docs/bench/metrics.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genexp.metrics.extractors import build_extractor  # noqa: E402
from genexp.metrics.suite import MetricSuite  # noqa: E402

DIGITS = OmegaConf.create({"name": "digits", "kind": "image", "resolution": 16, "channels": 1})


def inception_weights(tmp: Path) -> tuple[str, str]:
    from genexp.metrics import inception

    real = inception.default_weights_path()
    if real.is_file():
        return str(real), "real FID weights"
    net = inception.FIDInceptionV3()
    state = {k: (v.abs() + 1 if k.endswith("running_var") else v) for k, v in net.state_dict().items()}
    path = tmp / "random_inception.pth"
    torch.save(state, path)
    return str(path), "random weights (same cost)"


def throughput(device: torch.device, tmp: Path, seconds: float = 5.0) -> list[dict]:
    rows = []
    weights, note = inception_weights(tmp)
    for name, size, batch, w in (("digits_lenet", 16, 250, None), ("mnist_lenet", 28, 250, None),
                                 ("inception", 32, 8 if device.type == "cpu" else 200, weights)):
        net, _ = build_extractor(name, "features", weights=w)
        net = net.to(device)
        x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
        net(x)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < batch:
            net(x)
            done += batch
        if device.type == "cuda":
            torch.cuda.synchronize()
        rate = done / (time.perf_counter() - start)
        rows.append({"extractor": name, "device": device.type, "input": f"{size}px", "batch": batch,
                     "images_per_s": round(rate, 1), **({"weights": note} if name == "inception" else {})})
        print(f"  {name:13s} {device.type}: {rate:9.1f} images/s (batch {batch}, {size}px in)", flush=True)
    return rows


def rss_child(count: int, kinds: str, heap: str) -> None:
    """One evaluation of ``count`` fakes; prints the peak RSS of this process (MiB)."""
    from genexp.data.digits import DigitsDataset
    from genexp.metrics.heap import fix_mmap_threshold

    if heap == "fixed":  # as genexp eval runs
        fix_mmap_threshold()
    torch.set_num_threads(1)
    metrics = {"fid": {"kind": "fid", "num_samples": count, "extractor": "digits_lenet"},
               "kid": {"kind": "kid", "num_samples": count, "subsets": 10, "subset_size": 500,
                       "extractor": "digits_lenet"},
               "pr": {"kind": "pr", "num_samples": count, "k": 3, "extractor": "digits_lenet"}}
    chosen = {k: v for k, v in metrics.items() if k in kinds.split(",")}
    suite = MetricSuite(OmegaConf.create(chosen), DigitsDataset(resolution=16), DIGITS, torch.device("cpu"),
                        print, cache_dir=None)
    suite.compute(lambda n, g: torch.rand(n, 1, 16, 16, generator=g) * 2 - 1, seed=0)
    print(json.dumps({"peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """This process's peak RSS. VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child
    would report its parent's peak."""
    return proc_status("VmHWM")


def memory(counts: list[int]) -> list[dict]:
    """Peak RSS per count, as genexp eval runs (fixed mmap threshold), and with glibc's default for
    comparison (three runs each at the largest count: the default varies from run to run)."""
    rows = []
    plan = [("fid", "fixed", c) for c in counts] + [("fid,kid,pr", "fixed", c) for c in counts] + \
        [("fid,kid,pr", "glibc default", counts[0])] + [("fid,kid,pr", "glibc default", counts[-1])] * 3
    base: dict[tuple[str, str], float] = {}
    for kinds, heap, count in plan:
        proc = subprocess.run([sys.executable, __file__, "--rss-child", str(count), kinds, heap.split()[0]],
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss_mib"]
        first = base.setdefault((kinds, heap), peak)
        rows.append({"metrics": kinds, "heap": heap, "samples": count, "peak_rss_mib": round(peak, 1),
                     "vs_smallest": round(peak / first, 3)})
        print(f"  {kinds:11s} {heap:13s} {count:6d} samples: peak RSS {peak:7.1f} MiB ({peak / first:.3f}x "
              f"the {counts[0]}-sample run)", flush=True)
    return rows


def cache_saving(mnist: Path, n: int = 10000) -> dict | None:
    from genexp.data.idx import IdxDataset

    if not (mnist.is_dir()):
        print(f"  skipped: no MNIST idx files at {mnist} (--mnist)")
        return None
    data_cfg = OmegaConf.create({"name": "mnist", "kind": "image", "root": str(mnist), "split": "train",
                                 "resolution": 28, "channels": 1})
    dataset = IdxDataset(str(mnist), resolution=28, download=False)
    metrics = OmegaConf.create({"fid": {"kind": "fid", "num_samples": n, "extractor": "mnist_lenet"}})
    times, values = [], []
    with tempfile.TemporaryDirectory() as cache:
        for _ in range(2):
            suite = MetricSuite(metrics, dataset, data_cfg, torch.device("cpu"), print, cache_dir=Path(cache))
            start = time.perf_counter()
            result = suite.compute(lambda k, g: torch.rand(k, 1, 28, 28, generator=g) * 2 - 1, seed=0)
            times.append(time.perf_counter() - start)
            values.append(next(iter(result.values())))
    row = {"samples": n, "empty_cache_s": round(times[0], 2), "warm_cache_s": round(times[1], 2),
           "saved_fraction": round(1 - times[1] / times[0], 3), "same_value": values[0] == values[1]}
    print(f"  MNIST FID ({n} real, {n} fake): empty cache {times[0]:.2f}s, warm {times[1]:.2f}s "
          f"({100 * row['saved_fraction']:.0f}% saved), same value: {row['same_value']}")
    return row


STAGE_METRICS = ("fid", "kid", "prdc", "prdc_unblocked")
BATCH = 1000


class SyntheticFeatures(nn.Module):
    """Features in, the same features out: the metric stage alone, at an extractor's width."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def stage_metric(name: str, n: int, dim: int):
    """The metric as its kind builds it (metrics/kinds/), on features that pass through unchanged."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    from genexp.metrics.precision_recall import PrecisionRecall

    feature = SyntheticFeatures(dim)
    if name == "fid":
        return FrechetInceptionDistance(feature=feature, reset_real_features=False)
    if name == "kid":  # conf/metrics/kid.yaml's subsets
        return KernelInceptionDistance(feature=feature, subsets=100, subset_size=min(1000, n),
                                       reset_real_features=False)
    # conf/metrics/prdc.yaml's k; unblocked: one block of every row, the n x n matrix of before blocking
    return PrecisionRecall(feature=feature, k=3, dc_k=5, block_rows=n if name == "prdc_unblocked" else None)


def reset_peak(device: torch.device) -> float:
    """Start a peak-memory window; returns the memory in use now (MiB)."""
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**20
    try:  # VmHWM back to the current RSS (Linux >= 4.0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return proc_status("VmRSS")


def peak_memory(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mib()


def proc_status(field: str) -> float:
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage_child(name: str, n: int, dim: int, device_name: str) -> None:
    """One metric on n real and n generated synthetic features; prints seconds and peak memory (MiB)."""
    device = torch.device(device_name)
    metric = stage_metric(name, n, dim).to(device)
    g = torch.Generator(device).manual_seed(0)
    before = reset_peak(device)
    start = time.perf_counter()
    for real, shift, scale in ((True, 0.0, 1.0), (False, 0.1, 1.1)):
        for done in range(0, n, BATCH):
            metric.update(torch.randn(min(BATCH, n - done), dim, generator=g, device=device) * scale + shift, real=real)
    value = metric.compute()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    value = {k: float(v) for k, v in value.items()} if isinstance(value, dict) else \
        [float(v) for v in value] if isinstance(value, tuple) else float(value)
    print(json.dumps({"seconds": seconds, "peak_mib": peak_memory(device) - before, "value": value}))


def available_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.mem_get_info()[0] / 2**20
    return proc_meminfo("MemAvailable")


def proc_meminfo(field: str) -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("inf")


def metric_stage(devices: list[torch.device], dims: list[int] | None, counts: list[int], full: bool) -> list[dict]:
    rows = []
    for device in devices:
        for dim in dims or ([128, 2048] if device.type == "cuda" else [128]):
            for n in counts:
                for name in STAGE_METRICS:
                    row = {"metric": name, "device": device.type, "dim": dim, "samples": n}
                    # n x n float64 distances and two n x n boolean masks at once
                    need = 10 * n * n / 2**20
                    if name == "prdc_unblocked" and need > 0.6 * available_mib(device):
                        row["skipped"] = f"needs ~{need / 1024:.1f} GiB, {available_mib(device) / 1024:.1f} GiB free"
                    elif name.startswith("prdc") and device.type == "cpu" and n > 20000 and not full:
                        row["skipped"] = "--full (about 10 minutes on 2 CPU cores)"
                    else:
                        proc = subprocess.run([sys.executable, __file__, "--stage-child", name, str(n), str(dim),
                                               device.type], capture_output=True, text=True)
                        if proc.returncode != 0:
                            raise SystemExit(proc.stderr[-2000:])
                        out = json.loads(proc.stdout.strip().splitlines()[-1])
                        row.update(seconds=round(out["seconds"], 2), peak_mib=round(out["peak_mib"], 1),
                                   value=out["value"])
                    rows.append(row)
                    print(f"  {name:15s} {device.type:4s} {dim:5d}-d {n:6d} samples: "
                          + (f"{row['seconds']:8.2f} s, peak {row['peak_mib']:9.1f} MiB" if "seconds" in row
                             else f"skipped ({row['skipped']})"), flush=True)
    return rows


def blocked_vs_unblocked(rows: list[dict]) -> list[dict]:
    out = []
    for b in (r for r in rows if r["metric"] == "prdc" and "seconds" in r):
        u = next((r for r in rows if r["metric"] == "prdc_unblocked" and "seconds" in r
                  and (r["device"], r["dim"], r["samples"]) == (b["device"], b["dim"], b["samples"])), None)
        if u is not None:
            out.append({"device": b["device"], "dim": b["dim"], "samples": b["samples"],
                        "time_blocked_over_unblocked": round(b["seconds"] / u["seconds"], 3),
                        "memory_blocked_over_unblocked": round(b["peak_mib"] / u["peak_mib"], 3),
                        "same_values": b["value"] == u["value"]})
    return out


def table(report: dict) -> str:
    lines = ["", "| extractor | device | images/s |", "|---|---|---|"]
    lines += [f"| {r['extractor']} ({r['input']} in) | {r['device']} | {r['images_per_s']:,.1f} |"
              for r in report["throughput"]]
    lines += ["", "| metric stage | device | dim | samples | seconds | peak MiB |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['metric']} | {r['device']} | {r['dim']} | {r['samples']:,} | "
              + (f"{r['seconds']:.2f} | {r['peak_mib']:,.1f} |" if "seconds" in r else f"skipped: {r['skipped']} | |")
              for r in report["metric_stage"]]
    lines += ["", "| PR/DC blocked / unblocked | device | dim | samples | time | memory | same values |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| | {r['device']} | {r['dim']} | {r['samples']:,} | {r['time_blocked_over_unblocked']:.3f}x | "
              f"{r['memory_blocked_over_unblocked']:.3f}x | {r['same_values']} |"
              for r in report["blocked_vs_unblocked"]]
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-child":
        return rss_child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    if len(sys.argv) > 1 and sys.argv[1] == "--stage-child":
        return stage_child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2k and 10k samples, 2 s timing windows, no cache run")
    parser.add_argument("--full", action="store_true", help="also PR/DC above 20k samples on the CPU")
    parser.add_argument("--counts", default=None, help="metric-stage sample counts (default 10000,50000)")
    parser.add_argument("--dims", default=None, help="feature widths (default: 128 on the CPU, 128,2048 on a GPU)")
    parser.add_argument("--eval-rss", default=None, metavar="COUNTS",
                        help="also peak RSS of whole evaluations at these counts (e.g. 1000,5000,20000)")
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--seconds", type=float, default=None, help="timing window per extractor (default 5, quick 2)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "metrics.json")
    args = parser.parse_args()
    counts = [int(c) for c in (args.counts or ("2000,10000" if args.quick else "10000,50000")).split(",")]
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    report = {"command": " ".join(["python", "scripts/bench_metrics.py", *sys.argv[1:]]),
              "torch": torch.__version__, "threads": torch.get_num_threads(),
              # other work on the machine slows every row alike: read the numbers against it
              "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
              "devices": [torch.cuda.get_device_name() if d.type == "cuda" else "cpu" for d in devices],
              "metric_stage_features": "synthetic Gaussian (real N(0, I), generated N(0.1, 1.1^2 I)) of the "
                                       "extractor's width, streamed in batches of 1000; peak memory above the "
                                       "process's use before the metric"}
    with tempfile.TemporaryDirectory() as tmp:
        print("extractor throughput (the shared feature pass)", flush=True)
        seconds = args.seconds or (2.0 if args.quick else 5.0)
        report["throughput"] = [row for d in devices for row in throughput(d, Path(tmp), seconds)]
    print("metric stage (fresh process each)", flush=True)
    dims = [int(d) for d in args.dims.split(",")] if args.dims else None
    report["metric_stage"] = metric_stage(devices, dims, counts, args.full)
    report["blocked_vs_unblocked"] = blocked_vs_unblocked(report["metric_stage"])
    if args.eval_rss:
        print("peak memory of one evaluation (fresh process each)", flush=True)
        report["memory"] = memory([int(c) for c in args.eval_rss.split(",")])
    if not args.quick:
        print("reference-statistics cache", flush=True)
        report["cache"] = cache_saving(args.mnist)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
