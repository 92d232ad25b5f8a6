"""`genexp <command> --help` reads conf/'s yaml text (no torch, no Hydra) and documents every key with
its comment; mistyped keys, options, flags and commands get the nearest known name."""

from __future__ import annotations

import subprocess
import sys

import pytest

from genexp.config import help as config_help
from genexp.config.suggest import did_you_mean, unknown_flag
from tests.conftest import CONF, compose
from tests.test_bad_input import one_error_line


def keys_of(cfg: dict, prefix=""):
    for k, v in cfg.items():
        path = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            yield from keys_of(v, path + ".")
        else:
            yield path


@pytest.mark.parametrize("command,overrides", [
    ("train", []), ("train", ["model=stylegan2", "loss=hinge"]), ("train", ["experiment=edm_digits"]),
    ("train", ["loss=wgan_gp", "model=vae"]), ("train", ["experiment=stylegan2_ffhq256"]),
    ("eval", []), ("sample", []), ("project", []),
])
def test_help_lists_every_key_hydra_composes(command, overrides):
    """The yaml reading agrees with Hydra's composition: every key of the composed config (but how objects
    are built, _target_ and friends) shows in the help, under the same dotted name."""
    from omegaconf import OmegaConf, open_dict

    cfg = compose(command, overrides)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    composed = {k for k in keys_of(OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False))
                if not config_help._internal(k) and k not in ("task_name", "about")}
    shown = set(config_help.all_keys(CONF, command, overrides))
    missing = {k for k in composed - shown if not any(k.startswith(s + ".") for s in shown)}
    assert not missing, sorted(missing)


def test_help_text_carries_the_yaml_comments_and_only_the_commands_groups():
    train = " ".join(config_help.render(CONF, "train", []).split())  # wrapped to the terminal's width
    assert "trainer.max_steps=3000" in train and "Steps count generator updates for GANs" in train
    assert "hydra/launcher" in train and "*dcgan" in train
    assert "optim.betas=[0.5, 0.999]" in train
    edm = " ".join(config_help.render(CONF, "train", ["experiment=edm_digits"]).split())
    assert "*edm_small" in edm and "model.family=diffusion" in edm
    evaluation = config_help.render(CONF, "eval", [])
    groups = evaluation.split("Keys (")[0]
    assert "metrics" in groups and "model " not in groups and "loss " not in groups and "optim " not in groups


def test_help_imports_neither_torch_nor_hydra():
    code = ("import sys; from genexp.cli import main; main(['train', '--help']); "
            "assert not {'torch', 'hydra', 'omegaconf'} & set(sys.modules), sorted(sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "trainer.max_steps" in proc.stdout


def test_did_you_mean():
    assert did_you_mean("trian", ["train", "eval"]) == " (did you mean train?)"
    assert did_you_mean("xyz", ["train", "eval"]) == ""
    keys = ["trainer.max_steps", "trainer.seed", "optim.lr"]
    assert "trainer.max_steps" in did_you_mean("trainer.max_step", keys, key=lambda k: k.rsplit(".", 1)[-1])
    assert "trainer.max_steps" in did_you_mean("max_steps", keys, key=lambda k: k.rsplit(".", 1)[-1])
    assert unknown_flag(["--hlep"]) == "unknown option --hlep (did you mean --help?)"
    assert unknown_flag(["-m", "--cfg", "job", "trainer.seed=-1", "~key"]) is None


def test_mistakes_get_the_nearest_name(run, tmp_path):
    line = one_error_line(run("train", "trainer.max_step=3", f"hydra.run.dir={tmp_path / 'a'}"))
    assert "unknown key trainer.max_step (did you mean trainer.max_steps" in line and "+trainer.max_step=" in line
    line = one_error_line(run("train", "model=stylegan", f"hydra.run.dir={tmp_path / 'b'}"))
    assert line.startswith("genexp: error: model=stylegan: no such option (did you mean stylegan2")
    assert "did you mean --help?" in one_error_line(run("eval", "--hlep"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
