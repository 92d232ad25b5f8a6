"""optim.lr / optim.betas mean what they say (issue 17.6): every net's optimizer follows them unless the
net sets its own value, in every optim group and experiment pack, so an lr sweep searches something.
The StyleGAN2 packs keep stylegan2-ada-pytorch's numbers (train.py cfg_specs paper256 / cifar: lrate
0.0025, Adam betas (0, 0.99); training_loop.py: a net regularised every k iterations gets lr * c and
betas ** c, c = k / (k + 1), with G_reg_interval 4 and D_reg_interval 16). Optimizers are built
through genexp's own path (build_method / build_optimizer), never read off the yaml."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genexp.errors import UserError
from genexp.methods import build_method
from genexp.optim.build import build_optimizer

from .conftest import CONF, compose

# Packs that touch optim are where the trap can be; the rest (slow marks) only inherit their group's.
PACKS = [pytest.param(p.stem, marks=() if "optim" in p.read_text() else pytest.mark.slow)
         for p in sorted((CONF / "experiment").glob("*.yaml"))]
OPTIMS = sorted(p.stem for p in (CONF / "optim").glob("*.yaml"))
SG2 = {"stylegan2_ffhq256": ["data.path=x"], "stylegan2_cifar10": ["data.root=x"]}
# Small nets, same optimizer settings: building the method stays fast.
SG2_SMALL = ["data.resolution=8", "model.channel_base=64", "model.channel_max=8", "model.z_dim=8", "model.w_dim=8",
             "model.generator.mapping_layers=2", "model.discriminator.mbstd_group=2", "metrics=[]"]
K = {"G": 4, "D": 16}  # the official lazy intervals: compensation k / (k + 1)
# What the packs wrote out before issue 17 (G 0.0025 * 4/5, D 0.0025 * 16/17, rounded).
BEFORE = {"G": (0.002, 0.99199), "D": (0.00235294, 0.99059)}


def groups(opt: torch.optim.Optimizer):
    return [(g["lr"], tuple(g.get("betas", ()))) for g in opt.param_groups]


def sg2(pack: str, *extra: str):
    torch.manual_seed(0)
    return build_method(compose("train", [f"experiment={pack}", *SG2[pack], *SG2_SMALL, *extra]),
                        torch.device("cpu"))


def net_optimizers(cfg):
    """Each optimizer entry of cfg.optim (generator, discriminator, model, ...) built on one parameter."""
    return {name: build_optimizer(node, [torch.nn.Parameter(torch.zeros(1))])
            for name, node in cfg.optim.items() if hasattr(node, "keys") and "_target_" in node}


@pytest.mark.parametrize("pack", sorted(SG2))
def test_stylegan2_defaults_are_the_official_numbers_and_those_written_before(pack):
    method = sg2(pack)
    for net, opt in method.optimizers.items():
        c = K[net] / (K[net] + 1)
        for lr, betas in groups(opt):
            assert lr == pytest.approx(0.0025 * c, rel=1e-12)
            assert betas == pytest.approx((0.0, 0.99 ** c), rel=1e-12)
            assert lr == pytest.approx(BEFORE[net][0], rel=1e-6)
            assert betas[1] == pytest.approx(BEFORE[net][1], abs=5e-6)


@pytest.mark.parametrize("pack", sorted(SG2))
def test_stylegan2_optim_lr_and_betas_move_every_param_group(pack):
    method = sg2(pack, "optim.lr=1e-4", "optim.betas=[0.5,0.9]")
    seen = 0
    for net, opt in method.optimizers.items():
        c = K[net] / (K[net] + 1)
        for lr, betas in groups(opt):
            assert lr == pytest.approx(1e-4 * c, rel=1e-12)
            assert betas == pytest.approx((0.5 ** c, 0.9 ** c), rel=1e-12)
            seen += 1
    assert seen >= 2


@pytest.mark.parametrize("pack", sorted(SG2))
def test_a_nets_own_value_wins(pack):
    method = sg2(pack, "optim.lr=1e-4", "optim.discriminator.lr=3e-4", "optim.generator.betas=[0.1,0.5]")
    (g_lr, g_betas), = groups(method.optimizers["G"])
    (d_lr, d_betas), = groups(method.optimizers["D"])
    assert d_lr == pytest.approx(3e-4 * 16 / 17) and g_lr == pytest.approx(1e-4 * 4 / 5)
    assert g_betas == pytest.approx((0.1 ** 0.8, 0.5 ** 0.8)) and d_betas == pytest.approx((0.0, 0.99 ** (16 / 17)))
    # without the compensation a net's lr is exactly the number written
    (d_lr, _), = groups(sg2(pack, "optim.discriminator.lr=3e-4", "optim.discriminator.lazy_reg_interval=null")
                        .optimizers["D"])
    assert d_lr == 3e-4


def test_ffhq_compensation_follows_the_regularisers_interval():
    (d_lr, _), = groups(sg2("stylegan2_ffhq256", "loss.d_regularizers.r1.every=8").optimizers["D"])
    assert d_lr == pytest.approx(0.0025 * 8 / 9)


@pytest.mark.parametrize("pack", PACKS)
def test_every_pack_follows_optim_lr(pack):
    extra = SG2.get(pack, [])
    cfg = compose("train", [f"experiment={pack}", *extra, "optim.lr=1.2345e-4"])
    built = net_optimizers(cfg)
    assert built, f"{pack}: no optimizer entries under optim"
    for name, opt in built.items():
        interval = cfg.optim[name].get("lazy_reg_interval")
        c = 1.0 if interval is None else interval / (interval + 1)
        for lr, _ in groups(opt):
            assert lr == pytest.approx(1.2345e-4 * c, rel=1e-12), f"{pack}: optim.{name} ignores optim.lr"


@pytest.mark.parametrize("optim", OPTIMS)
def test_every_optim_group_follows_optim_lr_and_betas(optim):
    model = "model=vae" if optim == "adam_ml" else "model=edm_small" if optim == "adam_edm" else "model=mlp"
    overrides = [model, f"optim={optim}", "optim.lr=1.2345e-4"]
    cfg = compose("train", overrides)
    has_betas = "betas" in cfg.optim
    if has_betas:
        cfg = compose("train", [*overrides, "optim.betas=[0.25,0.75]"])
    for name, opt in net_optimizers(cfg).items():
        for lr, betas in groups(opt):
            assert lr == pytest.approx(1.2345e-4), f"optim={optim}: {name} ignores optim.lr"
            if has_betas:
                assert betas == pytest.approx((0.25, 0.75)), f"optim={optim}: {name} ignores optim.betas"


def test_plain_adam_ttur_by_one_key():
    cfg = compose("train", ["model=mlp", "optim.lr=1e-4", "optim.discriminator.lr=4e-4"])
    built = net_optimizers(cfg)
    assert groups(built["generator"])[0][0] == 1e-4 and groups(built["discriminator"])[0][0] == 4e-4


@pytest.mark.parametrize("value", ["0", "2.5", "true", "abc"])
def test_a_bad_interval_is_a_user_error(value):
    with pytest.raises(UserError, match="lazy_reg_interval"):
        net_optimizers(compose("train", ["model=mlp", f"optim.discriminator.lazy_reg_interval={value}"]))


def test_no_pack_writes_a_per_net_number():
    """The trap itself: a literal lr under optim.<net> in a pack silences optim.lr."""
    import yaml

    for path in sorted((CONF / "experiment").glob("*.yaml")):
        optim = (yaml.safe_load(Path(path).read_text()) or {}).get("optim") or {}
        for name, node in optim.items():
            if isinstance(node, dict):
                assert "lr" not in node and "betas" not in node, f"{path.name}: optim.{name} sets its own lr/betas"
