"""Runs survive faults: signals checkpoint and stop, SIGKILL + resume=auto is bit-exact, torn checkpoints
are skipped, a non-finite loss stops with the last good checkpoint intact (or is skipped), a full disk
leaves the previous checkpoint usable, and the keep-last / keep-best policies."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from genexp.training.checkpoint import load_checkpoint

from .conftest import REPO, TINY
from .test_resume import assert_bitwise_equal

RUN = [*TINY, "metrics=[]", "trainer.sample_every=0", "trainer.eval_every=0", "trainer.log_every=1"]


def start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    return subprocess.Popen([sys.executable, "-m", "genexp", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc: subprocess.Popen, log, step: int, timeout: float = 240) -> None:
    """Until metrics.jsonl has logged ``step`` (the process is then somewhere in a later step)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if log.is_file():
            lines = log.read_text().splitlines()
            if lines and json.loads(lines[-1])["step"] >= step:
                return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def method_state(path):
    return torch.load(path, weights_only=True)["method"]


def test_sigterm_writes_a_checkpoint_and_resume_auto_continues(run, tmp_path):
    out = tmp_path / "r"
    proc = start([*RUN, "trainer.max_steps=100000", "trainer.ckpt_every=100000", f"hydra.run.dir={out}"])
    wait_for_step(proc, out / "metrics.jsonl", 3)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM at step" in err and "Traceback" not in err
    ckpt = load_checkpoint(out / "checkpoints/last.pt")
    assert ckpt["step"] >= 3
    res = run("train", *RUN, f"trainer.max_steps={ckpt['step'] + 2}", "resume=auto", f"hydra.run.dir={out}")
    assert res.code == 0, res
    assert f"at step {ckpt['step']}" in res.out
    assert load_checkpoint(out / "checkpoints/last.pt")["step"] == ckpt["step"] + 2


@pytest.mark.slow  # make test under 10 min; bit-exact resume: test_resume, test_gan_phases; signals: the SIGTERM test
def test_sigkill_at_a_random_step_then_resume_auto_is_bit_exact(run, tmp_path):
    args = [*RUN, "trainer.max_steps=16", "trainer.ckpt_every=3", "loss=wgan_gp", "data.batch_size=8"]
    full = tmp_path / "full"
    assert (res := run("train", *args, f"hydra.run.dir={full}")).code == 0, res
    killed = tmp_path / "killed"
    proc = start([*args, "resume=auto", f"hydra.run.dir={killed}"])
    wait_for_step(proc, killed / "metrics.jsonl", random.Random().randint(2, 14))
    proc.kill()
    proc.communicate()
    res = run("train", *args, "resume=auto", f"hydra.run.dir={killed}")
    assert res.code == 0, res
    assert_bitwise_equal(method_state(full / "checkpoints/last.pt"), method_state(killed / "checkpoints/last.pt"))
    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 17))


def test_resume_auto_skips_torn_checkpoints_and_starts_fresh_without_any(run, tmp_path):
    args = [*RUN, "trainer.max_steps=6", "trainer.ckpt_every=2"]
    full = tmp_path / "full"
    assert (res := run("train", *args, f"hydra.run.dir={full}")).code == 0, res
    torn = tmp_path / "torn"
    assert (res := run("train", *args, f"hydra.run.dir={torn}")).code == 0, res
    for name in ("last.pt", "step_000006.pt"):  # torn mid-write by something outside genexp
        path = torn / "checkpoints" / name
        path.write_bytes(path.read_bytes()[:1000])
    res = run("train", *args, "resume=auto", f"hydra.run.dir={torn}")
    assert res.code == 0, res
    assert "skipped checkpoint" in res.out + res.err and "at step 4" in res.out
    assert_bitwise_equal(method_state(full / "checkpoints/last.pt"), method_state(torn / "checkpoints/last.pt"))

    fresh = tmp_path / "fresh"
    res = run("train", *args, "trainer.max_steps=2", "resume=auto", f"hydra.run.dir={fresh}")
    assert res.code == 0 and "resumed" not in res.out, res
    assert "resume=auto looks for checkpoints" in run("train", *args, "resume=auto").err


