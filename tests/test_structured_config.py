"""trainer, data and optim options merge onto dataclass schemas (genexp/config/schemas.py): Hydra itself
refuses a wrong type, genexp says so in one line, the rules a type cannot say live beside their component,
and what a run stores (checkpoints, resume) stays plain data."""

from __future__ import annotations

import dataclasses
import typing

import pytest
import torch
from omegaconf import OmegaConf

from genexp.config import schemas
from genexp.errors import UserError

from .conftest import CONF, TINY, compose

SCHEMA_GROUPS = ("trainer", "data", "optim")


def hydra_compose(overrides: list[str]):
    """Hydra's compose API alone: none of genexp's checks before or after it."""
    from hydra import compose as plain_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return plain_compose("train", overrides=overrides)


@pytest.mark.parametrize("override, key", [
    ("trainer.max_steps=abc", "trainer.max_steps"),
    ("trainer.keep_best=maybe", "trainer.keep_best"),
    ("data.batch_size=1.5", "data.batch_size"),
    ("optim.lr=fast", "optim.lr"),
    ("optim.betas=[0.5,abc]", "optim.betas[1]"),
])
def test_hydra_itself_refuses_a_wrong_type(override, key):
    from hydra.errors import ConfigCompositionException
    from omegaconf.errors import ValidationError

    with pytest.raises(ConfigCompositionException) as info:
        hydra_compose([override])
    cause = info.value.__cause__
    assert isinstance(cause, ValidationError) and cause.full_key == key


def yaml_keys(group: str, option: str) -> set[str]:
    """The top-level keys an option's yaml text writes, with the sibling options it extends."""
    raw = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
    keys = set(raw) - {"defaults"}
    for base in raw.get("defaults", []):
        if isinstance(base, str) and (CONF / group / f"{base}.yaml").is_file():
            keys |= yaml_keys(group, base)
    return keys


OPTIONS = [(group, p.stem) for group in SCHEMA_GROUPS for p in sorted((CONF / group).glob("*.yaml"))]


@pytest.mark.parametrize("group, option", OPTIONS)
def test_every_option_composes_onto_a_schema_with_exactly_its_keys(group, option):
    """Each option's node is typed by a dataclass whose fields are the keys its yaml writes: a field more
    would add a key to every run's config (and the reference statistics' cache key), one fewer fails."""
    cfg = compose("train", [f"{group}={option}"])
    schema = OmegaConf.get_type(cfg[group])
    assert dataclasses.is_dataclass(schema), (group, option, schema)
    assert {f.name for f in dataclasses.fields(schema)} == yaml_keys(group, option)


def test_types_come_from_the_schema_not_the_yaml_text():
    """A value the yaml writes as an integer lands as the schema's float, and a choice stays a str."""
    cfg = compose("train", ["trainer.max_time_s=60", "trainer.precision=16", "optim.betas=[0,1]"])
    assert cfg.trainer.max_time_s == 60.0 and isinstance(cfg.trainer.max_time_s, float)
    assert cfg.trainer.precision == "16"
    assert [type(b) for b in cfg.optim.betas] == [float, float]


@pytest.mark.parametrize("override, line", [
    ("trainer.max_steps=abc", "trainer.max_steps=abc: expected an integer (the default is 3000)"),
    ("data.batch_size=1.5", "data.batch_size=1.5: expected an integer (the default is 64)"),
    ("optim.lr=fast", "optim.lr=fast: expected a number (the default is 0.0002)"),
    ("optim.betas=0.5", "optim.betas=0.5: expected a list of numbers (the default is [0.5, 0.999])"),
    ("trainer.keep_last=many", "trainer.keep_last=many: expected an integer or null (the default is null)"),
    ("trainer.keep_best=maybe", "trainer.keep_best=maybe: expected true or false"),
])
def test_a_refused_type_reads_as_one_line(override, line):
    with pytest.raises(UserError) as info:
        compose("train", [override])
    assert str(info.value) == line


def validate(overrides: list[str]):
    from genexp.config.prepare import validate as genexp_validate

    genexp_validate("train", overrides, CONF, multirun=False)


