"""genexp's StyleGAN2 against NVIDIA's stylegan2-ada-pytorch: G and D forward + backward time and memory.

    python scripts/bench_stylegan2_official.py --official /tmp/sg2ada [--resolutions 32,64] [--batch 8]
    python scripts/bench_stylegan2_official.py --official /tmp/sg2ada --profile G --iters 2  # where time goes

``--official``: a work tree of https://github.com/NVlabs/stylegan2-ada-pytorch (its training/networks.py
is imported from there; genexp never depends on that code and no test runs this script).

For each resolution it builds the official Generator and Discriminator (training.networks; float32:
num_fp16_res=0, conv_clamp None; by default channel_base 4096, channel_max 512, z = w = 512, a 2-layer
mapping, resnet D, mbstd group 4, as in scripts/bench_stylegan2_modconv.py) and copies their weights
into genexp's nets (genexp.models.stylegan2_official), checks that both compute the same function
(outputs and G's gradients, eval and train mode, constant noise), then times, in this process,
alternating the two implementations step by step (ABAB.., BABA..) so that machine load hits both alike:

- G: forward + backward in train mode (unfused modulated convolutions in both: the official default
  while training), random noise, no style mixing (the official G has none; genexp's is set to 0),
  w_avg tracked in both; loss mean(img^2);
- D: forward + backward on random images (no gradient to the images), loss mean(softplus(D(x))).

Reported: median wall seconds (and the ratio of median process CPU seconds, less sensitive to a
loaded machine) over ``--iters`` timed steps after ``--warmup`` warm-ups; the bytes autograd
saves for backward (each storage once, parameters included: the activation memory a step holds,
device independent, measured with torch.autograd.graph.saved_tensors_hooks); and, unless --no-rss, the
peak RSS increase over one forward + backward in a fresh subprocess per (implementation, resolution,
network), taken from VmHWM after resetting it (/proc/self/clear_refs). Ratios are genexp / official.
Results go to the console and docs/bench/stylegan2_vs_official.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from genexp.models.stylegan2_official import discriminator_from_official, generator_from_official  # noqa: E402


def official_networks(path: Path):
    """The official training.networks module, imported from the work tree at ``path``."""
    sys.path.insert(0, str(path))
    from training import networks  # the official code; CPU tensors use its reference ops only
    return networks


def official_kwargs(args, resolution: int) -> tuple[dict, dict]:
    G_kwargs = dict(z_dim=512, c_dim=0, w_dim=512, img_resolution=resolution, img_channels=3,
                    mapping_kwargs=dict(num_layers=args.mapping_layers),
                    synthesis_kwargs=dict(channel_base=args.channel_base, channel_max=args.channel_max,
                                          num_fp16_res=0, conv_clamp=None))
    D_kwargs = dict(c_dim=0, img_resolution=resolution, img_channels=3, architecture="resnet",
                    channel_base=args.channel_base, channel_max=args.channel_max, num_fp16_res=0,
                    conv_clamp=None, epilogue_kwargs=dict(mbstd_group_size=4))
    return G_kwargs, D_kwargs


def build(networks, args, resolution: int, which: str = "both"):
    """Official G and D (seeded), and genexp's with the same weights; ``which`` limits what is built
    ("official" or "genexp": the other's nets are None)."""
    G_kwargs, D_kwargs = official_kwargs(args, resolution)
    torch.manual_seed(0)
    oG, oD = networks.Generator(**G_kwargs), networks.Discriminator(**D_kwargs)
    gG = gD = None
    if which != "official":
        gG = generator_from_official(G_kwargs, oG.state_dict(), bf16=False, style_mixing=0.0)
        gD = discriminator_from_official(D_kwargs, oD.state_dict(), bf16=False)
    if which == "genexp":
        oG = oD = None
    return oG, oD, gG, gD


class SavedBytes:
    """Bytes of the tensors autograd keeps for backward (each storage counted once)."""

    def __init__(self):
        self.storages: dict[int, int] = {}

    def pack(self, t: torch.Tensor):
        storage = t.untyped_storage()
        self.storages[storage.data_ptr()] = storage.nbytes()
        return t

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20


def g_forward(impl: str, G, z: torch.Tensor, noise_mode: str = "random") -> torch.Tensor:
    if impl == "official":
        return G(z, torch.zeros(len(z), 0), noise_mode=noise_mode)
    return G(z, noise_mode=noise_mode)


def d_forward(impl: str, D, img: torch.Tensor) -> torch.Tensor:
    return D(img, torch.zeros(len(img), 0)).view(len(img)) if impl == "official" else D(img)


def step(impl: str, net_kind: str, net, batch: int, resolution: int) -> tuple[float, float, float]:
    """One forward + backward: wall seconds, MiB saved for backward, process CPU seconds."""
    net.zero_grad(set_to_none=True)
    if net_kind == "G":
        x = torch.randn(batch, 512)
    else:
        x = torch.randn(batch, 3, resolution, resolution)
    saved = SavedBytes()
    start, cpu = time.perf_counter(), time.process_time()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
        if net_kind == "G":
            loss = g_forward(impl, net, x).square().mean()
        else:
            loss = F.softplus(d_forward(impl, net, x)).mean()
    loss.backward()
    return time.perf_counter() - start, saved.mib, time.process_time() - cpu


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def check_parity(oG, oD, gG, gD, batch: int, resolution: int, tol: float) -> dict:
    """Max relative differences genexp vs official (relative to the official's largest magnitude):
    G outputs in eval (fused) and train (unfused) mode with constant noise, G's parameter gradients
    in train mode, D's outputs and gradients. Raises if any exceeds ``tol``."""
    torch.manual_seed(1)
    z, img = torch.randn(batch, 512), torch.randn(batch, 3, resolution, resolution)
    out = {}
    with torch.no_grad():
        for mode in ("eval", "train"):
            for G in (oG, gG):
                G.train(mode == "train")
            out[f"G_{mode}"] = max_rel(g_forward("genexp", gG, z, "const"), g_forward("official", oG, z, "const"))
    grads = []
    for impl, G in (("official", oG), ("genexp", gG)):
        G.train().zero_grad(set_to_none=True)
        g_forward(impl, G, z, "const").square().mean().backward()
        grads.append({n: p.grad for n, p in G.named_parameters() if p.grad is not None})
    if grads[0].keys() != grads[1].keys():
        raise SystemExit(f"G gradients: different parameters {sorted(grads[0].keys() ^ grads[1].keys())[:3]}")
    out["G_grads"] = max(max_rel(grads[1][n], grads[0][n]) for n in grads[0] if grads[0][n].abs().max() > 0)
    grads = []
    for impl, D in (("official", oD), ("genexp", gD)):
        D.train().zero_grad(set_to_none=True)
        y = d_forward(impl, D, img)
        F.softplus(y).mean().backward()
        grads.append((y.detach(), {n: p.grad for n, p in D.named_parameters()}))
    out["D"] = max_rel(grads[1][0], grads[0][0])
    out["D_grads"] = max(max_rel(grads[1][1][n], grads[0][1][n]) for n in grads[0][1]
                         if grads[0][1][n].abs().max() > 0)
    for key, value in out.items():
        if not value <= tol:
            raise SystemExit(f"{resolution}px: genexp and official differ ({key}: {value:.2e} > {tol:g})")
    for G in (oG, gG):
        G.zero_grad(set_to_none=True)
    return {key: float(f"{value:.2e}") for key, value in out.items()}


def read_status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {key} in /proc/self/status")


def child(args) -> None:
    """In a fresh process: the peak RSS increase (MiB) over one forward + backward of one net."""
    impl, net_kind, resolution = args.child.split(",")
    resolution = int(resolution)
    torch.set_num_threads(args.threads)
    oG, oD, gG, gD = build(official_networks(args.official), args, resolution, impl)
    net = {("official", "G"): oG, ("official", "D"): oD, ("genexp", "G"): gG, ("genexp", "D"): gD}[impl, net_kind]
    net.train()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM back to the current RSS
    base = read_status("VmRSS")
    step(impl, net_kind, net, args.batch, resolution)
    print(json.dumps({"peak_rss_delta_mib": round((read_status("VmHWM") - base) / 2**20, 1)}))


def rss_delta(args, impl: str, net_kind: str, resolution: int) -> float | None:
    cmd = [sys.executable, __file__, "--official", str(args.official), "--child", f"{impl},{net_kind},{resolution}",
           "--batch", str(args.batch), "--channel-base", str(args.channel_base), "--channel-max",
           str(args.channel_max), "--mapping-layers", str(args.mapping_layers), "--threads", str(args.threads)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        print(f"  peak RSS ({impl} {net_kind} {resolution}px) failed: {res.stderr.strip().splitlines()[-1:]}")
        return None
    return json.loads(res.stdout.strip().splitlines()[-1])["peak_rss_delta_mib"]


def bench(networks, args, resolution: int) -> dict:
    oG, oD, gG, gD = build(networks, args, resolution)
    parity = check_parity(oG, oD, gG, gD, args.batch, resolution, args.tol)
    print(f"{resolution}px: genexp = official (max relative difference {max(parity.values()):.1e})", flush=True)
    row = {"resolution": resolution, "batch": args.batch, "parity_max_rel": parity,
           "params_G": sum(p.numel() for p in gG.parameters()), "params_D": sum(p.numel() for p in gD.parameters())}
    nets = {"G": {"official": oG, "genexp": gG}, "D": {"official": oD, "genexp": gD}}
    for net_kind, pair in nets.items():
        for net in pair.values():
            net.train()
        runs = {"official": [], "genexp": []}
        for i in range(args.warmup + args.iters):
            for impl in ("genexp", "official") if i % 2 else ("official", "genexp"):
                runs[impl].append(step(impl, net_kind, pair[impl], args.batch, resolution))
        for impl, rs in runs.items():
            kept = rs[args.warmup:]
            row[f"{net_kind}_{impl}_s"] = round(statistics.median(r[0] for r in kept), 4)
            row[f"{net_kind}_{impl}_all_s"] = [round(r[0], 4) for r in kept]
            row[f"{net_kind}_{impl}_cpu_s"] = round(statistics.median(r[2] for r in kept), 4)
            row[f"{net_kind}_{impl}_saved_mib"] = round(max(r[1] for r in kept), 1)
            if args.rss:
                row[f"{net_kind}_{impl}_peak_rss_delta_mib"] = rss_delta(args, impl, net_kind, resolution)
        row[f"{net_kind}_time_ratio"] = round(row[f"{net_kind}_genexp_s"] / row[f"{net_kind}_official_s"], 3)
        row[f"{net_kind}_cpu_time_ratio"] = round(row[f"{net_kind}_genexp_cpu_s"]
                                                  / row[f"{net_kind}_official_cpu_s"], 3)
        row[f"{net_kind}_saved_ratio"] = round(row[f"{net_kind}_genexp_saved_mib"]
                                               / row[f"{net_kind}_official_saved_mib"], 3)
        if args.rss and row[f"{net_kind}_official_peak_rss_delta_mib"] and row[f"{net_kind}_genexp_peak_rss_delta_mib"]:
            row[f"{net_kind}_rss_ratio"] = round(row[f"{net_kind}_genexp_peak_rss_delta_mib"]
                                                 / row[f"{net_kind}_official_peak_rss_delta_mib"], 3)
        print(f"  {net_kind}: genexp {row[f'{net_kind}_genexp_s']:.3f} s, official "
              f"{row[f'{net_kind}_official_s']:.3f} s ({row[f'{net_kind}_time_ratio']:.2f}x; CPU time "
              f"{row[f'{net_kind}_cpu_time_ratio']:.2f}x)", flush=True)
    return row


def profile(networks, args, resolution: int, net_kind: str = "G", top: int = 15) -> list[dict]:
    """torch.profiler (CPU) over ``--iters`` forward + backward steps of each implementation, alternating:
    the ops whose self CPU time differs most, in ms per step (genexp, official, difference) and calls."""
    oG, oD, gG, gD = build(networks, args, resolution)
    pair = {"G": {"official": oG, "genexp": gG}, "D": {"official": oD, "genexp": gD}}[net_kind]
    totals: dict[str, dict[str, list[float]]] = {"official": {}, "genexp": {}}
    for net in pair.values():
        net.train()
    for impl, net in pair.items():  # warm-up
        step(impl, net_kind, net, args.batch, resolution)
    for i in range(args.iters):
        for impl in ("genexp", "official") if i % 2 else ("official", "genexp"):
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                step(impl, net_kind, pair[impl], args.batch, resolution)
            for event in prof.key_averages():
                entry = totals[impl].setdefault(event.key, [0.0, 0])
                entry[0] += event.self_cpu_time_total / 1e3 / args.iters
                entry[1] += event.count / args.iters
    rows = []
    for key in totals["official"].keys() | totals["genexp"].keys():
        g, o = totals["genexp"].get(key, [0.0, 0]), totals["official"].get(key, [0.0, 0])
        rows.append({"op": key, "genexp_ms": round(g[0], 1), "official_ms": round(o[0], 1),
                     "diff_ms": round(g[0] - o[0], 1), "genexp_calls": round(g[1]), "official_calls": round(o[1])})
    rows.sort(key=lambda r: -abs(r["diff_ms"]))
    total = {impl: sum(v[0] for v in t.values()) for impl, t in totals.items()}
    print(f"{resolution}px {net_kind} profile (self CPU ms per step): genexp {total['genexp']:.0f}, "
          f"official {total['official']:.0f}")
    print(f"  {'op':<40} {'genexp':>8} {'official':>8} {'diff':>8} {'calls g/o':>10}")
    for r in rows[:top]:
        print(f"  {r['op'][:40]:<40} {r['genexp_ms']:>8.1f} {r['official_ms']:>8.1f} {r['diff_ms']:>+8.1f} "
              f"{r['genexp_calls']:>5}/{r['official_calls']:<4}")
    return rows[:top]


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def official_commit(path: Path) -> str | None:
    res = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True)
    return res.stdout.strip() or None if res.returncode == 0 else None


def table(rows: list[dict], rss: bool) -> str:
    def num(value, fmt: str) -> str:
        return "-" if value is None else format(value, fmt)

    cols = ["res", "net", "genexp s", "official s", "ratio", "cpu ratio", "saved MiB g", "saved MiB o", "ratio"]
    if rss:
        cols += ["peak RSS+ g", "peak RSS+ o", "ratio"]
    lines = []
    for r in rows:
        for k in ("G", "D"):
            cells = [str(r["resolution"]), k, num(r[f"{k}_genexp_s"], ".3f"), num(r[f"{k}_official_s"], ".3f"),
                     num(r[f"{k}_time_ratio"], ".3f"), num(r[f"{k}_cpu_time_ratio"], ".3f"),
                     num(r[f"{k}_genexp_saved_mib"], ".1f"), num(r[f"{k}_official_saved_mib"], ".1f"),
                     num(r[f"{k}_saved_ratio"], ".3f")]
            if rss:
                cells += [num(r.get(f"{k}_genexp_peak_rss_delta_mib"), ".1f"),
                          num(r.get(f"{k}_official_peak_rss_delta_mib"), ".1f"), num(r.get(f"{k}_rss_ratio"), ".3f")]
            lines.append(cells)
    widths = [max(len(c), *(len(line[i]) for line in lines)) for i, c in enumerate(cols)]
    out = [" ".join(c.rjust(w) for c, w in zip(cols, widths))]
    out.append("-" * len(out[0]))
    out += [" ".join(c.rjust(w) for c, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", type=Path, required=True,
                        help="a work tree of NVlabs/stylegan2-ada-pytorch")
    parser.add_argument("--resolutions", default="32,64")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--channel-base", type=int, default=4096)
    parser.add_argument("--channel-max", type=int, default=512)
    parser.add_argument("--mapping-layers", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tol", type=float, default=1e-4, help="largest relative difference accepted")
    parser.add_argument("--no-rss", dest="rss", action="store_false", help="skip the peak-RSS subprocesses")
    parser.add_argument("--profile", choices=("G", "D"),
                        help="instead of timing: profile this net's steps and print the ops that differ most")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "stylegan2_vs_official.json")
    args = parser.parse_args()
    if not (args.official / "training" / "networks.py").is_file():
        raise SystemExit(f"--official {args.official}: not a stylegan2-ada-pytorch work tree "
                         "(no training/networks.py); see https://github.com/NVlabs/stylegan2-ada-pytorch")
    if args.child:
        return child(args)
    torch.set_num_threads(args.threads)
    networks = official_networks(args.official)
    if args.profile:
        for r in args.resolutions.split(","):
            profile(networks, args, int(r), args.profile)
        return
    rows = [bench(networks, args, int(r)) for r in args.resolutions.split(",")]
    print(table(rows, args.rss))
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpu": cpu_model(), "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "python": platform.python_version()},
        "official": {"repo": "NVlabs/stylegan2-ada-pytorch", "commit": official_commit(args.official)},
        "config": {"batch": args.batch, "z_dim": 512, "w_dim": 512, "channel_base": args.channel_base,
                   "channel_max": args.channel_max, "mapping_layers": args.mapping_layers, "dtype": "float32",
                   "conv_clamp": None, "D": "resnet, mbstd group 4", "warmup": args.warmup, "iters": args.iters,
                   "G step": "train mode (unfused modconv), random noise, no style mixing, loss mean(img^2)",
                   "D step": "train mode, random images, loss mean(softplus(D(x)))",
                   "order": "interleaved per step, alternating which goes first"},
        "memory": {"saved_mib": "bytes autograd saves for backward, each storage once, parameters included",
                   "peak_rss_delta_mib": "VmHWM - VmRSS over one fwd+bwd in a fresh process (clear_refs reset)"},
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
