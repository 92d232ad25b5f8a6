"""MADE and gated PixelCNN: the autoregressive property by gradients, exact (normalised) likelihoods,
sampling that follows the model, and train -> eval nll -> sample through the CLI."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
import torch.nn.functional as F

from genexp.models.made import MADE
from genexp.models.pixelcnn import GatedPixelCNN

from .conftest import compose

AR_TINY = ["logger=none", "trainer.progress=plain", "trainer.max_steps=2", "trainer.log_every=1",
           "trainer.sample_every=2", "trainer.eval_every=2", "trainer.ckpt_every=2", "trainer.grid_samples=4",
           "data=digits8", "data.batch_size=16", "metrics=[nll]", "metrics.nll.num_samples=20"]


def pixelcnn_dependence(net: GatedPixelCNN, shape: tuple[int, int, int], labels=None) -> torch.Tensor:
    """dep[c, i, j, c', i', j']: does any logit at (c, i, j) move with input value (c', i', j')?
    One backward pass: copy b of the image takes the gradient of output position b only."""
    c, h, w = shape
    positions = c * h * w
    k = torch.randint(0, net.categories, (1, *shape), generator=torch.Generator().manual_seed(0))
    k = k.expand(positions, -1, -1, -1)
    x = net.inputs(k).detach().requires_grad_(True)
    net.inputs = lambda _k: x  # differentiate through the first layer's input
    logits = net(k, labels.expand(positions) if labels is not None else None).sum(1).reshape(positions, positions)
    logits.diagonal().sum().backward()
    return x.grad.abs().reshape(c, h, w, c, -1, h, w).sum(4) > 0


def earlier(shape: tuple[int, int, int]) -> torch.Tensor:
    """before[c, i, j, c', i', j']: raster order over pixels, channel order within a pixel."""
    c, h, w = shape
    rank = torch.arange(h * w).view(1, h, w).expand(c, h, w) * c + torch.arange(c).view(c, 1, 1)
    return rank.view(c, h, w, 1, 1, 1) > rank.view(1, 1, 1, c, h, w)


@pytest.mark.parametrize("channels,embed,num_classes", [(1, False, 0), (3, False, 0), (2, True, 3)])
def test_pixelcnn_sees_exactly_the_past(channels, embed, num_classes):
    torch.manual_seed(0)
    shape = (channels, 5, 5)
    # 5 layers of kernel 3 reach every earlier pixel of a 5x5 image: the receptive field has no blind spot.
    net = GatedPixelCNN(channels, 4, hidden=6, layers=5, kernel=3, num_classes=num_classes, embed=embed)
    labels = torch.tensor([1]) if num_classes else None
    dep, before = pixelcnn_dependence(net, shape, labels), earlier(shape)
    assert not (dep & ~before).any(), "a logit depends on its own or a later value"
    assert (dep == before).all(), "a logit misses an earlier value (blind spot or channel mask too strict)"


def made_dependence(net: MADE, mask: int) -> torch.Tensor:
    """dep[d, d']: does any logit of dimension d move with the one-hot input of dimension d'?"""
    x = torch.randn(1, net.dims * net.input_width)
    jac = torch.autograd.functional.jacobian(lambda inp: net.masked_mlp(inp, None, mask)[0], x)
    return jac.abs().view(net.dims, net.categories, net.dims, net.input_width).sum((1, 3)) > 0


@pytest.mark.parametrize("ordering,connectivity,inputs", [("natural", "random", "onehot"), ("random", "even", "level"),
                                                           ("random", "random", "onehot")])
def test_made_outputs_ignore_later_dimensions(ordering, connectivity, inputs):
    torch.manual_seed(0)
    net = MADE([2, 3], 3, hidden=[16, 16], num_masks=3, ordering=ordering, connectivity=connectivity, seed=1,
               inputs=inputs)
    orders = []
    for m in range(3):
        order = net.order[m]
        before = order.view(-1, 1) > order.view(1, -1)
        dep = made_dependence(net, m)
        assert not (dep & ~before).any(), f"mask {m}: an output depends on its own or a later dimension"
        assert (dep == before).all(), f"mask {m}: the direct connections should reach every earlier dimension"
        orders.append(order.tolist())
    assert (len({tuple(o) for o in orders}) > 1) == (ordering == "random")
    # The masks are drawn from the seed: the same seed gives the same masks.
    again = MADE([2, 3], 3, hidden=[16, 16], num_masks=3, ordering=ordering, connectivity=connectivity, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(net.buffers(), again.buffers()))


def all_values(shape, categories) -> torch.Tensor:
    n = int(torch.tensor(shape).prod())
    return torch.tensor(list(itertools.product(range(categories), repeat=n))).view(-1, *shape)


def test_likelihoods_are_exact_and_samples_follow_them():
    """Over every possible input the probabilities sum to one; sampled frequencies match them."""
    torch.manual_seed(0)
    made = MADE([3], 3, hidden=[8], num_masks=2, ordering="random", seed=2, num_classes=2, inputs="level")
    sharpen(made)
    pixelcnn = GatedPixelCNN(2, 2, hidden=4, layers=2, kernel=3)
    sharpen(pixelcnn)
    cases = [(made, (3,), 3, torch.tensor([1])), (pixelcnn, (2, 1, 2), 2, None)]
    for net, shape, categories, label in cases:
        net.eval()
        values = all_values(shape, categories)
        labels = label.expand(len(values)) if label is not None else None
        with torch.no_grad():
            if isinstance(net, MADE):
                logp = net.log_prob(values, labels)
            else:
                logp = -F.cross_entropy(net(values), values, reduction="none").flatten(1).sum(1)
        p = logp.exp()
        assert abs(float(p.sum()) - 1) < 1e-5, type(net).__name__
        n = 3000
        draws = net.sample(n, shape, generator=torch.Generator().manual_seed(0),
                           labels=label.expand(n) if label is not None else None)
        assert torch.equal(draws, net.sample(n, shape, generator=torch.Generator().manual_seed(0),
                                             labels=label.expand(n) if label is not None else None))
        index = (draws.view(n, 1, -1) == values.view(1, len(values), -1)).all(2).float().argmax(1)
        freq = torch.bincount(index, minlength=len(values)).float() / n
        # 4 standard errors of a frequency; the model is far from uniform, so a wrong order would show.
        assert ((freq - p).abs() <= 4 * (p * (1 - p) / n).sqrt() + 1e-3).all(), (type(net).__name__, freq, p)


def sharpen(net: torch.nn.Module) -> None:
    """Larger weights than the default init, so the model's distribution is far from uniform."""
    with torch.no_grad():
        for param in net.parameters():
            param.mul_(4.0).add_(torch.randn_like(param))


def test_train_eval_sample_pixelcnn(run, tmp_path):
    train_dir = tmp_path / "train"
    res = run("train", "model=pixelcnn", *AR_TINY, "model.net.hidden=8", "model.net.layers=2",
              f"hydra.run.dir={train_dir}")
    assert res.code == 0, res
    lines = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert "loss/nll" in lines[0] and "bpd" in lines[0]
    trained = lines[-1]["nll/exact@test:20"]
    # 64 pixels of 17 levels: an untrained model is near uniform, 64 ln 17 = 181 nats.
    assert 100 < trained < 250 and abs(lines[-1]["bpd/exact@test:20"] - trained / (64 * 0.6931471805599453)) < 1e-6

    ckpt = train_dir / "checkpoints" / "last.pt"
    eval_dir = tmp_path / "eval"
    res = run("eval", f"ckpt={ckpt}", "metrics=[nll]", "metrics.nll.num_samples=20", f"hydra.run.dir={eval_dir}")
    assert res.code == 0, res
    record = json.loads((eval_dir / "metrics.json").read_text())
    assert abs(record["metrics"]["nll/exact@test:20"] - trained) < 1e-4

    sample_dir = tmp_path / "sample"
    res = run("sample", f"ckpt={ckpt}", "n=4", "seed=1", "temperature=0.8", f"hydra.run.dir={sample_dir}")
    assert res.code == 0, res
    samples = torch.load(sample_dir / "samples.pt", weights_only=True)["samples"]
    assert samples.shape == (4, 1, 8, 8)
    levels = samples.add(1).mul(8)  # 17 levels in [-1, 1] are multiples of 1/8
    assert torch.allclose(levels, levels.round(), atol=1e-5) and samples.abs().max() <= 1


@pytest.mark.slow  # the PixelCNN CLI test covers train -> eval -> sample in the default suite
def test_train_made_with_several_masks_conditional(run, tmp_path):
    out = tmp_path / "made"
    res = run("train", "model=made", *AR_TINY, "model.net.hidden=[32]", "model.net.num_masks=2",
              "model.net.ordering=random", "model.num_classes=10", f"hydra.run.dir={out}")
    assert res.code == 0, res
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert 100 < last["nll/exact@test:20"] < 250
    assert (out / "samples" / "step_000002.png").is_file()


@pytest.mark.parametrize("model", ["made", "pixelcnn"])
def test_composes_on_discrete_data_and_refuses_continuous(model):
    from omegaconf import open_dict

    from genexp.config.checks import check_composition
    from genexp.errors import UserError

    def checked(overrides):
        cfg = compose("train", overrides)
        with open_dict(cfg):
            del cfg["hydra"]
        check_composition("train", cfg)  # resolves every interpolation too
        return cfg

    cfg = checked([f"model={model}", "data=digits8"])
    assert cfg.loss.name == "nll" and cfg.optim.name == "adam_ml" and cfg.model.net.categories == 17
    with pytest.raises(UserError, match="data.levels=null"):
        checked([f"model={model}", "data=digits"])