def tiny_trainer(tmp_path, **trainer):
    from omegaconf import OmegaConf, open_dict

    from genexp.data import build_dataset
    from genexp.data.loader import InfiniteLoader
    from genexp.logger import Console, RunLogger
    from genexp.methods import build_method
    from genexp.training.loop import Trainer

    from .conftest import compose

    cfg = compose("train", [*RUN, "logger=none"])
    with open_dict(cfg):
        del cfg["hydra"]
        cfg.trainer.update(trainer)
    torch.manual_seed(0)
    notes = []
    console = Console("plain")
    console.note = notes.append
    method = build_method(cfg, torch.device("cpu"))
    loader = InfiniteLoader(build_dataset(cfg.data), int(cfg.data.batch_size), seed=0)
    logger = RunLogger(tmp_path, console, OmegaConf.create({}))
    return Trainer(cfg.trainer, method, loader, logger, console, tmp_path), notes


def poison_from(trainer, step: int) -> None:
    """From ``step`` on, D's loss is NaN (as after a divergence)."""
    real_step = trainer.method.train_step

    def train_step(batches, i):
        out = real_step(batches, i)
        if i + 1 >= step:
            out["loss/d"] = out["loss/d"] * float("nan")
        return out

    trainer.method.train_step = train_step


def test_a_nan_loss_stops_before_it_reaches_a_checkpoint(tmp_path):
    from genexp.errors import Stopped

    trainer, _ = tiny_trainer(tmp_path, max_steps=10, ckpt_every=4, log_every=3)
    poison_from(trainer, 6)  # logged at step 6, before the step-8 checkpoint could take the diverged state
    with pytest.raises(Stopped, match="non-finite loss/d by step 6") as stop:
        trainer.fit()
    assert stop.value.code == 3 and "last good checkpoint: step 4" in str(stop.value)
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 4
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["last.pt", "step_000004.pt"]


def test_on_nan_skip_leaves_weights_and_adam_state_untouched():
    from genexp.training.loop import skip_nonfinite_steps

    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    skipped = [0]
    skip_nonfinite_steps(opt, skipped)
    net(torch.ones(1, 3)).sum().backward()
    opt.step()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    state_step = float(opt.state[net.weight]["step"])
    opt.zero_grad()
    (net(torch.ones(1, 3)).sum() * float("nan")).backward()
    opt.step()
    assert skipped == [1] and float(opt.state[net.weight]["step"]) == state_step
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_a_full_disk_keeps_the_previous_checkpoint_and_training_goes_on(tmp_path, monkeypatch):
    import genexp.training.checkpoint as checkpoint

    trainer, notes = tiny_trainer(tmp_path, max_steps=6, ckpt_every=2)
    real_save, calls = torch.save, [0]

    def save(obj, f):
        calls[0] += 1
        if calls[0] in (3, 4):  # the step-4 files: half written, then the disk is full
            f.write(b"partial")
            raise OSError(28, "No space left on device")
        real_save(obj, f)

    monkeypatch.setattr(checkpoint.torch, "save", save)
    trainer.cfg.max_steps = 4
    trainer.fit()
    assert any("not written (No space left on device)" in n and "hold step 2" in n for n in notes)
    assert load_checkpoint(tmp_path / "checkpoints/last.pt")["step"] == 2  # the previous one, whole
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))


def test_keep_last_and_keep_best(tmp_path):
    trainer, _ = tiny_trainer(tmp_path, max_steps=8, ckpt_every=2, keep_last=2)
    trainer.fit()
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["last.pt", "step_000006.pt", "step_000008.pt"]

    best_dir = tmp_path / "b"
    best_dir.mkdir()
    trainer, _ = tiny_trainer(best_dir, max_steps=1, keep_best=True, objective="fid")
    trainer.step = 5
    trainer.keep_best({"fid/x@1k": 10.0})
    assert load_checkpoint(best_dir / "checkpoints/best.pt")["best_metrics"] == {"fid/x@1k": 10.0}
    trainer.step = 6
    trainer.keep_best({"fid/x@1k": 12.0})  # worse: best.pt stays at step 5
    assert load_checkpoint(best_dir / "checkpoints/best.pt")["step"] == 5


def test_a_bf16_autocast_step_runs_on_cpu(tmp_path):
    trainer, _ = tiny_trainer(tmp_path, max_steps=2, ckpt_every=2, precision="bf16")
    seen = []
    real_forward = trainer.method.D.forward

    def forward(*args, **kwargs):
        out = real_forward(*args, **kwargs)
        seen.append(out.dtype)
        return out

    trainer.method.D.forward = forward
    trainer.fit()
    assert torch.bfloat16 in seen
    state = load_checkpoint(tmp_path / "checkpoints/last.pt")["method"]["modules"]
    tensors = [v for v in state.values() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert tensors and all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in tensors)
