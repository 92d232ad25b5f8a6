"""A run dir has one owner, and nothing a second process or a mistake does damages the run in it:
concurrent starts and requeue races are refused, a full disk costs a checkpoint not the run, a resume
that does not fit, a finished branch or max_steps=0 change nothing."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from genexp.training.checkpoint import load_checkpoint

from ..conftest import REPO, TINY, genexp

RUN = [*TINY, "metrics=[]", "trainer.sample_every=0", "trainer.eval_every=0", "trainer.ckpt_every=2"]
LONG = [*RUN, "trainer.max_steps=100000"]


def start(args: list[str], file_limit: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}

    def limit():  # a disk that takes no file larger than file_limit: writes past it fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.Popen([sys.executable, "-m", "genexp", "train", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=limit if file_limit else None)


def finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def train(args: list[str], file_limit: int | None = None) -> tuple[int, str, str]:
    if file_limit is None:  # a fork of the worker's pre-imported server: its own process, without the start-up
        res = genexp("train", *args)
        return res.code, res.out, res.err
    return finish(start(args, file_limit))


def steps_logged(run_dir) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def wait_until(condition, procs, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.1)
    for p in procs:
        p.kill()
    raise AssertionError(f"timed out: {[finish(p, 30) for p in procs]}")


def snapshot(run_dir) -> dict:
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("genexp: error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 2-step run (checkpoints at step 2), copied by each test that changes it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    code, _, err = train([*RUN, f"hydra.run.dir={out}"])
    assert code == 0, err
    return out


def copy_of(run_dir, tmp_path):
    dest = tmp_path / "run"
    shutil.copytree(run_dir, dest)
    return dest


def test_simultaneous_trainings_in_one_run_dir_one_trains_the_others_are_refused(tmp_path):
    out = tmp_path / "r"
    procs = {seed: start([*LONG, f"trainer.seed={seed}", f"hydra.run.dir={out}"]) for seed in (1, 2, 3)}
    wait_until(lambda: sum(p.poll() is not None for p in procs.values()) >= 2, list(procs.values()))
    (winner,) = [seed for seed, p in procs.items() if p.poll() is None]
    wait_until(lambda: (out / "metrics.jsonl").is_file() and len(steps_logged(out)) >= 3, [procs[winner]])
    procs[winner].send_signal(signal.SIGTERM)
    results = {seed: finish(p) for seed, p in procs.items()}
    assert results[winner][0] == 128 + signal.SIGTERM, results[winner]
    for seed, (code, _, err) in results.items():
        if seed != winner:
            line = one_error_line(err)
            assert code == 2
            # refused by the owner's lock, or (started later) because the dir already holds a run
            assert f"is in use by pid {procs[winner].pid}" in line or "already holds an earlier run" in line, line
    # every file is the winner's
    assert f"seed: {winner}" in (out / ".hydra" / "config.yaml").read_text()
    checkpoints = sorted((out / "checkpoints").glob("*.pt"))
    assert checkpoints and all(load_checkpoint(p)["config"]["trainer"]["seed"] == winner for p in checkpoints)
    steps = steps_logged(out)
    assert steps == list(range(1, len(steps) + 1))
    assert json.loads((out / "run.json").read_text())["status"] == "stopped"
    assert not (out / ".genexp.lock").exists()


@pytest.mark.slow  # several CLI runs; the lock itself is covered by test_simultaneous_trainings_... in the default run
def test_two_resume_auto_jobs_at_once_one_continues_the_other_writes_nothing(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    procs = [start([*LONG, "resume=auto", f"hydra.run.dir={out}"]) for _ in range(2)]
    wait_until(lambda: any(p.poll() is not None for p in procs), procs)
    (loser,) = [p for p in procs if p.poll() is not None]
    (owner,) = [p for p in procs if p is not loser]
    code, _, err = finish(loser)
    assert code == 2 and f"is in use by pid {owner.pid}" in one_error_line(err), err
    wait_until(lambda: len(steps_logged(out)) >= 5, [owner])
    owner.send_signal(signal.SIGTERM)
    code, out_text, err = finish(owner)
    assert code == 128 + signal.SIGTERM and "at step 2" in out_text, err
    steps = steps_logged(out)
    assert steps == list(range(1, len(steps) + 1))  # no line lost, none twice
    assert load_checkpoint(out / "checkpoints" / "last.pt")["step"] == steps[-1]


def test_the_run_dir_lock_is_freed_by_the_death_of_its_holder(tmp_path):
    from genexp.rundir import RunDirInUse, claim

    out = tmp_path / "r"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from genexp.rundir import claim; claim(Path(sys.argv[1])); print('held', flush=True); "
                               "time.sleep(600)", str(out)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirInUse, match=f"in use by pid {holder.pid} on host .* \\(since "):
        claim(out)
    holder.kill()  # no release: a crash
    holder.wait()
    claim(out).release()


def test_without_flock_the_lock_file_of_a_dead_process_is_taken_over(tmp_path, monkeypatch):
    import errno
    import fcntl
    import socket

    from genexp.rundir import LOCK_NAME, RunDirInUse, claim

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    out = tmp_path / "r"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))
    held = claim(out)  # the pid is gone: stale
    with pytest.raises(RunDirInUse, match=f"in use by pid {os.getpid()}.*delete"):
        claim(out)
    held.release()
    assert not (out / LOCK_NAME).exists()


def test_a_full_disk_costs_checkpoints_not_the_run(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = (out / "checkpoints" / "last.pt").read_bytes()
    # Continue to step 4 on a "disk" that takes no file as large as half a checkpoint: real failed writes
    # (EFBIG from the kernel, RuntimeError from torch.save), not a faked exception.
    code, text, err = train([f"resume={out}", "trainer.max_steps=4"], file_limit=len(before) // 2)
    assert code == 0, err
    assert "checkpoint step_000004.pt at step 4 not written (File too large)" in err and "training goes on" in err
    assert "Traceback" not in err and "newest checkpoint is step 2" in text
    assert (out / "checkpoints" / "last.pt").read_bytes() == before  # the previous one, whole
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert steps_logged(out) == [1, 2, 3, 4]
    status = json.loads((out / "run.json").read_text())
    assert status["status"] == "done" and status["step"] == 4


@pytest.mark.slow  # make test under 10 minutes; two default-run tests fill the disk (here, test_faults)
def test_a_full_disk_for_small_files_leaves_the_run_as_it_was(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    assert len((out / ".hydra" / "config.yaml").read_bytes()) > 1000
    code, _, err = train([f"resume={out}", "trainer.max_steps=4"], file_limit=1000)
    assert code == 2 and "config.yaml (File too large)" in one_error_line(err), err
    assert snapshot(out) == before


def test_a_resume_that_does_not_fit_changes_nothing(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    before = snapshot(out)
    code, _, err = train([f"resume={out}", "trainer.max_steps=4", "model.generator.base_channels=16"])
    assert code == 2 and "does not fit the model this config builds" in one_error_line(err), err
    assert snapshot(out) == before


def test_resume_auto_stops_when_no_checkpoint_reads_unless_told_to_start_over(finished, tmp_path):
    out = copy_of(finished, tmp_path)
    for path in (out / "checkpoints").glob("*.pt"):
        path.write_bytes(path.read_bytes()[:1000])  # torn by something outside genexp
    before = snapshot(out)
    code, _, err = train([*RUN, "trainer.max_steps=4", "resume=auto", f"hydra.run.dir={out}"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and "Traceback" not in err, err
    assert "none of the 2 checkpoints" in lines[-1] and "resume_from_scratch=true" in lines[-1], err
    assert snapshot(out) == before
    code, text, err = train([*RUN, "trainer.max_steps=4", "resume=auto", "resume_from_scratch=true",
                             f"hydra.run.dir={out}"])
    assert code == 0 and "training from step 0" in err and "resumed" not in text, err
    assert steps_logged(out) == [1, 2, 3, 4]


def test_a_read_error_is_not_a_torn_checkpoint(finished, monkeypatch):
    import errno

    from genexp.training import checkpoint

    def failing_load(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(checkpoint.torch, "load", failing_load)
    with pytest.raises(checkpoint.CheckpointReadError, match="Input/output error.*not a torn file"):
        checkpoint.newest_good_checkpoint(finished / "checkpoints", note=print)


@pytest.mark.slow  # several CLI runs; the lock itself is covered by test_simultaneous_trainings_... in the default run
def test_max_steps_0_and_a_branch_from_a_finished_checkpoint_are_refused(finished, tmp_path):
    before = snapshot(finished)
    fresh = tmp_path / "zero"
    code, _, err = train([*RUN, "trainer.max_steps=0", f"hydra.run.dir={fresh}"])
    assert code == 2 and "trainer.max_steps=0 trains nothing" in one_error_line(err), err
    assert not fresh.exists()

    branch = tmp_path / "branch"
    code, _, err = train([f"resume={finished / 'checkpoints' / 'step_000002.pt'}", f"hydra.run.dir={branch}"])
    line = one_error_line(err)
    assert code == 2 and "is at step 2 and trainer.max_steps=2" in line and "trainer.max_steps=<more than 2>" in line
    assert not branch.exists()

    code, _, err = train([f"resume={finished}"])  # the run itself: nothing to do, and nothing touched
    assert code == 0 and "pass a larger trainer.max_steps" in err, err
    assert snapshot(finished) == before


def test_atomic_writes_keep_the_old_file_and_appends_keep_whole_lines(tmp_path, monkeypatch):
    import errno

    from genexp import files

    target = tmp_path / "run.json"
    files.atomic_write_text(target, "old\n")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(files.os, "fsync", full)
        with pytest.raises(OSError, match="No space"):
            files.atomic_write_text(target, "new\n")
        with pytest.raises(OSError, match="No space"):  # torch's RuntimeError comes out as OSError
            files.save_torch({"x": torch.zeros(3)}, tmp_path / "x.pt")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]

    log = files.AppendFile(tmp_path / "metrics.jsonl")
    log.write_line('{"step": 1}')
    real_write = os.write
    with monkeypatch.context() as m:
        m.setattr(files.os, "write", lambda fd, data: real_write(fd, data[:5]))  # the disk fills mid-line
        with pytest.raises(OSError):
            log.write_line('{"step": 2}')
    log.write_line('{"step": 3}')
    log.close()
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 3}\n'


def test_an_override_with_an_interpolation_is_written_to_hydra_files(tmp_path):
    """model.num_classes=${data.num_classes} (what genexp's own error suggests) in .hydra/ as given."""
    out = tmp_path / "r"
    code, _, err = train([*RUN, "trainer.max_steps=1", "model.num_classes=${data.num_classes}", f"hydra.run.dir={out}"])
    assert code == 0, err
    assert "model.num_classes=${data.num_classes}" in (out / ".hydra" / "overrides.yaml").read_text()
