"""One training step for every model x loss x data meant to combine: every net learns, nothing is NaN."""

from __future__ import annotations

import copy

import pytest
import torch
from omegaconf import open_dict

from genexp.config.checks import check_composition
from genexp.data import build_dataset
from genexp.data.loader import InfiniteLoader
from genexp.methods import build_method

from .conftest import compose
from .data.test_cifar import write_cifar
from .data.test_idx import write_split
from .data.test_images import make_folder, make_zip

LOSSES = ["ns", "wgan_gp"]
SMALL = ["model.generator.base_channels=8", "model.discriminator.base_channels=8", "data.batch_size=4",
         "metrics=[]"]


def data_overrides(name: str, tmp_path) -> list[str]:
    if name in ("mnist", "fashion_mnist", "stacked_mnist"):
        write_split(tmp_path / name, n=6)
        extra = ["data.num_samples=32"] if name == "stacked_mnist" else []
        return [f"data={name}", f"data.root={tmp_path / name}", "data.download=false", "data.resolution=16", *extra]
    if name == "cifar10":
        write_cifar(tmp_path / "cifar")
        return ["data=cifar10", f"data.root={tmp_path / 'cifar'}", "data.resolution=8"]
    if name in ("images", "images_zip"):
        folder = make_folder(tmp_path / "imgs")
        path = make_zip(folder, tmp_path / "imgs.zip") if name == "images_zip" else folder
        # the folder mixes 8x8 and 16x16 images on purpose: convert them (refused by default)
        return ["data=images", f"data.path={path}", "data.resolution=8", "data.num_workers=0", "data.mixed=convert"]
    if name == "digits32":
        return ["data=digits", "data.resolution=32"]
    return [f"data={name}"]


def one_step(overrides: list[str]) -> dict[str, torch.Tensor]:
    cfg = compose("train", overrides)
    with open_dict(cfg):
        del cfg["hydra"]
    check_composition("train", cfg)
    torch.manual_seed(0)
    method = build_method(cfg, torch.device("cpu"))
    before = {n: copy.deepcopy(m.state_dict()) for n, m in (("G", method.G), ("D", method.D))}
    dataset = build_dataset(cfg.data)
    out = method.train_step(InfiniteLoader(dataset, int(cfg.data.batch_size), seed=0), 0)
    for name, net in (("G", method.G), ("D", method.D)):
        after = net.state_dict()
        changed = [k for k in after if after[k].dtype.is_floating_point and not torch.equal(after[k], before[name][k])]
        assert changed, f"{name} did not change"
        assert all(torch.isfinite(v).all() for v in after.values()), f"{name} has non-finite weights"
    # the EMA generator moved towards G (beta < 1) or equals it (beta 0)
    assert any(not torch.equal(a, b) for a, b in zip(method.G_ema.state_dict().values(),
                                                     before["G"].values()))
    assert all(torch.isfinite(v) for v in out.values()), out
    sample = method.sample(3, generator=torch.Generator().manual_seed(0))
    return {"out": out, "sample": sample}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("data", ["digits", "digits32", "mnist", "fashion_mnist", "stacked_mnist", "cifar10", "images",
                                  "images_zip"])
def test_dcgan_on_images(data, loss, tmp_path):
    result = one_step(["model=dcgan", f"loss={loss}", *SMALL, *data_overrides(data, tmp_path)])
    assert result["sample"].dim() == 4 and result["sample"].abs().max() <= 1
    if loss == "wgan_gp":
        assert "reg/gp" in result["out"]


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("data", ["ring", "grid"])
def test_mlp_on_points(data, loss):
    result = one_step(["model=mlp", f"loss={loss}", "data.batch_size=32", "metrics=[]", f"data={data}",
                       "model.method.ema_beta=0.9"])
    assert result["sample"].shape == (3, 2)


@pytest.mark.parametrize("norm", ["none", "layer", "spectral", "batch"])
def test_discriminator_norms_train(norm):
    one_step(["model=dcgan", "loss=ns", *SMALL, f"model.discriminator.norm={norm}"])


