"""A non-editable install carries conf/, the shipped weights, and runs from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

from .conftest import REPO


def test_regular_install_finds_configs_and_assets(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(".venv", ".git", "outputs", "build", "*.egg-info",
                                                             "__pycache__", ".pytest_cache"))
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(src)], check=True, capture_output=True)
    shutil.rmtree(src)  # nothing may point back into the source tree
    env = {**os.environ, "PYTHONPATH": str(target), "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    res = subprocess.run([sys.executable, "-m", "genexp", "train", "debug=fast", "trainer.max_steps=2",
                          "hydra.run.dir=run"], cwd=work, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert str(target) in subprocess.run([sys.executable, "-c", "import genexp.cli as c; print(c.conf_dir())"],
                                         cwd=work, env=env, capture_output=True, text=True).stdout
    assert (work / "run" / "checkpoints" / "last.pt").is_file()
    assert "fid/digits_lenet@64" in (work / "run" / "metrics.jsonl").read_text()
