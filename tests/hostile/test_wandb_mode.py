"""W&B never stalls start-up and never overrides what the user set for this run."""

from __future__ import annotations

import socket
import time

import pytest

from genexp.logger.wandb_mode import wandb_mode

from ..conftest import TINY


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for key in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_BASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    return monkeypatch


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: connecting is refused


def test_the_users_mode_wins_over_the_environment(clean_env):
    clean_env.setenv("WANDB_MODE", "online")
    notes = []
    assert wandb_mode("disabled", notes.append) == "disabled"
    assert len(notes) == 1 and "WANDB_MODE=online" in notes[0]
    import os

    assert os.environ["WANDB_MODE"] == "disabled"  # wandb reads it too


def test_auto_takes_the_environment(clean_env):
    clean_env.setenv("WANDB_MODE", "disabled")
    assert wandb_mode("auto", print) == "disabled"


def test_auto_without_credentials_is_offline(clean_env):
    notes = []
    assert wandb_mode("auto", notes.append) == "offline" and notes == []


def test_auto_with_a_key_and_no_server_falls_back_quickly(clean_env):
    clean_env.setenv("WANDB_API_KEY", "x" * 40)
    clean_env.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    notes = []
    start = time.monotonic()
    assert wandb_mode("auto", notes.append) == "offline"
    assert time.monotonic() - start < 10
    assert len(notes) == 1 and "offline" in notes[0]


def test_disabled_on_the_command_line_beats_wandb_mode_offline(run, tmp_path):
    out = tmp_path / "r"
    res = run("train", *[a for a in TINY if not a.startswith("logger=")], "logger=wandb",
              "logger.wandb.mode=disabled", "metrics=[]", f"hydra.run.dir={out}", env={"WANDB_MODE": "offline"})
    assert res.code == 0, res
    assert not (out / "wandb").exists(), "W&B ran although the command line disabled it"