@pytest.mark.parametrize("override, expect", [
    # OmegaConf's bool would take these as true; a slip more likely than a choice.
    ("trainer.channels_last=2", "trainer.channels_last=2: expected true or false"),
    ("trainer.compile=yes", "trainer.compile=yes: expected true or false"),
    # A schema's keys are fixed: Hydra adds a + key under open_dict, genexp refuses it.
    ("+trainer.max_step=3", "trainer.max_step does not exist (did you mean trainer.max_steps"),
    ("+optim.momentum=0.9", "optim.momentum does not exist"),
    ("~trainer.seed", "~trainer.seed: every trainer option has this key"),
])
def test_what_genexp_adds_to_the_schemas(override, expect):
    with pytest.raises(UserError) as info:
        validate([override])
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_an_open_mapping_stays_open():
    """A net's optimizer and a data set's constructor take any keyword of their class."""
    validate(["+optim.generator.weight_decay=0.01", "+data.dataset.cache=true"])


@pytest.mark.parametrize("rule, node, expect", [
    ("genexp.training.config", {"on_nan": "sometimes"}, "trainer.on_nan=sometimes: use stop"),
    ("genexp.training.config", {"time_clock": "sundial"}, "trainer.time_clock=sundial: use process"),
    ("genexp.training.config", {"precision": "8"}, "trainer.precision=8: use 32, bf16"),
    ("genexp.data.config", {"kind": "voxels"}, "data.kind=voxels: use image or points"),
    ("genexp.optim.config", {"decay": "step"}, "optim.decay must be one of constant, linear, cosine"),
])
def test_a_nonsense_choice_is_refused_by_its_components_rule(rule, node, expect):
    """A choice is a str to the schema (an Enum member in a checkpoint would be a class the safe unpickler
    refuses); the rule beside the component names the choices."""
    import importlib

    group = rule.split(".")[1].replace("training", "trainer")
    cfg = compose("train", [f"{group}.{k}={v}" for k, v in node.items()])
    check = importlib.import_module(rule).check
    args = {"trainer": (cfg.trainer, cfg.data), "data": (cfg.data,), "optim": (cfg.optim, 100)}[group]
    with pytest.raises(UserError) as info:
        check(*args)
    assert str(info.value).startswith(expect) and "\n" not in str(info.value)


def test_describe_names_types_in_a_users_words():
    from genexp.training.config import TrainerConfig

    hints = typing.get_type_hints(TrainerConfig)
    assert schemas.describe(hints["max_steps"]) == "an integer"
    assert schemas.describe(hints["max_kimg"]) == "a number or null"
    assert schemas.describe(hints["phema"]) == "a mapping of keys"


def test_the_composed_config_stores_as_plain_data(tmp_path):
    """What a checkpoint keeps (OmegaConf.to_container, as training/loop.py writes it) holds no dataclass
    and loads back with weights_only=True."""
    cfg = compose("train", ["optim=adam_wgan_gp", "data=ring", "model=mlp", "trainer.phema.sigma_rels=[0.05]"])
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    stored = OmegaConf.to_container(cfg, resolve=True)

    def plain(node):
        if isinstance(node, dict):
            return type(node) is dict and all(isinstance(k, str) and plain(v) for k, v in node.items())
        if isinstance(node, list):
            return type(node) is list and all(plain(v) for v in node)
        return node is None or type(node) in (bool, int, float, str)

    assert plain(stored)
    torch.save({"config": stored}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["config"] == stored


@pytest.mark.slow  # two CLI runs: ~15 s here
def test_resume_of_a_checkpoint_written_before_the_schemas(run, tmp_path):
    """A checkpoint from before the schemas stores the same keys, but the values as typed then: integers
    where the schema now holds floats, a bare 32 for the precision. Resuming it re-applies those overrides
    onto the schemas."""
    from genexp.training.checkpoint import load_checkpoint, save_checkpoint

    first = tmp_path / "first"
    args = [*TINY, "metrics=[]", "trainer.max_steps=2"]
    assert (res := run("train", *args, f"hydra.run.dir={first}")).code == 0, res
    path = first / "checkpoints" / "last.pt"
    ckpt = load_checkpoint(path)
    old = ["trainer.max_time_s=100000", "trainer.max_kimg=1000", "trainer.precision=32"]
    ckpt["overrides"] = [*ckpt["overrides"], *old]
    ckpt["config"]["trainer"].update(max_time_s=100000, max_kimg=1000, precision=32)
    save_checkpoint(ckpt, path)

    res = run("train", f"resume={path}", "trainer.max_steps=3", f"hydra.run.dir={tmp_path / 'second'}")
    assert res.code == 0, res
    resumed = load_checkpoint(tmp_path / "second" / "checkpoints" / "last.pt")
    assert resumed["step"] == 3
    trainer = resumed["config"]["trainer"]
    assert (trainer["max_time_s"], trainer["max_kimg"], trainer["precision"]) == (100000.0, 1000.0, "32")
