"""Perceptual path length: the number against a by-hand reference, and where it can and cannot run."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.digits import DigitsDataset
from genexp.metrics.suite import MetricSuite

from .conftest import TINY
from .test_eval_images import metrics_of

DATA_CFG = OmegaConf.create({"name": "digits", "kind": "image"})


class LinearGenerator(torch.nn.Module):
    """A method-shaped stand-in: G(z) = tanh(W z) as 1x4x4 images."""

    num_classes = 0
    z_dim = 3

    def __init__(self):
        super().__init__()
        self.W = torch.nn.Parameter(torch.randn(16, 3, generator=torch.Generator().manual_seed(1)))

    def latents(self, n, dim, generator):
        return torch.randn(n, dim, generator=generator)

    def decode(self, z, labels=None, ema=True):
        return torch.tanh(z @ self.W.T).view(-1, 1, 4, 4)


def ppl_cfg(**kw):
    base = {"kind": "ppl", "num_samples": 50, "epsilon": 1e-2, "interpolation": "lerp", "lower_discard": 0.0,
            "upper_discard": 1.0, "sim": {"_target_": "torch.nn.Flatten"}}
    return OmegaConf.create({"ppl": {**base, **kw}})


def test_ppl_equals_the_definition_on_a_known_generator():
    G = LinearGenerator()
    s = MetricSuite(ppl_cfg(), DigitsDataset(resolution=4), DATA_CFG, torch.device("cpu"), print)
    result = s.compute(lambda n, g: torch.zeros(n, 1, 4, 4), seed=5, model=(G, True))
    # by hand: the same latent pairs (the suite draws them from seed + 1), images as flat vectors,
    # d = |a/|a| - b/|b||^2 between the two ends of an eps-step, divided by eps^2
    g = torch.Generator().manual_seed(6)
    z1, z2 = torch.randn(50, 3, generator=g), torch.randn(50, 3, generator=g)
    eps = 1e-2
    with torch.no_grad():
        a = G.decode(z1).flatten(1)
        b = G.decode(z1 + eps * (z2 - z1)).flatten(1)
    d = ((a / a.norm(dim=1, keepdim=True) - b / b.norm(dim=1, keepdim=True)) ** 2).sum(1) / eps**2
    (key,) = [k for k in result if k.startswith("ppl_zend/Flatten-")]  # a user net: keyed with its hash
    assert key.endswith("@50") and result[key] == pytest.approx(float(d.mean()), rel=1e-4)
    assert result[key.replace("ppl_zend/", "ppl_zend_std/")] == pytest.approx(float(d.std()), rel=1e-3)


def test_ppl_discards_the_extremes_and_a_constant_generator_scores_zero():
    class Constant(LinearGenerator):
        def decode(self, z, labels=None, ema=True):
            return torch.ones(len(z), 1, 4, 4)

    s = MetricSuite(ppl_cfg(), DigitsDataset(resolution=4), DATA_CFG, torch.device("cpu"), print)
    constant = s.compute(lambda n, g: torch.zeros(n, 1, 4, 4), seed=0, model=(Constant(), True))
    assert [v for k, v in constant.items() if k.startswith("ppl_zend/")] == [0]
    full = MetricSuite(ppl_cfg(), DigitsDataset(resolution=4), DATA_CFG, torch.device("cpu"), print)
    trimmed = MetricSuite(ppl_cfg(lower_discard=0.1, upper_discard=0.9), DigitsDataset(resolution=4), DATA_CFG,
                          torch.device("cpu"), print)
    G = LinearGenerator()
    a = full.compute(lambda n, g: torch.zeros(n, 1, 4, 4), seed=0, model=(G, True))
    b = trimmed.compute(lambda n, g: torch.zeros(n, 1, 4, 4), seed=0, model=(G, True))
    (std,) = [k for k in a if k.startswith("ppl_zend_std/")]
    assert b[std] < a[std]


def test_ppl_needs_a_generator_and_a_missing_lpips_file_is_one_note():
    notes = []
    s = MetricSuite(ppl_cfg(), DigitsDataset(resolution=4), DATA_CFG, torch.device("cpu"), notes.append)
    assert s.compute(lambda n, g: torch.zeros(n, 1, 4, 4), seed=0) == {}
    assert len(notes) == 1 and "evaluate a checkpoint, not images" in notes[0]
    notes = []
    MetricSuite(ppl_cfg(sim="vgg", download=False), DigitsDataset(resolution=4), DATA_CFG, torch.device("cpu"),
                notes.append)
    assert len(notes) == 1 and "metrics.ppl.weights" in notes[0] and "vgg16-397923af.pth" in notes[0]


def test_ppl_with_plain_torch_lpips_equals_the_definition(tmp_path):
    """d = LPIPS-alex (backbone weights random in torchvision's layout, heads real; images below AlexNet's
    31 px go up to 64 px): the suite's PPL equals the mean LPIPS of the same eps-steps over eps^2 here."""
    from genexp.metrics.lpips_net import build_lpips

    from .test_lpips import write_weights

    weights = write_weights("alex", tmp_path)
    G, eps = LinearGenerator(), 1e-2
    cfg = ppl_cfg(sim="alex", weights=str(weights), lpips_resize=None, num_samples=20, epsilon=eps)
    result = MetricSuite(cfg, DigitsDataset(resolution=4), DATA_CFG, torch.device("cpu"), print).compute(
        lambda n, g: torch.zeros(n, 1, 4, 4), seed=5, model=(G, True))
    (key,) = [k for k in result if k.startswith("ppl_zend/lpips_alex@")]
    g = torch.Generator().manual_seed(6)  # the suite's latent pairs (seed + 1), as in the test above
    z1, z2 = torch.randn(20, 3, generator=g), torch.randn(20, 3, generator=g)
    with torch.no_grad():
        d = build_lpips("alex", str(weights))(G.decode(z1), G.decode(z1 + eps * (z2 - z1))) / eps**2
    assert float(d.mean()) > 0 and result[key] == pytest.approx(float(d.mean()), rel=1e-4)


def test_ppl_of_a_checkpoint_with_the_digits_classifier(run, tmp_path):
    res = run("train", *TINY, f"hydra.run.dir={tmp_path / 't'}")
    assert res.code == 0, res
    ckpt = tmp_path / "t/checkpoints/last.pt"
    res = run("eval", f"ckpt={ckpt}", "metrics=[ppl]", "metrics.ppl.sim=auto", "n=40", "trainer.progress=plain",
              f"hydra.run.dir={tmp_path / 'e'}")
    assert res.code == 0, res
    record = metrics_of(tmp_path / "e")
    value = record["metrics"]["ppl_zend/digits_lenet@40"]
    assert math.isfinite(value) and value > 0
    assert record["protocol"]["metrics"]["ppl_zend/digits_lenet@40"]["interpolation"] == "slerp"
