"""Hostile-user harness (issue 16): re-measures what holds against the current genexp.

Categories, each a count in the summary and in docs/bench/hostile.json:
  kill_resume   SIGKILL at a random step of a training run, then resume=auto or resume=<run>; the final
                weights (and step) compared bitwise with an uninterrupted run of the same config
  kill_write    trainer.ckpt_every=1 and SIGKILL at random moments (half of them the instant a checkpoint
                temp file appears): every checkpoint file present loads, last.pt is whole and newest,
                no step_*.pt is missing
  signals       SIGTERM / SIGINT / SIGUSR1 mid-run: exit 128+signal, no traceback, then resume=auto ends
                bit-identical; SIGINT during start-up ends quietly with 130
  bad_input     bad command lines and files: exit 2, exactly one stderr line, no "Traceback", nothing
                already on disk changed (a snapshot of every prepared file before and after)
  crafted       the crafted-file subset of bad_input (payload checkpoints, pickles, stored overrides):
                also refused, and the marker file the payload would write does not exist

Every genexp run is a subprocess with OMP_NUM_THREADS=1, one at a time.

  python scripts/bench_hostile.py            # the full run (writes docs/bench/hostile.json)
  python scripts/bench_hostile.py --quick    # a few of each category, for a smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genexp.training.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TINY = ["logger=none", "trainer.progress=plain", "trainer.log_every=1", "trainer.sample_every=0",
        "trainer.eval_every=0", "trainer.grid_samples=4", "trainer.eval_samples=32", "metrics=[]",
        "model.generator.base_channels=8", "model.discriminator.base_channels=8", "data.batch_size=16"]
STEPS = 16
CONFIGS = {  # the two configs of the kill/resume figures
    "dcgan": [*TINY, f"trainer.max_steps={STEPS}", "trainer.ckpt_every=3"],
    "wgan_gp": [*TINY, f"trainer.max_steps={STEPS}", "trainer.ckpt_every=3", "loss=wgan_gp", "data.batch_size=8"],
}
# Bigger nets for the kills during writes: a checkpoint takes long enough to write that kills land in it.
WRITES = [*TINY, "trainer.max_steps=400", "trainer.ckpt_every=1", "model.generator.base_channels=32",
          "model.discriminator.base_channels=32"]


def child_env(cache: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "WANDB_MODE": "disabled",
           "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore", "GENEXP_OFFLINE": "1", "GENEXP_CACHE": str(cache)}
    env.pop("HYDRA_FULL_ERROR", None)
    return env


class Runner:
    def __init__(self, work: Path):
        self.work = work
        self.env = child_env(work / "cache")
        self.procs = 0

    def start(self, args: list[str], cwd: Path | None = None, preexec=None) -> subprocess.Popen:
        self.procs += 1

        def child():
            # A shell's background job ignores SIGINT, and Python then never installs its Ctrl-C handler:
            # every child starts with the default a user's terminal gives.
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if preexec:
                preexec()

        return subprocess.Popen([sys.executable, "-m", "genexp", *args], cwd=cwd or self.work, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=child)

    def run(self, args: list[str], cwd: Path | None = None, timeout: float = 300, preexec=None) -> dict:
        t0 = time.time()
        proc = self.start(args, cwd, preexec)
        try:
            out, err = proc.communicate(timeout=timeout)
            code = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            code = "timeout"
        return {"code": code, "out": out, "err": err, "wall_s": round(time.time() - t0, 1)}


def cmd_text(args: list[str]) -> str:
    return "genexp " + " ".join(args)


def tail(text: str, n: int = 600) -> str:
    return text[-n:]


def logged_steps(run_dir: Path) -> list[int]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(json.loads(line)["step"])
        except (ValueError, KeyError):
            steps.append(None)
    return steps


def wait_for_step(proc: subprocess.Popen, run_dir: Path, step: int, timeout: float = 300) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        steps = [s for s in logged_steps(run_dir) if s is not None]
        if steps and steps[-1] >= step:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False


def first_difference(a, b, where: str = "") -> str | None:
    """None when ``a`` and ``b`` are bitwise equal, else the path of the first difference."""
    if isinstance(a, torch.Tensor):
        same = isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
        return None if same else where or "."
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return f"{where} (keys)"
        for k in a:
            if (d := first_difference(a[k], b[k], f"{where}.{k}")) is not None:
                return d
        return None
    if isinstance(a, (list, tuple)):
        if not isinstance(b, (list, tuple)) or len(a) != len(b):
            return f"{where} (length)"
        for i, (x, y) in enumerate(zip(a, b)):
            if (d := first_difference(x, y, f"{where}[{i}]")) is not None:
                return d
        return None
    return None if a == b else where or "."


def compare_final(ref: Path, other: Path) -> tuple[bool, str]:
    try:
        a = torch.load(ref / "checkpoints" / "last.pt", weights_only=True)
        b = torch.load(other / "checkpoints" / "last.pt", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to read is the finding
        return False, f"last.pt unreadable: {type(exc).__name__}: {exc}"[:300]
    if a["step"] != b["step"]:
        return False, f"step {b['step']} != {a['step']}"
    diff = first_difference(a["method"], b["method"], "method")
    return diff is None, "bitwise identical" if diff is None else f"differs at {diff}"


# ----------------------------------------------------------------------------------------------------------
# kill / resume


def kill_resume_trial(r: Runner, name: str, ref: Path, i: int, mode: str, rng: random.Random) -> dict:
    args = CONFIGS[name]
    run_dir = r.work / "kill" / f"{name}_{i:02d}"
    first = ["train", *args, *(["resume=auto"] if mode == "auto" else []), f"hydra.run.dir={run_dir}"]
    # resume=<run> needs a checkpoint: kill after the first one (step 3); resume=auto also from step 1.
    target = rng.randint(1 if mode == "auto" else 4, STEPS - 2)
    delay = rng.uniform(0, 0.3)
    proc = r.start(first)
    reached = wait_for_step(proc, run_dir, target)
    time.sleep(delay)
    proc.kill()
    _, err = proc.communicate()
    killed_at = ([s for s in logged_steps(run_dir) if s is not None] or [0])[-1]
    resume = ["train", *args, "resume=auto", f"hydra.run.dir={run_dir}"] if mode == "auto" else \
        ["train", f"resume={run_dir}"]
    res = r.run(resume)
    same, detail = compare_final(ref, run_dir) if res["code"] == 0 else (False, f"resume exit {res['code']}")
    steps = logged_steps(run_dir)
    ok = reached and proc.returncode == -signal.SIGKILL and res["code"] == 0 and same
    return {"case": f"{name} #{i} kill at step {killed_at}, {'resume=auto' if mode == 'auto' else 'resume=<run>'}",
            "config": name, "command": [cmd_text(first), f"SIGKILL after step {target} + {delay:.2f}s",
                                        cmd_text(resume)],
            "expected": "resume exit 0; last.pt bitwise equal to the uninterrupted run; metrics steps 1..N",
            "observed": {"reached_step": reached, "killed_after_step": killed_at, "resume_exit": res["code"],
                         "weights": detail, "metrics_steps_contiguous": steps == list(range(1, STEPS + 1)),
                         "stderr_tail": tail(res["err"]) if res["code"] != 0 else "",
                         "first_run_stderr_tail": "" if reached else tail(err)},
            "ok": ok}


# ----------------------------------------------------------------------------------------------------------
# kills during checkpoint writes


def kill_write_trial(r: Runner, i: int, rng: random.Random) -> dict:
    run_dir = r.work / "writes" / f"w_{i:02d}"
    ckpts = run_dir / "checkpoints"
    args = ["train", *WRITES, f"hydra.run.dir={run_dir}"]
    on_tmp = i % 2 == 0
    proc = r.start(args)
    how, hit = "", False
    if not wait_for_step(proc, run_dir, 2):
        proc.kill()
        _, err = proc.communicate()
        return {"case": f"write kill #{i}", "command": [cmd_text(args)], "expected": "training starts",
                "observed": {"error": "never reached step 2", "stderr_tail": tail(err)}, "ok": False}
    if on_tmp:  # the instant a checkpoint temp file appears (skipping a random number of them)
        skip, seen, deadline = rng.randint(0, 6), 0, time.time() + 120
        how = f"SIGKILL at the {skip + 1}th checkpoint temp file seen"
        while time.time() < deadline and proc.poll() is None:
            try:
                tmps = [n for n in os.listdir(ckpts) if n.endswith(".tmp")]
            except OSError:
                tmps = []
            if tmps:
                if seen >= skip:
                    proc.kill()
                    hit = True
                    break
                seen += 1
                while proc.poll() is None and any(n.endswith(".tmp") for n in os.listdir(ckpts)):
                    time.sleep(0.002)
            time.sleep(0.002)
    else:
        delay = rng.uniform(0.0, 3.0)
        how = f"SIGKILL {delay:.2f}s after step 2"
        time.sleep(delay)
    proc.kill()
    proc.communicate()
    names = sorted(os.listdir(ckpts)) if ckpts.is_dir() else []
    tmps = [n for n in names if n.endswith(".tmp")]
    problems, notes, steps = [], [], {}
    for n in names:
        if not n.endswith(".pt"):
            continue
        try:
            steps[n] = int(load_checkpoint(ckpts / n)["step"])
        except Exception as exc:  # noqa: BLE001 - a file that does not load is the finding
            problems.append(f"{n} does not load: {type(exc).__name__}: {str(exc)[:160]}")
    numbered = sorted(v for k, v in steps.items() if k.startswith("step_"))
    for k, v in steps.items():
        if k.startswith("step_") and int(k[5:11]) != v:
            problems.append(f"{k} holds step {v}")
    if "last.pt" not in steps:
        problems.append("last.pt missing or unreadable")
    elif numbered and steps["last.pt"] != numbered[-1]:
        # Killed between step_N.pt and last.pt: last.pt is the previous one, whole, and step_N.pt holds N.
        lagging = steps["last.pt"] == numbered[-1] - 1 and ".last.pt.tmp" in names
        (notes if lagging else problems).append(f"last.pt is step {steps['last.pt']} but the newest step file is "
                                                f"{numbered[-1]}")
    if numbered != list(range(1, len(numbered) + 1)):
        problems.append(f"step files not contiguous from 1: {numbered[:3]}..{numbered[-3:]}")
    logged = [s for s in logged_steps(run_dir) if s is not None]
    if logged and numbered and logged[-1] - numbered[-1] > 1:
        problems.append(f"logged step {logged[-1]} but newest checkpoint {numbered[-1]}")
    return {"case": f"write kill #{i} ({'temp file' if on_tmp else 'random time'})", "command": [cmd_text(args), how],
            "expected": "every *.pt present loads; last.pt whole and the newest; step files 1..k, none lost",
            "observed": {"checkpoints": len(numbered), "last_step": steps.get("last.pt"),
                         "temp_files_left": tmps, "killed_mid_write": hit or bool(tmps), "problems": problems,
                         "notes": notes},
            "ok": not problems}


# ----------------------------------------------------------------------------------------------------------
# signals


def signal_trial(r: Runner, sig: signal.Signals, ref: Path, rng: random.Random) -> dict:
    args = CONFIGS["dcgan"]
    run_dir = r.work / "signals" / sig.name
    first = ["train", *args, f"hydra.run.dir={run_dir}"]
    target = rng.randint(2, STEPS - 3)
    proc = r.start(first)
    reached = wait_for_step(proc, run_dir, target)
    proc.send_signal(sig)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    stop_ok = proc.returncode == 128 + sig and f"stopped by {sig.name}" in err and "Traceback" not in err
    resume = ["train", *args, "resume=auto", f"hydra.run.dir={run_dir}"]
    res = r.run(resume)
    same, detail = compare_final(ref, run_dir) if res["code"] == 0 else (False, f"resume exit {res['code']}")
    return {"case": f"{sig.name} after step {target}", "command": [cmd_text(first), f"{sig.name} after step {target}",
                                                                   cmd_text(resume)],
            "expected": f"exit {128 + sig}, 'stopped by {sig.name}', no traceback; resume bitwise identical",
            "observed": {"reached_step": reached, "exit": proc.returncode, "stderr_tail": tail(err, 400),
                         "resume_exit": res["code"], "weights": detail},
            "ok": reached and stop_ok and res["code"] == 0 and same}


def startup_sigint_trial(r: Runner, delay: float) -> dict:
    run_dir = r.work / "signals" / f"startup_{delay}"
    args = ["train", *CONFIGS["dcgan"], f"hydra.run.dir={run_dir}"]
    proc = r.start(args)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    return {"case": f"SIGINT {delay}s into start-up", "command": [cmd_text(args), f"SIGINT after {delay}s"],
            "expected": "exit 130, at most one stderr line, no traceback",
            "observed": {"exit": proc.returncode, "stderr_lines": len(lines), "stderr_tail": tail(err, 400),
                         "stdout_tail": tail(out, 200)},
            "ok": proc.returncode == 130 and len(lines) <= 1 and "Traceback" not in err}


# ----------------------------------------------------------------------------------------------------------
# bad inputs and crafted files


@dataclass
class Case:
    name: str
    args: list[str]
    crafted: bool = False
    marker: Path | None = None
    watch: list[Path] = field(default_factory=list)  # besides the fixtures
    preexec: object = None
    timeout: float = 240
    concurrent: int = 1  # >1: start this many at once; one may succeed, every other is refused


class Payload:
    """A pickle that runs os.system(command) when loaded."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def snapshot(paths: list[Path]) -> dict:
    out = {}
    for root in paths:
        if root.is_file():
            files = [root]
        elif root.is_dir():
            files = [p for p in root.rglob("*") if p.is_file()]
        else:
            continue
        for p in files:
            try:
                out[str(p)] = hashlib.sha1(p.read_bytes()).hexdigest()
            except OSError:
                out[str(p)] = "unreadable"
    return out


