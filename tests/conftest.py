"""Shared helpers: run the CLI in a subprocess, compose configs in-process, tiny settings."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Reference statistics the tests compute are cached in a throwaway folder, not the user's cache.
os.environ.setdefault("GENEXP_CACHE", tempfile.mkdtemp(prefix="genexp-test-cache-"))
# Two pytest-xdist workers on two cores: one thread each (and in the CLI runs they start), or torch's
# default of a thread per core oversubscribes the machine several times over.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Nothing is downloaded in tests; Inception is tested with weight files the tests write.
os.environ["GENEXP_OFFLINE"] = "1"
CONF = REPO / "conf"


@pytest.fixture(autouse=True, scope="session")
def _schemas():
    """conf/'s options name their schemas (genexp/config/schemas.py): tests that compose with Hydra's
    API directly need them registered, as genexp's own composition does."""
    from genexp.config.schemas import register

    register()

# Small nets and sample counts: every CLI run below takes seconds.
TINY = [
    "logger=none", "trainer.progress=plain", "trainer.max_steps=2", "trainer.log_every=1",
    "trainer.sample_every=2", "trainer.eval_every=2", "trainer.ckpt_every=2", "trainer.grid_samples=4",
    "trainer.eval_samples=32", "model.generator.base_channels=8", "model.discriminator.base_channels=8",
    "data.batch_size=16",
]


class Result:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code, self.out, self.err = proc.returncode, proc.stdout, proc.stderr

    def __repr__(self) -> str:
        return f"exit {self.code}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"


def genexp(*args: str, cwd: Path | None = None, timeout: int = 300, env: dict | None = None,
           fresh: bool = False) -> Result:
    """`python -m genexp *args`, captured: a fork of this worker's pre-imported server (tests/cli_fork.py)
    unless ``fresh`` (tests of start-up itself) or GENEXP_TEST_FORK=0."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", "WANDB_SILENT": "true", "PYTHONWARNINGS": "ignore",
                **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    for key in [k for k, v in full_env.items() if v is None]:  # None: remove from the environment
        del full_env[key]
    cwd = Path(cwd or REPO)
    if not fresh and os.environ.get("GENEXP_TEST_FORK", "1") != "0":
        forked = _FORK.run(list(args), cwd, full_env, timeout)
        if forked is not None:
            return forked
    proc = subprocess.run([sys.executable, "-m", "genexp", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=full_env)
    return Result(proc)


class _ForkServer:
    """This worker's tests/cli_fork.py server, started on first use; None from run() when it cannot
    serve (then the caller starts a subprocess)."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="genexp-test-fork-"))

    def _start(self) -> bool:
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.cli_fork"], cwd=REPO, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        ready = self.proc.stdout.readline()
        if '"ready"' not in ready:
            self.proc.kill()
            self.proc = None
        return self.proc is not None

    def run(self, argv: list[str], cwd: Path, env: dict, timeout: int) -> Result | None:
        import json

        if (self.proc is None or self.proc.poll() is not None) and not self._start():
            return None
        out, err = self.dir / "out", self.dir / "err"
        request = {"argv": argv, "cwd": str(cwd), "env": env, "out": str(out), "err": str(err), "timeout": timeout}
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            reply = json.loads(self.proc.stdout.readline())
        except (OSError, ValueError):
            self.proc = None
            return None
        if reply.get("timeout"):
            raise subprocess.TimeoutExpired(["genexp", *argv], timeout)
        read = lambda p: p.read_text(errors="replace")  # noqa: E731
        return Result(subprocess.CompletedProcess(argv, reply["code"], read(out), read(err)))


_FORK = _ForkServer()


@pytest.fixture
def run():
    return genexp


def compose(command: str, overrides: list[str]):
    from genexp.config.prepare import compose as _compose

    return _compose(command, overrides, CONF)


OFFICIAL_FIXTURES = REPO.parent / "shared" / "fixtures" / "stylegan2-official"


def official_fixture(name: str) -> dict:
    """One of the outputs NVIDIA's StyleGAN2 code computed (shared/fixtures/stylegan2-official):
    skipped where shared/ is absent, a failure on CI, which always has it."""
    import torch

    path = OFFICIAL_FIXTURES / (name if name.endswith(".pt") else f"{name}.pt")
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"missing fixture {path}: CI has ../shared beside the clone")
        pytest.skip(f"no fixture {path}")
    return torch.load(path, weights_only=True)