@pytest.mark.parametrize("loss", ["ns", "wgan_gp", "gan_qp"])
@pytest.mark.parametrize("model, data", [("dcgan", "digits"), ("mlp", "ring")])
def test_pacgan_packing_and_minibatch_std_train(model, data, loss):
    extra = SMALL if model == "dcgan" else ["data.batch_size=32", "metrics=[]"]
    one_step([f"model={model}", f"data={data}", f"loss={loss}", *extra, "model.method.pack=2",
              "model.discriminator.mbstd_group=4"])


@pytest.mark.parametrize("loss", ["ns", "wgan_gp", "rasgan"])
@pytest.mark.parametrize("model, data", [("dcgan", "digits"), ("mlp", "ring")])
def test_conditional_gan_trains_and_uses_its_labels(model, data, loss):
    extra = SMALL if model == "dcgan" else ["data.batch_size=32", "metrics=[]"]
    overrides = [f"model={model}", f"data={data}", f"loss={loss}", *extra, "model.num_classes=${data.num_classes}"]
    one_step(overrides)
    cfg = compose("train", overrides)
    torch.manual_seed(0)
    method = build_method(cfg, torch.device("cpu"))
    z = torch.randn(4, method.z_dim)
    zeros, ones = torch.zeros(4, dtype=torch.long), torch.ones(4, dtype=torch.long)
    assert not torch.allclose(method.G(z, zeros), method.G(z, ones))
    x = method.G(z, zeros).detach()
    with torch.no_grad():  # the projection term starts small but is not zero
        assert not torch.equal(method.D(x, zeros), method.D(x, ones))
    assert method.num_classes == cfg.data.num_classes
    assert method.sample(3, labels=torch.tensor([2, 2, 2])).shape[0] == 3


@pytest.mark.parametrize("loss", ["ns", "wgan_gp"])
def test_diffaugment_trains(loss):
    one_step(["model=dcgan", "data=digits", f"loss={loss}", *SMALL, "model.method.augment=[color,translation,cutout]"])


SG2_SMALL = ["model.channel_base=64", "model.channel_max=8", "model.z_dim=8", "model.w_dim=8",
             "model.generator.mapping_layers=2", "model.discriminator.mbstd_group=2", "data.batch_size=4",
             "metrics=[]"]


@pytest.mark.parametrize("loss", ["ns", "wgan_gp"])
@pytest.mark.parametrize("data", ["digits", "cifar10"])
def test_stylegan2_on_images(data, loss, tmp_path):
    extra = ["+loss/reg=[r1]", "loss.d_regularizers.r1.every=1"] if loss == "ns" else []
    result = one_step(["model=stylegan2", f"loss={loss}", *SG2_SMALL, *extra, *data_overrides(data, tmp_path)])
    assert result["sample"].dim() == 4 and result["sample"].abs().max() <= 1
    assert ("reg/r1" if loss == "ns" else "reg/gp") in result["out"]


def test_conditional_stylegan2_cifar_pack(tmp_path):
    result = one_step(["experiment=stylegan2_cifar10", *SG2_SMALL, *data_overrides("cifar10", tmp_path)])
    assert result["sample"].shape == (3, 3, 8, 8)


def test_stylegan2_path_length_regularization_steps_and_checkpoints(tmp_path):
    overrides = ["model=stylegan2", "+loss/reg=[r1,pl]", *SG2_SMALL, *data_overrides("digits", tmp_path)]
    result = one_step(overrides)
    assert "reg/pl" in result["out"] and "reg/r1" in result["out"]
    cfg = compose("train", overrides)
    method = build_method(cfg, torch.device("cpu"))
    method.train_step(InfiniteLoader(build_dataset(cfg.data), 4, seed=0), 0)
    state = method.get_extra_state()
    assert state["g_regularizers"]["pl"]["pl_mean"] > 0
    fresh = build_method(cfg, torch.device("cpu"))
    fresh.set_extra_state(state)
    assert fresh.g_regularizers["pl"].pl_mean == method.g_regularizers["pl"].pl_mean


def test_stylegan2_ffhq_pack_composes_with_both_regularizers():
    cfg = compose("train", ["experiment=stylegan2_ffhq256", "data.path=x"])
    assert cfg.loss.d_regularizers.r1.weight == 0.5 and cfg.loss.g_regularizers.pl.every == 4
    assert cfg.model.name == "stylegan2_256" and cfg.data.batch_size == 64
