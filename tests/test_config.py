"""Every option of every config group composes, passes the checks, and resolves."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf, open_dict

from genexp.config.checks import check_composition
from genexp.config.prepare import sweep_variants
from genexp.errors import UserError

from .conftest import CONF, compose

IMAGE_DATA = ["digits", "digits8", "mnist", "fashion_mnist", "stacked_mnist", "cifar10", "images", "ffhq"]
POINT_DATA = ["ring", "grid"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def checked(command: str, overrides: list[str]):
    cfg = compose(command, overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    check_composition(command, cfg)
    return cfg


def test_every_data_option_is_known_here():
    assert sorted(IMAGE_DATA + POINT_DATA) == options("data")


@pytest.mark.parametrize("data", IMAGE_DATA)
def test_image_data_composes_with_dcgan(data):
    extra = ["data.path=/x.zip"] if data in ("images", "ffhq") else []
    cfg = checked("train", [f"data={data}", "model=dcgan", *extra])
    assert cfg.model.resolution == cfg.data.resolution and cfg.data.kind == "image"


@pytest.mark.parametrize("data", POINT_DATA)
def test_point_data_composes_with_mlp(data):
    cfg = checked("train", [f"data={data}", "model=mlp", "metrics=[]"])
    assert cfg.model.dim == cfg.data.dim == 2


@pytest.mark.parametrize("group", ["loss", "optim", "logger", "trainer", "debug"])
def test_group_options_compose(group):
    """Every option composes with a model of its family (GAN options with the default DCGAN)."""
    for option in options(group):
        family = (compose("train", [f"{group}={option}"]).get(group) or {}).get("family", "gan")
        if family != "gan" or (group == "optim" and "generator" not in compose("train", [f"optim={option}"]).optim):
            continue  # the likelihood families' own tests compose these with their models
        cfg = checked("train", [f"{group}={option}"])
        assert cfg is not None


def test_a_likelihood_loss_or_optimizer_on_a_gan_is_refused():
    with pytest.raises(UserError, match="loss=nll is an objective for likelihood models"):
        checked("train", ["loss=nll"])
    with pytest.raises(UserError, match="optim=adam_ml has no 'generator' optimizer"):
        checked("train", ["optim=adam_ml"])


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiment_packs_compose(experiment):
    needs_path = ["data.path=faces.zip"] if "ffhq" in experiment else []  # the user's own image folder or zip
    cfg = checked("train", [f"experiment={experiment}", *needs_path])
    assert cfg.name == experiment


def test_metrics_select_several_and_none():
    assert set(checked("train", ["metrics=[fid,kid,is,lpips]"]).metrics) == {"fid", "kid", "is", "lpips"}
    assert "metrics" not in checked("train", ["metrics=[]"])


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_eval_and_sample_compose(command):
    cfg = checked(command, ["ckpt=x.pt"])
    assert cfg.ckpt == "x.pt"


def test_loss_brings_its_papers_optimizer_unless_the_user_picks_one():
    assert checked("train", ["loss=wgan_gp"]).optim.lr == pytest.approx(1e-4)
    assert list(checked("train", ["loss=wgan_gp"]).optim.discriminator.betas) == [0.5, 0.9]
    assert checked("train", ["loss=wgan_gp", "optim=adam"]).optim.lr == pytest.approx(2e-4)


def test_optim_lr_sets_both_nets_and_ttur_sets_one():
    cfg = checked("train", ["optim.lr=1e-3", "optim.discriminator.lr=4e-3"])
    assert cfg.optim.generator.lr == pytest.approx(1e-3) and cfg.optim.discriminator.lr == pytest.approx(4e-3)


def test_model_follows_data_resolution():
    cfg = checked("train", ["data.resolution=32"])
    assert cfg.model.generator.resolution == 32 and cfg.model.discriminator.resolution == 32


def test_sweep_variants_cover_every_value_once():
    variants = sweep_variants(["loss=ns,wgan_gp", "optim.lr=1e-4,2e-4,3e-4", "trainer.seed=1"])
    seen: dict[str, set] = {}
    for variant in variants:
        for o in variant:
            key, value = o.split("=", 1)
            seen.setdefault(key, set()).add(value if key == "loss" else float(value))
    assert seen == {"loss": {"ns", "wgan_gp"}, "optim.lr": {1e-4, 2e-4, 3e-4}, "trainer.seed": {1.0}}
    assert len(variants) == 1 + 1 + 2


def test_configs_resolve_to_plain_containers():
    cfg = checked("train", [])
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert plain["model"]["generator"]["resolution"] == plain["data"]["resolution"]
