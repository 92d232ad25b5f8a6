"""ADA: the pipeline's transforms, the p update rule, p rising when D overfits, and p surviving resume."""

from __future__ import annotations

import json
import math

import pytest
import torch

from genexp.methods.ada import AdaptiveAugment

from .test_resume import assert_bitwise_equal

TOY = ["logger=none", "trainer.progress=plain", "trainer.log_every=4", "trainer.sample_every=0",
       "trainer.eval_every=0", "metrics=[]", "data.batch_size=16", "data.split=val", "data.resolution=8",
       "model.generator.base_channels=8", "model.discriminator.base_channels=16",
       "model.method.ada.enabled=true", "model.method.ada.kimg=1", "model.method.ada.interval=1"]


def dihedral(x: torch.Tensor) -> list[torch.Tensor]:
    rots = [torch.rot90(x, k, dims=(-2, -1)) for k in range(4)]
    return rots + [r.flip(-1) for r in rots]


def test_p_zero_is_the_identity_and_p_one_transforms_every_image():
    x = torch.randn(8, 3, 8, 8)
    ada = AdaptiveAugment("bgc", p=0.0)
    assert torch.equal(ada(x), x)
    ada.p.fill_(1.0)
    torch.manual_seed(0)
    y = ada(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert all(not torch.allclose(a, b) for a, b in zip(x, y))


def test_flips_and_quarter_turns_are_exact_pixel_moves():
    torch.manual_seed(0)
    x = torch.randn(64, 1, 6, 6)
    ada = AdaptiveAugment("blit", p=1.0)
    ada.transforms = ("xflip", "rotate90")
    y = ada(x)
    seen = set()
    for a, b in zip(x, y):
        matches = [i for i, d in enumerate(dihedral(a)) if torch.allclose(d, b, atol=1e-5)]
        assert matches, "not one of the 8 flips / rotations of the input"
        seen.add(matches[0])
    assert len(seen) == 8  # all of them occur at p = 1


def test_grey_brightness_adds_one_offset_per_image_and_passes_gradients():
    torch.manual_seed(0)
    x = torch.randn(16, 1, 4, 4, requires_grad=True)
    ada = AdaptiveAugment("color", p=1.0)
    ada.transforms = ("brightness",)
    y = ada(x)
    offsets = (y - x).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-6)
    assert float(offsets[:, 0].detach().std()) == pytest.approx(0.2, rel=0.6)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x))


def test_p_moves_by_images_over_kimg_toward_the_target():
    ada = AdaptiveAugment(target=0.6, interval=2, kimg=0.1, p=0.0)
    overfit = torch.ones(10)  # every real logit positive: r_t = 1 > 0.6
    ada.observe(overfit, 10)
    assert float(ada.p) == 0.0  # adjusts only every `interval` D steps
    ada.observe(overfit, 10)
    assert float(ada.p) == pytest.approx(10 * 2 / 100)
    assert math.isnan(ada.r_t())  # the sums restart after each adjustment
    for _ in range(4):
        ada.observe(-overfit, 10)  # r_t = -1 < 0.6: p falls, and stops at 0
    assert float(ada.p) == 0.0
    fixed = AdaptiveAugment(target=None, p=0.3)
    for _ in range(8):
        fixed.observe(overfit, 10)
    assert float(fixed.p) == pytest.approx(0.3)


def test_p_rises_on_an_overfitting_toy_and_survives_resume(run, tmp_path):
    """350 digits at 8x8 and a D twice G's width: D's sign on reals passes 0.6 and p rises.
    Resumed from the middle, p, its statistics and the weights equal the uninterrupted run's."""
    full = tmp_path / "full"
    res = run("train", *TOY, "trainer.max_steps=24", "trainer.ckpt_every=12", f"hydra.run.dir={full}")
    assert res.code == 0, res
    logs = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    p = [entry["ada/p"] for entry in logs]
    assert p[-1] > 0.1 and max(p) > p[0], p
    assert max(entry["ada/sign_real"] for entry in logs) > 0.6

    mid = torch.load(full / "checkpoints/step_000012.pt", weights_only=True)["method"]["modules"]
    assert float(mid["ada.p"]) > 0  # p itself is in the checkpoint
    fork = tmp_path / "fork"
    res = run("train", f"resume={full / 'checkpoints/step_000012.pt'}", f"hydra.run.dir={fork}")
    assert res.code == 0, res
    a = torch.load(full / "checkpoints/last.pt", weights_only=True)["method"]
    b = torch.load(fork / "checkpoints/last.pt", weights_only=True)["method"]
    assert_bitwise_equal(a, b)


@pytest.mark.parametrize("args, words", [
    (["model.method.ada.pipeline=bgcx"], "use one of blit, geom, color, bg, bgc"),
    (["data=images", "data.path=/x.zip", "data.channels=4"], "use model.method.ada.pipeline=bg"),
    (["model=mlp", "data=ring", "+model.method.ada.enabled=true"], "ADA augments images"),
])
def test_ada_mistakes_are_one_line(args, words):
    from omegaconf import open_dict

    from genexp.config.checks import check_composition
    from genexp.errors import UserError

    from .conftest import compose

    cfg = compose("train", ["model.method.ada.enabled=true", *args] if "model=mlp" not in args else args)
    with open_dict(cfg):
        del cfg["hydra"]
    with pytest.raises(UserError, match=words):
        check_composition("train", cfg)
