"""Fused vs unfused modulated convolution: StyleGAN2 G forward + backward, timed in one process.

    python scripts/bench_stylegan2_modconv.py [--resolutions 32,64] [--batch 8] [--channel-base 4096]

genexp's G uses the fused form (per-sample weights, one grouped convolution) at inference and the
unfused one (activations scaled by the styles, one shared-weight convolution, outputs demodulated)
while training, as the official code does. This times both on the same network and inputs, alternating
them step by step so that machine load hits both alike, and reports the median seconds per
forward + backward, the ratio unfused / fused, and memory: the bytes autograd saves for backward (the
activation memory the step holds; device independent) and, on a GPU, the peak allocated.
Results go to the console and docs/bench/stylegan2_modconv.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genexp.models.stylegan2 import Generator  # noqa: E402


class SavedBytes:
    """Bytes of the tensors autograd keeps for backward (each storage counted once)."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor):
        self.storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


def step(G: Generator, z: torch.Tensor, fused: bool, device: torch.device) -> tuple[float, float, float]:
    """One forward + backward: seconds, MiB saved for backward, MiB peak allocated (GPU)."""
    G.zero_grad(set_to_none=True)
    saved = SavedBytes()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        img = G(z, noise_mode="const", fused_modconv=fused)
    img.square().mean().backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return seconds, saved.mib, peak


def bench(resolution: int, batch: int, channel_base: int, channel_max: int, steps: int, device) -> dict:
    torch.manual_seed(0)
    G = Generator(z_dim=512, w_dim=512, resolution=resolution, mapping_layers=2, channel_base=channel_base,
                  channel_max=channel_max, style_mixing=0.0).to(device).train()
    z = torch.randn(batch, 512, device=device)
    runs = {True: [], False: []}
    for i in range(steps + 1):
        for fused in (True, False) if i % 2 else (False, True):
            runs[fused].append(step(G, z, fused, device))
    row = {"resolution": resolution, "batch": batch, "channel_base": channel_base, "channel_max": channel_max,
           "device": device.type, "threads": torch.get_num_threads(), "steps": steps}
    for fused, name in ((True, "fused"), (False, "unfused")):
        kept = runs[fused][1:]  # the first of each is a warm-up
        row[f"{name}_s"] = round(statistics.median(r[0] for r in kept), 4)
        row[f"{name}_saved_mib"] = round(kept[-1][1], 1)
        row[f"{name}_peak_mib"] = round(max(r[2] for r in kept), 1) if device.type == "cuda" else None
    row["time_unfused_vs_fused"] = round(row["unfused_s"] / row["fused_s"], 3)
    row["saved_unfused_vs_fused"] = round(row["unfused_saved_mib"] / row["fused_saved_mib"], 3)
    if device.type == "cuda":
        row["peak_unfused_vs_fused"] = round(row["unfused_peak_mib"] / row["fused_peak_mib"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", default="32,64")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channel-base", type=int, default=4096)
    parser.add_argument("--channel-max", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "stylegan2_modconv.json")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    rows = []
    for res in (int(r) for r in args.resolutions.split(",")):
        row = bench(res, args.batch, args.channel_base, args.channel_max, args.steps, device)
        rows.append(row)
        peak = (f", peak {row['fused_peak_mib']:.0f} / {row['unfused_peak_mib']:.0f} MiB"
                if device.type == "cuda" else "")
        print(f"{res}px batch {args.batch} on {device.type}: fused {row['fused_s']:.3f} s, unfused "
              f"{row['unfused_s']:.3f} s ({row['time_unfused_vs_fused']:.2f}x); saved for backward "
              f"{row['fused_saved_mib']:.1f} / {row['unfused_saved_mib']:.1f} MiB "
              f"({row['saved_unfused_vs_fused']:.2f}x){peak}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"torch": torch.__version__, "rows": rows}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
