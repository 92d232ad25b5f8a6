"""genexp phema ckpt_dir=<run dir> sigma_rel=0.05,0.10,0.15: post-hoc EMA (EDM2) from a run's snapshots.

A run trained with trainer.phema.sigma_rels keeps power-function EMA tracks and writes them to
<run>/phema/snapshots/ (genexp/training/phema.py). Here the snapshots are combined, by least squares
over their profiles, into the EMA of each requested length at the newest snapshot (or at ``step=``),
and each is written as a genexp checkpoint, <run>/phema/phema-0.100.pt, which `genexp eval` and
`genexp sample` take like any other: the run's checkpoints/last.pt with the averaged net replaced.

Options (key=value): ckpt_dir (the run dir or its phema/snapshots), sigma_rel (one or more, comma
separated), step (a snapshot's step; default the newest), out (a folder; default <run>/phema),
max_residual (refuse a fit that leaves more of the profile than this; default 0.25).
"""

from __future__ import annotations

from pathlib import Path

import torch

from genexp.errors import UserError
from genexp.training import phema as ph

KEYS = ("ckpt_dir", "sigma_rel", "step", "out", "max_residual")
TURN_ON = ("train with trainer.phema.sigma_rels=[0.05,0.10] (and trainer.phema.snapshot_every=<steps>) to "
           "store them")


def parse(args: list[str]) -> dict[str, str]:
    opts: dict[str, str] = {}
    for arg in args:
        key, eq, value = arg.partition("=")
        key = key.lstrip("+")
        if not eq or key not in KEYS:
            raise UserError(f"genexp phema takes {', '.join(k + '=' for k in KEYS)}; got '{arg}' "
                            "(e.g. genexp phema ckpt_dir=outputs/train/<run> sigma_rel=0.05,0.10)")
        opts[key] = value
    for key in ("ckpt_dir", "sigma_rel"):
        if not opts.get(key):
            raise UserError(f"genexp phema needs {key}=...: e.g. genexp phema ckpt_dir=outputs/train/<run> "
                            "sigma_rel=0.05,0.10,0.15")
    return opts


def number(key: str, text: str, kind=float):
    try:
        return kind(text)
    except ValueError:
        raise UserError(f"{key}={text}: not a number") from None


def sigma_rels_of(text: str) -> list[float]:
    values = [number("sigma_rel", v.strip()) for v in text.strip("[]").split(",") if v.strip()]
    for s in values:
        if not 0.0 < s < ph.SIGMA_REL_MAX:
            raise UserError(f"sigma_rel={s:g}: a power-function EMA's relative length lies in (0, "
                            f"{ph.SIGMA_REL_MAX:.4f}); give values in between (EDM2's best are about 0.05 to 0.20)")
    return values


def locate(ckpt_dir: str) -> tuple[Path, Path]:
    """The snapshots folder and the run dir it belongs to."""
    path = Path(ckpt_dir)
    if not path.is_dir():
        raise UserError(f"ckpt_dir={ckpt_dir} does not exist (or is not a directory): give a genexp run dir")
    for snaps in (ph.snapshot_dir(path), path / "snapshots", path):
        if any(snaps.glob("step_*.pt")) and snaps.name == "snapshots":
            return snaps, snaps.parent.parent
    raise UserError(f"ckpt_dir={ckpt_dir} holds no post-hoc EMA profiles (no phema/snapshots/step_*.pt): "
                    + TURN_ON)


def snapshot_steps(snaps: Path) -> dict[int, Path]:
    found = {}
    for path in snaps.glob("step_*.pt"):
        stem = path.stem[5:]
        if stem.isdigit():
            found[int(stem)] = path
    return dict(sorted(found.items()))