def png(path: Path, size=(16, 16), mode="RGB", seed=0) -> None:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "L": 1}[mode]
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if channels == 1 else arr, mode).save(path)


def image_folder(root: Path, name: str, n: int = 16, labels=None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(n):
        png(folder / f"img{i:03d}.png", seed=i)
    if labels is not None:
        (folder / "dataset.json").write_text(json.dumps({"labels": [[f"img{i:03d}.png", lab]
                                                                    for i, lab in enumerate(labels)]}))
    return folder


def craft_checkpoint(src: Path, dst: Path, edit) -> Path:
    ckpt = torch.load(src, weights_only=True)
    edit(ckpt)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    torch.load(dst, weights_only=True)  # the crafted file passes torch's own safe loading
    return dst


def build_cases(r: Runner, fx: Path, finished: Path) -> list[Case]:
    """Every bad input: fixtures under ``fx`` (snapshotted around each case), outputs under work/out."""
    out = r.work / "out"
    last = finished / "checkpoints" / "last.pt"
    mk = r.work / "markers"
    mk.mkdir(exist_ok=True)
    cases: list[Case] = []

    def add(name, *args, **kw):
        cases.append(Case(name, list(args), **kw))

    def o(name):
        return f"hydra.run.dir={out / name}"

    # -- overrides and values
    for name, args in [
        ("unknown config option", ["model=nosuch"]), ("unknown key", ["trainer.nosuch=1"]),
        ("max_steps not an integer", ["trainer.max_steps=abc"]), ("lr not a number", ["optim.lr=fast"]),
        ("negative lr", ["optim.lr=-0.01"]), ("NaN lr", ["optim.lr=nan"]),
        ("inf D lr", ["optim.discriminator.lr=inf"]), ("ckpt_every=-1", ["trainer.ckpt_every=-1"]),
        ("eval_every=-5", ["trainer.eval_every=-5"]), ("max_steps=0", ["trainer.max_steps=0"]),
        ("max_steps negative", ["trainer.max_steps=-3"]), ("seed does not parse", ["trainer.seed=abc"]),
        ("seed a float", ["trainer.seed=1.5"]), ("batch_size=0", ["data.batch_size=0"]),
        ("batch_size negative", ["data.batch_size=-4"]), ("bool not a bool", ["trainer.deterministic=maybe"]),
        ("model/data resolution mismatch", ["data.resolution=32", "model.resolution=64"]),
        ("image model on points data", ["model=mlp"]),
        ("WGAN-GP with batch norm", ["loss=wgan_gp", "model.discriminator.norm=batch"]),
        ("loss of another family", ["loss=wgan", "loss.family=vae"]),
        ("images without a path", ["data=images"]), ("resume of no such run", ["resume=/nonexistent/run"]),
        ("missing interpolation", ["trainer.max_steps=${nosuch.key}"]),
        ("unknown lr decay", ["optim.decay=step"]), ("unknown precision", ["trainer.precision=8"]),
        ("accumulate=0", ["trainer.accumulate=0"]),
        ("batch does not split", ["data.batch_size=63", "trainer.accumulate=2"]),
        ("unknown augmentation", ["model.method.augment=[color,flip]"]),
        ("cuda without a GPU", ["trainer.device=cuda"]) if not torch.cuda.is_available() else
        ("unknown device", ["trainer.device=tpu9"]),
    ]:
        add(name, "train", *TINY, "trainer.max_steps=2", *args, o(name.replace(" ", "_").replace("/", "_")))
    add("NaN lr in a sweep", "train", "-m", *TINY, "trainer.max_steps=2", "optim.lr=1e-4,nan",
        f"hydra.sweep.dir={out / 'sweep_nan'}")
    add("unknown command", "trian")
    add("eval without ckpt", "eval", o("eval_no_ckpt"))
    add("eval n=-5", "eval", f"ckpt={last}", "n=-5", o("eval_n_neg"))
    add("sample n huge (2e12)", "sample", f"ckpt={last}", "n=2000000000000", o("sample_huge"))

    def bounded_memory():  # if genexp did not bound n, the allocation fails here, not on the shared machine
        resource.setrlimit(resource.RLIMIT_AS, (16 << 30, 16 << 30))

    add("sample n=2e7", "sample", f"ckpt={last}", "n=20000000", o("sample_2e7"), timeout=180, preexec=bounded_memory)
    add("sample seeds do not parse", "sample", f"ckpt={last}", "seeds=a-b", o("sample_seeds"))
    add("sample seed does not parse", "sample", f"ckpt={last}", "seed=xyz", o("sample_seed"))
    add("sample class of an unconditional model", "sample", f"ckpt={last}", "class=3", o("sample_class"))
    add("eval on data of another resolution", "eval", f"ckpt={last}", "data=digits", "data.resolution=32",
        o("eval_res"))
    add("project without a target file", "project", f"ckpt={last}", f"target={fx / 'nope.png'}", o("proj_nt"))

    # -- checkpoints: missing, corrupt, foreign, truncated
    ck = fx / "ckpts"
    ck.mkdir()
    (ck / "torn.pt").write_bytes(b"PK\x03\x04 torn")
    (ck / "empty.pt").write_bytes(b"")
    (ck / "random.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    (ck / "text.pt").write_text("not a checkpoint\n")
    (ck / "truncated.pt").write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    torch.save({"state_dict": {"w": torch.zeros(2)}}, ck / "foreign.pt")
    (ck / "adir.pt").mkdir()
    for f in ("missing", "torn", "empty", "random", "text", "truncated", "foreign", "adir"):
        add(f"sample ckpt={f}", "sample", f"ckpt={ck / (f + '.pt')}", o(f"s_{f}"))
    for f in ("missing", "truncated", "foreign"):
        add(f"eval ckpt={f}", "eval", f"ckpt={ck / (f + '.pt')}", o(f"e_{f}"))
    for f in ("torn", "truncated", "foreign"):
        add(f"train resume={f}", "train", f"resume={ck / (f + '.pt')}", o(f"r_{f}"))
    add("train init=foreign", "train", *TINY, "trainer.max_steps=2", f"init={ck / 'foreign.pt'}", o("init_foreign"))
    add("init= of the wrong resolution", "train", *TINY, "trainer.max_steps=2", f"init={last}",
        "data.resolution=32", o("init_res"))

    # -- image folders and labels
    imgs = fx / "images"
    folder_cases = []
    f = image_folder(imgs, "zero_byte")
    (f / "img000.png").write_bytes(b"")
    folder_cases.append(("0-byte PNG", f))
    f = image_folder(imgs, "one_pixel")
    png(f / "img000.png", size=(1, 1))
    folder_cases.append(("1-pixel image among 16-pixel", f))
    f = image_folder(imgs, "mixed_size")
    for i in range(8):
        png(f / f"img{i:03d}.png", size=(24, 24), seed=i)
    folder_cases.append(("mixed sizes", f))
    f = image_folder(imgs, "gray_rgb")
    for i in range(8):
        png(f / f"img{i:03d}.png", mode="L", seed=i)
    folder_cases.append(("gray and RGB mixed", f))
    f = image_folder(imgs, "corrupt")
    (f / "img003.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    folder_cases.append(("corrupt PNG", f))
    f = imgs / "no_images"
    f.mkdir()
    (f / "notes.txt").write_text("not an image")
    folder_cases.append(("folder without images", f))
    folder_cases.append(("label 10^9", image_folder(imgs, "huge_label", labels=[0] * 15 + [10 ** 9])))
    folder_cases.append(("negative label", image_folder(imgs, "neg_label", labels=[0] * 15 + [-1])))
    f = image_folder(imgs, "bad_json")
    (f / "dataset.json").write_text('{"labels": [["img000.png", 0], ')
    folder_cases.append(("malformed dataset.json", f))
    with zipfile.ZipFile(imgs / "ok.zip", "w") as z:
        for i in range(16):
            z.write(imgs / "huge_label" / f"img{i:03d}.png", f"img{i:03d}.png")
    (imgs / "torn.zip").write_bytes((imgs / "ok.zip").read_bytes()[:300])
    (imgs / "ok.zip").unlink()
    folder_cases.append(("torn zip", imgs / "torn.zip"))
    # The labels once with the documented model.num_classes=${data.num_classes}, once with numbers.
    folder_cases += [(name + " (num_classes=10)", path) for name, path in folder_cases if "label" in name]
    for name, path in folder_cases:
        cond = [] if "label" not in name else ["data.num_classes=10", "model.num_classes=10"] if "=10" in name \
            else ["model.num_classes=${data.num_classes}"]
        add(f"images: {name}", "train", *TINY, "trainer.max_steps=2", "data=images", f"data.path={path}",
            "data.resolution=16", "data.batch_size=16", "data.num_workers=0", *cond,
            o("img_" + name.replace(" ", "_").replace("^", "").replace("/", "").replace("(", "").replace(")", "")
              .replace("=", "")))
    add("mnist files missing offline", "train", *TINY, "trainer.max_steps=2", "data=mnist",
        f"data.root={fx / 'no_mnist'}", "data.download=false", o("mnist"))

    # -- run directories
    (fx / "a_file").write_text("x")
    add("run dir under a file", "train", *TINY, "trainer.max_steps=2", f"hydra.run.dir={fx / 'a_file' / 'run'}")
    add("unwritable run dir", "train", *TINY, "trainer.max_steps=2", "hydra.run.dir=/proc/genexp_hostile_run")
    add("too-long run dir", "train", *TINY, "trainer.max_steps=2", "hydra.run.dir=" + str(out / ("x" * 300)))
    add("train into a dir holding a finished run", "train", *TINY, "trainer.max_steps=2", "trainer.seed=5",
        f"hydra.run.dir={finished}")
    add("resume of a finished run with another model", "train", f"resume={finished}", "model=stylegan2")
    add("resume of a finished run with other channels", "train", f"resume={finished}", f"trainer.max_steps={STEPS + 2}",
        "model.generator.base_channels=16")
    add("branch from a finished checkpoint", "train", f"resume={last}", o("branch"))
    copy = r.work / "copies" / "torn_all"
    shutil.copytree(finished, copy)
    for p in (copy / "checkpoints").glob("*.pt"):
        p.write_bytes(p.read_bytes()[:1000])
    add("resume=auto with every checkpoint torn", "train", *CONFIGS["dcgan"], f"trainer.max_steps={STEPS + 2}",
        "resume=auto", f"hydra.run.dir={copy}", watch=[copy])
    copy = r.work / "copies" / "full_disk"
    shutil.copytree(finished, copy)

    def small_disk():  # a disk that takes no file over 1000 bytes
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    add("full disk for small files on resume", "train", f"resume={copy}", f"trainer.max_steps={STEPS + 2}",
        watch=[copy], preexec=small_disk)
    add("two trains in one run dir at once", "train", *TINY, "trainer.max_steps=6", o("two_at_once"),
        concurrent=2)

    # -- crafted files: each payload would write its marker
    cr = fx / "crafted"

    def savetxt(marker):
        return {"_target_": "numpy.savetxt", "fname": str(marker), "X": [1.0]}

    for command, extra in [("eval", ["n=8"]), ("sample", ["n=4"]), ("project", [f"target={fx / 'nope.png'}"])]:
        m = mk / f"savetxt_{command}"
        bad = craft_checkpoint(last, cr / f"savetxt_{command}.pt",
                               lambda c, m=m: c["config"]["model"].__setitem__("generator", savetxt(m)))
        add(f"stored target numpy.savetxt ({command})", command, f"ckpt={bad}", *extra, o(f"c_{command}"),
            crafted=True, marker=m)
    # numpy.load with allow_pickle on a pickle payload
    m = mk / "npload"
    (cr / "payload.npy").write_bytes(pickle.dumps(Payload(f"touch {m}")))
    bad = craft_checkpoint(last, cr / "npload.pt", lambda c: c["config"]["model"].__setitem__(
        "generator", {"_target_": "numpy.load", "file": str(cr / "payload.npy"), "allow_pickle": True}))
    add("stored target numpy.load(allow_pickle) (sample)", "sample", f"ckpt={bad}", o("c_npload"), crafted=True,
        marker=m)
    m = mk / "nested"
    bad = craft_checkpoint(last, cr / "nested.pt", lambda c: c["config"].__setitem__(
        "loss", {**c["config"]["loss"], "d_regularizers": [{"inner": {"_target_": "os.system",
                                                                      "command": f"touch {m}"}}]}))
    add("nested os.system target in a list (sample)", "sample", f"ckpt={bad}", o("c_nested"), crafted=True, marker=m)
    bad = craft_checkpoint(last, cr / "resolver.pt", lambda c: c["config"].__setitem__("name", "${oc.env:HOME}"))
    add("resolver in a stored config (sample)", "sample", f"ckpt={bad}", o("c_resolver"), crafted=True,
        marker=mk / "never")
    for i, override in enumerate(["model.generator._target_=numpy.savetxt",
                                  "+model.generator={_target_:numpy.savetxt,fname:MARKER,X:[1.0]}",
                                  "+hydra.callbacks.x._target_=numpy.savetxt",
                                  "hydra.run.dir=MARKER", "hydra/launcher=local"]):
        m = mk / f"override_{i}"
        copy = r.work / "copies" / f"override_{i}"
        craft_checkpoint(last, copy / "checkpoints" / "last.pt", lambda c, ov=override, m=m: c.__setitem__(
            "overrides", [*c["overrides"], ov.replace("MARKER", str(m))]))
        add(f"stored override {override.split('=')[0]} on resume", "train", f"resume={copy}",
            f"trainer.max_steps={STEPS + 2}", crafted=True, marker=m, watch=[copy])
    m = mk / "pkl"
    (cr / "payload.pkl").write_bytes(pickle.dumps(Payload(f"touch {m}")))
    for command, extra in [("sample", []), ("eval", []), ("convert", [])]:
        if command == "convert":
            add("convert of a pickle payload", "convert", str(cr / "payload.pkl"), str(out / "conv.pt"),
                crafted=True, marker=m)
        else:
            add(f"{command} ckpt=payload.pkl", command, f"ckpt={cr / 'payload.pkl'}", *extra, o(f"pkl_{command}"),
                crafted=True, marker=m)
    add("train resume=payload.pkl", "train", f"resume={cr / 'payload.pkl'}", o("pkl_resume"), crafted=True, marker=m)
    add("train init=payload.pkl", "train", *TINY, "trainer.max_steps=2", f"init={cr / 'payload.pkl'}", o("pkl_init"),
        crafted=True, marker=m)
    m2 = mk / "pt_pickle"
    with open(cr / "payload.pt", "wb") as fh:
        torch.save({"step": Payload(f"touch {m2}")}, fh)
    add("sample ckpt=.pt holding a pickle payload", "sample", f"ckpt={cr / 'payload.pt'}", o("ptpkl"), crafted=True,
        marker=m2)
    m3 = mk / "cifar"
    cifar = fx / "cifar" / "cifar-10-batches-py"
    cifar.mkdir(parents=True)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (cifar / name).write_bytes(pickle.dumps(Payload(f"touch {m3}")))
    add("CIFAR-10 batch holding a pickle payload", "train", *TINY, "trainer.max_steps=2", "data=cifar10",
        f"data.root={fx / 'cifar'}", "data.download=false", o("cifar"), crafted=True, marker=m3)
    return cases


def check_case(r: Runner, case: Case, watch: list[Path]) -> dict:
    before = snapshot(watch + case.watch)
    if case.concurrent > 1:
        procs = [r.start(case.args) for _ in range(case.concurrent)]
        results = []
        for p in procs:
            try:
                o_, e_ = p.communicate(timeout=case.timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                o_, e_ = p.communicate()
            results.append({"code": p.returncode, "out": o_, "err": e_})
        winners = [x for x in results if x["code"] == 0]
        losers = [x for x in results if x["code"] != 0]
        lines = [[ln for ln in x["err"].splitlines() if ln.strip()] for x in losers]
        ok = (len(winners) == 1 and all(x["code"] == 2 for x in losers) and all(len(ls) == 1 for ls in lines)
              and not any("Traceback" in x["err"] for x in losers))
        return {"case": case.name, "command": [cmd_text(case.args) + f"  (x{case.concurrent} at once)"],
                "expected": "one trains (exit 0), every other: exit 2, one stderr line, no traceback",
                "observed": {"exits": [x["code"] for x in results],
                             "loser_stderr": [tail(x["err"], 400) for x in losers]},
                "ok": ok, "crafted": False}
    res = r.run(case.args, timeout=case.timeout, preexec=case.preexec)
    after = snapshot(watch + case.watch)
    changed = sorted(k for k in before if after.get(k) != before[k])
    lines = [ln for ln in res["err"].splitlines() if ln.strip()]
    marker_ran = bool(case.marker and case.marker.exists())
    problems = []
    if res["code"] != 2:
        problems.append(f"exit {res['code']}")
    if len(lines) != 1:
        problems.append(f"{len(lines)} stderr lines")
    if "Traceback" in res["err"] + res["out"]:
        problems.append("traceback")
    if changed:
        problems.append(f"changed on disk: {changed[:5]}")
    if marker_ran:
        problems.append("PAYLOAD RAN (marker file exists)")
    return {"case": case.name, "command": [cmd_text(case.args)],
            "expected": "exit 2, one stderr line, no traceback, nothing on disk changed"
                        + ("; payload marker absent" if case.marker else ""),
            "observed": {"exit": res["code"], "stderr_lines": len(lines),
                         "stderr": lines[0][:300] if len(lines) == 1 else tail(res["err"], 800),
                         "changed_files": changed, "marker_exists": marker_ran, "wall_s": res["wall_s"],
                         "problems": problems},
            "ok": not problems, "crafted": case.crafted, "refused": res["code"] == 2 and not marker_ran}


# ----------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a small subset of each category (smoke run)")
    parser.add_argument("--dcgan", type=int, default=20, help="DCGAN kill/resume trials")
    parser.add_argument("--wgan", type=int, default=3, help="WGAN-GP kill/resume trials")
    parser.add_argument("--writes", type=int, default=20, help="kills during checkpoint writes")
    parser.add_argument("--seed", type=int, default=None, help="kill timings (default: random)")
    parser.add_argument("--out", default=str(REPO / "docs" / "bench" / "hostile.json"))
    parser.add_argument("--kill-min", type=float, default=10.0,
                        help="minutes for the kill trials: none starts that would end past it (0: no limit)")
    parser.add_argument("--only-kills", action="store_true", help="the kill trials alone (more of them)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    if args.quick:
        args.dcgan, args.wgan, args.writes = 3, 1, 3
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2 ** 31)
    rng = random.Random(seed)
    work = Path(tempfile.mkdtemp(prefix="genexp-hostile-"))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stopped: the work folder is still removed
    r = Runner(work)
    t0 = time.time()
    planned, stopped_early = {}, None
    results: dict[str, list[dict]] = {"kill_resume": [], "kill_write": [], "signals": [], "bad_input": []}

    def log(section: str, item: dict) -> None:
        results[section].append(item)
        print(f"[{time.time() - t0:6.0f}s] {section:11s} {'ok  ' if item['ok'] else 'FAIL'} {item['case']}"
              + ("" if item["ok"] else f"  -> {json.dumps(item['observed'])[:400]}"), flush=True)

    try:
        refs = {}
        for name in CONFIGS:
            refs[name] = work / "ref" / name
            res = r.run(["train", *CONFIGS[name], f"hydra.run.dir={refs[name]}"])
            if res["code"] != 0:
                sys.exit(f"bench_hostile: the reference {name} run failed: {tail(res['err'])}")
        # The kill trials first, interleaved, until the counts are reached or their time budget would be passed.
        queue = []
        for k in range(max(args.dcgan, args.writes, args.wgan * 4)):
            if k < args.dcgan:
                queue.append(("dcgan", k))
            if k < args.writes:
                queue.append(("write", k))
            if k % 4 == 1 and k // 4 < args.wgan:
                queue.append(("wgan_gp", k // 4))
        longest, k0 = 0.0, time.time()
        planned = {"dcgan": args.dcgan, "wgan_gp": args.wgan, "writes": args.writes}
        for kind, i in queue:
            if args.kill_min and time.time() - k0 + longest > args.kill_min * 60:
                stopped_early = f"kill-trial budget of {args.kill_min} min reached: {kind} #{i} and later not run"
                print(stopped_early, flush=True)
                break
            t1 = time.time()
            if kind == "write":
                log("kill_write", kill_write_trial(r, i, rng))
            else:
                log("kill_resume", kill_resume_trial(r, kind, refs[kind], i, "auto" if i % 2 == 0 else "run", rng))
            longest = max(longest, time.time() - t1)
        sigs = [] if args.only_kills else [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1]
        for sig in sigs[:2] if args.quick else sigs:
            log("signals", signal_trial(r, sig, refs["dcgan"], rng))
        for delay in () if args.only_kills else (1.0,) if args.quick else (1.0, 3.0):
            log("signals", startup_sigint_trial(r, delay))

        fx = work / "fixtures"
        finished = fx / "finished"
        shutil.copytree(refs["dcgan"], finished)
        cases = [] if args.only_kills else build_cases(r, fx, finished)
        if args.quick:
            plain = [c for c in cases if not c.crafted]
            cases = plain[::12] + [c for c in cases if c.crafted][::4]
        for case in cases:
            log("bad_input", check_case(r, case, [fx]))

    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    def count(items, key="ok"):
        return sum(bool(x[key]) for x in items)

    by_config = {n: [x for x in results["kill_resume"] if x["config"] == n] for n in CONFIGS}
    crafted = [x for x in results["bad_input"] if x.get("crafted")]
    summary = {
        **{f"kill_resume_{n}": f"{count(v)}/{len(v)}" for n, v in by_config.items()},
        "kill_write": f"{count(results['kill_write'])}/{len(results['kill_write'])}",
        "kill_write_mid_write": sum(x["observed"].get("killed_mid_write", False) for x in results["kill_write"]),
        "signals": f"{count(results['signals'])}/{len(results['signals'])}",
        "bad_input_clean": f"{count(results['bad_input'])}/{len(results['bad_input'])}",
        "crafted_refused": f"{sum(bool(x['refused']) for x in crafted)}/{len(crafted)}",
        "crafted_clean": f"{count(crafted)}/{len(crafted)}",
        "sigkills": len(results["kill_resume"]) + len(results["kill_write"]),
    }
    report = {"command": "python scripts/bench_hostile.py" + (" --quick" if args.quick else "")
              + f" --dcgan {args.dcgan} --wgan {args.wgan} --writes {args.writes} --seed {seed}"
              + f" --kill-min {args.kill_min}" + (" --only-kills" if args.only_kills else ""),
              "quick": args.quick, "seed": seed, "torch": torch.__version__, "wall_s": round(time.time() - t0),
              "genexp_processes": r.procs, "planned_trials": planned,
              "budget_stop": stopped_early, "summary": summary, "results": results}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print()
    print(f"{'measure':28s} result")
    for k, v in summary.items():
        print(f"{k:28s} {v}")
    failing = [(s, x) for s, items in results.items() for x in items if not x["ok"]]
    for section, x in failing:
        print(f"FAIL {section}: {x['case']}\n     {x['command'][0][:300]}\n     {json.dumps(x['observed'])[:600]}")
    print(f"wrote {out} ({report['wall_s']} s, {r.procs} genexp processes)")


if __name__ == "__main__":
    main()
