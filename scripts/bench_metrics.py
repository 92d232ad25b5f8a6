"""Metric-suite benchmarks: extractor throughput, memory as the sample count grows, and the cache.

    python scripts/bench_metrics.py [--counts 1000,5000,20000] [--mnist ../shared/data/mnist]

1. Images per second through each extractor (digits_lenet, mnist_lenet, Inception-v3 at 299 px),
   on the CPU and on CUDA when there is one. Inception uses the real FID weights when torch hub's
   cache has them, else a file of random values with the same keys (same cost, meaningless numbers).
2. Peak RSS of a whole evaluation (`MetricSuite.compute`, FID alone, then FID + KID + precision/recall)
   at each count, each in a fresh process; fakes are generated batch by batch, never all held.
   Reported against the smallest count: FID must stay flat (it keeps feature sums); KID and PR keep
   the features themselves (4 bytes x feature width per sample), which the numbers show. Run as
   genexp eval runs (metrics/heap.py), and with glibc's default allocator settings for comparison.
3. Reference-statistics cache: the same MNIST evaluation (10k real, 10k fake, mnist_lenet FID) with
   an empty cache, then with the cache the first run wrote.

Results go to the console and to docs/bench/metrics.json.
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
                                 ("inception", 32, 32 if device.type == "cpu" else 200, weights)):
        net, _ = build_extractor(name, "features", weights=w)
        net = net.to(device)
        x = torch.rand(batch, 3, size, size, device=device) * 2 - 1
        net(x)  # warm-up
        done, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds or done < 2 * batch:
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
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--rss-child":
        return rss_child(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--counts", default="1000,5000,20000")
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist")
    parser.add_argument("--seconds", type=float, default=5.0, help="timing window per extractor")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "metrics.json")
    args = parser.parse_args()
    report = {"torch": torch.__version__, "threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        print("extractor throughput", flush=True)
        devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
        report["throughput"] = [row for d in devices for row in throughput(d, Path(tmp), args.seconds)]
    print("peak memory of one evaluation (fresh process each)", flush=True)
    report["memory"] = memory([int(c) for c in args.counts.split(",")])
    print("reference-statistics cache", flush=True)
    report["cache"] = cache_saving(args.mnist)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