def read_snapshot(path: Path) -> dict:
    try:
        snap = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torn, corrupt, unreadable: the user's file, said in one line
        raise UserError(f"post-hoc EMA snapshot {path} cannot be read ({str(exc).strip().splitlines()[0][:100]}): "
                        "remove it (the others still combine) or restore it") from None
    meta = snap.get("genexp_phema") if isinstance(snap, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != ph.SNAPSHOT_FORMAT:
        raise UserError(f"{path} is not a genexp post-hoc EMA snapshot: leave only snapshots in that folder")
    if int(meta.get("version", 0)) > ph.SNAPSHOT_VERSION:
        raise UserError(f"{path} has snapshot version {meta['version']}; this genexp reads up to "
                        f"{ph.SNAPSHOT_VERSION}: upgrade genexp")
    return snap


def base_checkpoint(run: Path) -> dict:
    """The run's newest checkpoint: the nets the tracks do not cover (a GAN's D), the config, the step."""
    from genexp.training.checkpoint import load_checkpoint

    last = run / "checkpoints" / "last.pt"
    if not last.is_file():
        raise UserError(f"{run} has post-hoc EMA snapshots but no checkpoints/last.pt, which holds the rest of the "
                        "model: give the run dir the snapshots came from")
    return load_checkpoint(last)


def main(args: list[str]) -> None:
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    opts = parse(args)
    sigma_rels = sigma_rels_of(opts["sigma_rel"])
    snaps, run = locate(opts["ckpt_dir"])
    steps = snapshot_steps(snaps)
    at = number("step", opts["step"], int) if opts.get("step") else max(steps)
    if at not in steps:
        newest_steps = ", ".join(map(str, list(steps)[-5:]))
        raise UserError(f"step={at}: no snapshot at that step in {snaps} (the newest are {newest_steps})")
    used = {s: p for s, p in steps.items() if s <= at}
    max_residual = number("max_residual", opts.get("max_residual", "0.25"))
    newest = read_snapshot(used[at])
    stored_sigmas, gammas = [float(s) for s in newest["sigma_rels"]], [float(g) for g in newest["gammas"]]

    plans = []
    profiles = [(float(step), g) for step in used for g in gammas]
    for s in sigma_rels:
        x, residual = ph.solve_coefficients(profiles, (float(at), ph.gamma_of(s)))
        if residual > max_residual:
            raise UserError(f"sigma_rel={s:g} lies outside what the stored tracks (sigma_rel {stored_sigmas}, "
                            f"{len(used)} snapshots) can express: the fit leaves {100 * residual:.0f}% of its "
                            f"profile (max_residual={max_residual:g}); ask for a length nearer the tracks, or "
                            "store more snapshots / other tracks")
        plans.append((s, x.reshape(len(used), len(gammas)), residual))

    base = base_checkpoint(run)
    modules = base["method"]["modules"]
    sums = [None] * len(plans)
    from genexp.logger.console import Counter

    counter = Counter(print, "phema: snapshots read", len(used), unit="snapshot")
    for i, (step, path) in enumerate(used.items()):
        counter.update(i)
        snap = newest if step == at else read_snapshot(path)
        if [float(s) for s in snap["sigma_rels"]] != stored_sigmas or int(snap["step"]) != step:
            raise UserError(f"{path} is not a snapshot of this run's tracks (sigma_rels {snap['sigma_rels']}, step "
                            f"{snap['step']}): leave only this run's snapshots in {snaps}")
        for k, (_, x, _) in enumerate(plans):
            for j, track in enumerate(snap["tracks"]):
                if sums[k] is None:
                    sums[k] = {key: torch.zeros_like(v, dtype=torch.float64) for key, v in track.items()}
                for key, value in track.items():
                    sums[k][key].add_(value.double(), alpha=float(x[i, j]))
    counter.update(len(used))

    nets = dict(newest["nets"])
    out_dir = Path(opts["out"]) if opts.get("out") else run / "phema"
    suffix = "" if at == max(steps) else f"-step_{at:06d}"
    for (s, _, residual), weights in zip(plans, sums):
        ckpt = dict(base, method={**base["method"], "modules": dict(modules)})
        target = ckpt["method"]["modules"]
        for key, value in {**weights, **newest["buffers"]}.items():
            net, rest = key.split(".", 1)
            slot = f"{nets[net]}.{rest}"
            if slot not in target or target[slot].shape != value.shape:
                raise UserError(f"the snapshots in {snaps} do not fit {run}/checkpoints/last.pt ({slot}): give the "
                                "run dir the snapshots came from")
            target[slot] = value.to(target[slot].dtype)
        ckpt["phema"] = {"sigma_rel": s, "gamma": ph.gamma_of(s), "step": at, "snapshots": len(used),
                         "tracks": stored_sigmas, "residual": residual}
        path = out_dir / f"phema-{s:.3f}{suffix}.pt"
        try:
            ph_save(ckpt, path)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        tracks = ", ".join(f"{v:.3f}" for v in stored_sigmas)
        print(f"sigma_rel {s:.3f} (gamma {ph.gamma_of(s):.2f}) at step {at}: {len(used)} snapshots (steps "
              f"{min(used)}-{at}) x {len(gammas)} tracks (sigma_rel {tracks}), "
              f"residual {100 * residual:.2f}% -> {path}")


def ph_save(ckpt: dict, path: Path) -> None:
    from genexp.training.checkpoint import save_checkpoint

    save_checkpoint({k: v for k, v in ckpt.items() if k != "genexp"}, path)
