"""Unit checks of the pieces: objectives, penalties, the loader, checkpoints, nets, images."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from genexp.data.base import ArrayDataset
from genexp.data.loader import InfiniteLoader
from genexp.data.toy import GridDataset, RingDataset
from genexp.errors import UserError
from genexp.losses.objectives import NonSaturating, Wasserstein
from genexp.losses.regularizers import GradientPenalty
from genexp.models import dcgan
from genexp.training.checkpoint import load_checkpoint, save_checkpoint
from genexp.viz import image_grid, scatter


def test_non_saturating_values_and_gradient_direction():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.5, -3.0])
    sp = lambda x: math.log1p(math.exp(x))
    ns = NonSaturating()
    assert ns.d_loss(real, fake).item() == pytest.approx((sp(-2) + sp(1)) / 2 + (sp(0.5) + sp(-3)) / 2)
    assert ns.g_loss(fake).item() == pytest.approx((sp(-0.5) + sp(3)) / 2)
    fake = fake.clone().requires_grad_(True)
    ns.g_loss(fake).backward()
    assert (fake.grad < 0).all()  # G lowers its loss by raising D's logits on fakes
    # non-saturating: a confidently rejected fake still gets a strong gradient
    assert abs(fake.grad[1].item()) > 0.4


def test_wasserstein_values():
    w = Wasserstein()
    real, fake = torch.tensor([1.0, 3.0]), torch.tensor([0.0, -2.0])
    assert w.d_loss(real, fake).item() == pytest.approx(-1.0 - 2.0)
    assert w.g_loss(fake).item() == pytest.approx(1.0)


def test_gradient_penalty_on_a_linear_critic():
    wvec = torch.tensor([3.0, 4.0])  # ||grad|| = 5 everywhere
    critic = lambda x, labels=None: x @ wvec
    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    for at in ("interpolates", "real", "fake"):
        assert GradientPenalty(10.0, 1.0, at)(critic, real, fake).item() == pytest.approx(10 * 16)
    assert GradientPenalty(0.5, 0.0, "real")(critic, real, fake).item() == pytest.approx(0.5 * 25)


def test_interpolates_lie_between_real_and_fake():
    gp = GradientPenalty(at="interpolates")
    real, fake = torch.ones(100, 2), torch.zeros(100, 2)
    x = gp.points(real, fake)
    assert (x >= 0).all() and (x <= 1).all() and x[:, 0].equal(x[:, 1]) and x.std() > 0.1


def test_lazy_regularizer_runs_on_its_interval_and_is_scaled(monkeypatch):
    from hydra import compose, initialize_config_dir

    from genexp.methods import build_method

    from .conftest import CONF
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", ["model=mlp", "data=ring", "metrics=[]", "loss=wgan_gp", "loss.d_steps=4",
                                "loss.d_regularizers.gp.every=2"])
    method = build_method(cfg, torch.device("cpu"))
    calls = []
    gp = method.d_regularizers["gp"]
    original = GradientPenalty.__call__

    def spy(self, *a, **k):
        value = original(self, *a, **k)
        calls.append(value.detach())
        return value
    monkeypatch.setattr(GradientPenalty, "__call__", spy)
    loader = InfiniteLoader(RingDataset(num_samples=512), 64, seed=0)
    out = method.train_step(loader, 0)
    assert len(calls) == 2 and gp.every == 2 and "reg/gp" in out  # D steps 0 and 2 of 4


def test_loader_order_is_seeded_and_resumable():
    data = ArrayDataset(torch.arange(100.0).view(100, 1))
    a = InfiniteLoader(data, 16, seed=1)
    seq = [next(a)[0].flatten().tolist() for _ in range(15)]  # crosses two epoch boundaries (6 per epoch)
    assert next(InfiniteLoader(data, 16, seed=1))[0].flatten().tolist() == seq[0]
    b = InfiniteLoader(data, 16, seed=1)
    for _ in range(8):
        next(b)
    c = InfiniteLoader(data, 16, seed=1)
    c.load_state_dict(b.state_dict())
    assert [next(c)[0].flatten().tolist() for _ in range(7)] == seq[8:]
    epoch0 = sum(seq[:6], [])
    assert len(set(epoch0)) == 96  # no repeats within an epoch
    assert seq[:6] != seq[6:12]  # a new order each epoch
    assert [next(InfiniteLoader(data, 16, seed=2))[0].flatten().tolist()] != seq[:1]


def test_loader_through_workers_matches_in_memory_order():
    class Lazy(torch.utils.data.Dataset):
        def __len__(self):
            return 50

        def __getitem__(self, i):
            return torch.tensor([float(i)]), torch.tensor(-1)
    mem = InfiniteLoader(ArrayDataset(torch.arange(50.0).view(50, 1)), 8, seed=3)
    lazy = InfiniteLoader(Lazy(), 8, seed=3)
    for _ in range(14):
        assert torch.equal(next(mem)[0], next(lazy)[0])
    resumed = InfiniteLoader(Lazy(), 8, seed=3)
    resumed.load_state_dict(lazy.state_dict())
    assert torch.equal(next(resumed)[0], next(mem)[0])


def test_loader_refuses_batch_larger_than_data():
    with pytest.raises(UserError, match="batch_size"):
        InfiniteLoader(ArrayDataset(torch.zeros(10, 2)), 32, seed=0)


def test_toy_mixtures_match_their_protocols():
    ring, grid = RingDataset(num_samples=4000), GridDataset(num_samples=4000)
    assert len(ring.modes) == 8 and torch.allclose(ring.modes.norm(dim=1), torch.ones(8))
    assert len(grid.modes) == 25 and set(grid.modes[:, 0].tolist()) == {-4.0, -2.0, 0.0, 2.0, 4.0}
    for d in (ring, grid):
        offsets = d.x - d.modes[d.y]
        assert offsets.std().item() == pytest.approx(d.std, rel=0.05)


def test_checkpoint_is_atomic_and_safe(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint({"step": 3, "w": torch.ones(2)}, path)
    assert load_checkpoint(path)["step"] == 3 and not list(tmp_path.glob(".*tmp"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    with open(path, "wb") as f:
        torch.save({"genexp": {"format": "genexp-checkpoint", "version": 1}, "x": Evil()}, f,
                   pickle_protocol=2)
    with pytest.raises(UserError, match="cannot be read"):
        load_checkpoint(path)


@pytest.mark.parametrize("res", [8, 16, 32, 64])
def test_dcgan_shapes(res):
    G, D = dcgan.Generator(16, res, 3, 8, 64), dcgan.Discriminator(res, 3, 8, 64, norm="spectral")
    x = G(torch.randn(2, 16))
    assert x.shape == (2, 3, res, res) and x.abs().max() <= 1
    assert D(x).shape == (2,)


def test_dcgan_rejects_other_resolutions():
    with pytest.raises(UserError, match="power of two"):
        dcgan.Generator(16, 24, 1)


def test_image_grid_and_scatter():
    grid = image_grid(torch.zeros(5, 1, 4, 4) - 1, nrow=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1) and grid.dtype.name == "uint8"
    assert image_grid(torch.ones(1, 3, 4, 4)).shape == (8, 8, 3)  # pad 2 on each side
    img = scatter(torch.randn(50, 2), reference=torch.randn(50, 2), size=64)
    assert img.shape == (64, 64, 3) and (img < 100).any()


def test_optimizer_partial_from_config():
    from hydra.utils import instantiate
    cfg = OmegaConf.create({"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3, "betas": [0.5, 0.9]})
    opt = instantiate(cfg)(params=[torch.nn.Parameter(torch.zeros(1))])
    assert opt.defaults["betas"] == (0.5, 0.9) or list(opt.defaults["betas"]) == [0.5, 0.9]


def test_rng_state_survives_a_weights_only_checkpoint(tmp_path):
    from genexp.training.runtime import rng_state, set_rng_state
    state = rng_state()
    save_checkpoint({"rng": state}, tmp_path / "r.pt")
    loaded = load_checkpoint(tmp_path / "r.pt")["rng"]
    set_rng_state(loaded)
    assert torch.equal(torch.get_rng_state(), state["torch"])


def test_pack_samples_concatenates_consecutive_samples():
    from genexp.models.layers import pack_samples

    x = torch.arange(5 * 2 * 2 * 2, dtype=torch.float32).view(5, 2, 2, 2)
    packed = pack_samples(x, 2)
    assert packed.shape == (2, 4, 2, 2)  # the fifth sample is dropped
    assert torch.equal(packed[1], torch.cat([x[2], x[3]]))
    points = torch.arange(8.0).view(4, 2)
    assert pack_samples(points, 4).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7]]
    assert pack_samples(points, 1) is points


def test_minibatch_std_adds_the_group_spread():
    from genexp.models.layers import MinibatchStd

    same = torch.ones(8, 3, 4, 4)
    out = MinibatchStd(4)(same)
    assert out.shape == (8, 4, 4, 4) and out[:, 3].abs().max() < 1e-3  # identical samples: no spread
    varied = torch.randn(8, 3, 4, 4) * 5
    assert MinibatchStd(4)(varied)[:, 3].mean() > 1.0
    assert MinibatchStd(4)(torch.randn(6, 5)).shape == (6, 6)  # groups shrink to divide the batch


def test_diffaugment_translation_moves_pixels_and_fills_zeros():
    from genexp.methods import augment as A

    torch.manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    x[:, 0, 8, 8] = 1.0
    out = A.translation(x)
    assert out.shape == x.shape and torch.equal(out.sum((1, 2, 3)), torch.ones(64))  # the pixel moved, kept
    where = out[:, 0].flatten(1).argmax(1)
    dy, dx = where // 16 - 8, where % 16 - 8
    assert dy.abs().max() <= 2 and dx.abs().max() <= 2 and (dy != 0).any() and (dx != 0).any()
    ones = A.translation(torch.ones(64, 1, 16, 16))
    assert ((ones == 0) | (ones == 1)).all() and (ones == 0).any()  # zero fill at the borders


def test_diffaugment_cutout_zeroes_one_square():
    from genexp.methods import augment as A

    torch.manual_seed(0)
    out = A.cutout(torch.ones(32, 3, 16, 16))
    zeros = (out == 0).all(1).flatten(1).sum(1)
    assert (zeros <= 64).all() and (zeros >= 16).all()  # an 8x8 square, cut by the border at most to a quarter


def test_diffaugment_is_differentiable_and_policies_parse():
    from genexp.methods import augment as A

    x = torch.randn(4, 3, 8, 8, requires_grad=True)
    A.augment(x, A.parse_policy("color,translation,cutout")).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="unknown augmentation"):
        A.parse_policy("color,flip")
    assert A.parse_policy("") == [] and len(A.parse_policy(["color", "cutout"])) == 2


def test_lr_decay_is_a_function_of_the_step():
    from genexp.optim.schedule import LrDecay

    linear, cosine = LrDecay("linear", 0.5, 100), LrDecay("cosine", 0.0, 100)
    assert [linear.factor(s) for s in (0, 50, 75, 100, 120)] == [1.0, 1.0, 0.5, 0.0, 0.0]
    assert cosine.factor(50) == pytest.approx(0.5) and cosine.factor(100) == pytest.approx(0.0)
    assert LrDecay().factor(99) == 1.0
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    linear.apply([opt], 75)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4)
    linear.apply([opt], 50)  # from the base lr again, not compounded
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    # The base lr travels with the optimizer state, so a resumed run decays from the same value.
    fresh = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    linear.apply([opt], 90)
    fresh.load_state_dict(opt.state_dict())
    linear.apply([fresh], 95)
    assert fresh.param_groups[0]["lr"] == pytest.approx(1e-4)


def test_gan_step_follows_the_configured_decay():
    from genexp.methods import build_method

    from .conftest import compose

    cfg = compose("train", ["experiment=ring_mlp", "trainer.max_steps=10", "optim.decay=linear",
                            "optim.decay_start=0.0", "model.generator.norm=batch"])
    method = build_method(cfg, torch.device("cpu"))
    batches = iter(lambda: (torch.randn(8, 2), torch.zeros(8, dtype=torch.long)), None)
    method.train_step(batches, 5)
    assert all(g["lr"] == pytest.approx(5e-4) for opt in method.optimizers.values() for g in opt.param_groups)
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in method.G.modules())


def test_ema_decay_starts_ramps_up_and_caps():
    from genexp.methods.ema import ema_beta

    assert ema_beta(0.999, 5, start=10) == 0.0
    assert ema_beta(0.999, 0) == 0.999
    assert ema_beta(0.999, 0, rampup=True) == pytest.approx(0.1)
    assert ema_beta(0.999, 90, rampup=True) == pytest.approx(0.91)
    assert ema_beta(0.999, 100_000, rampup=True) == 0.999
    assert ema_beta(0.999, 110, start=100, rampup=True) == pytest.approx(11 / 20)


def test_best_metrics_follow_each_metrics_direction():
    from genexp.commands.train import objective
    from genexp.metrics.suite import best_of

    evals = [{"fid/digits_lenet@2k": 30.0, "is/digits_lenet@2k": 5.0, "is_std/digits_lenet@2k": 0.1,
              "modes/captured@2.5k": 6.0, "modes/reverse_kl@2.5k": 0.5},
             {"fid/digits_lenet@2k": 20.0, "is/digits_lenet@2k": 4.0, "is_std/digits_lenet@2k": 0.3,
              "modes/captured@2.5k": 8.0, "modes/reverse_kl@2.5k": 0.7},
             {"fid/digits_lenet@2k": 25.0, "is/digits_lenet@2k": 4.5, "is_std/digits_lenet@2k": 0.2,
              "modes/captured@2.5k": 7.0, "modes/reverse_kl@2.5k": 0.6}]
    best = {}
    for e in evals:
        best = best_of(best, e)
    assert best == {"fid/digits_lenet@2k": 20.0, "is/digits_lenet@2k": 5.0, "modes/captured@2.5k": 8.0,
                    "modes/reverse_kl@2.5k": 0.5}
    assert objective(best, "fid") == 20.0 and objective(best, "modes/captured") == 8.0
    assert objective(best, "is") == 5.0 and objective(best, None) is None and objective(best, "kid") is None


def test_half_life_ema_as_stylegan2_sets_it():
    from genexp.methods.ema import half_life_beta

    assert half_life_beta(32, 10, 10**6) == pytest.approx(0.5 ** (32 / 10_000))
    assert half_life_beta(64, 500, 0, rampup=0.05) == 0.0  # the first step copies G
    assert half_life_beta(64, 500, 64_000, rampup=0.05) == pytest.approx(0.5 ** (64 / 3_200))
    assert half_life_beta(64, 500, 10**9, rampup=0.05) == pytest.approx(0.5 ** (64 / 500_000))
