"""Method.optimize, the one place a loss becomes an optimizer step: gradient accumulation, loss
scaling (float16), the data-parallel gradient hook, and which nets trainer.compile may compile."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from genexp.data import build_dataset
from genexp.data.loader import InfiniteLoader
from genexp.methods import build_method
from genexp.methods.base import Method

from .conftest import compose

MADE = ["model=made", "data=digits8", "model.net.hidden=[64]", "metrics=[]"]
GAN_SMALL = ["model.generator.base_channels=8", "model.discriminator.base_channels=8", "metrics=[]"]
SG2_SMALL = ["model=stylegan2", "data=digits", "model.channel_base=64", "model.channel_max=8", "model.z_dim=8",
             "model.w_dim=8", "model.generator.mapping_layers=2", "model.discriminator.mbstd_group=2", "metrics=[]"]


def build(overrides: list[str], seed: int = 0) -> Method:
    torch.manual_seed(seed)
    return build_method(compose("train", overrides), torch.device("cpu"))


def batches_of(cfg_overrides: list[str], batch: int, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    loader = InfiniteLoader(build_dataset(compose("train", cfg_overrides).data), batch, seed=0)
    return [next(loader) for _ in range(count)]


def halves(batches):
    """Each batch as two micro-batches, in order: the stream a run with accumulate=2 would see."""
    for x, y in batches:
        n = len(x) // 2
        yield x[:n], y[:n]
        yield x[n:], y[n:]


# Measured on torch 2.13 CPU (MADE, 6 Adam steps at lr 1e-3 from batches of 32 vs 2 x 16): the largest
# absolute weight difference is 3.5e-7 (2.4e-7 with clipping active), from float32 rounding of two
# half-batch means summed against one batch mean; near-zero weights make the purely relative
# difference meaningless (up to 3e-4), hence rtol plus an atol about 3x above what was seen.
ACCUMULATION_RTOL, ACCUMULATION_ATOL = 1e-5, 1e-6


@pytest.mark.parametrize("grad_clip", [None, 0.05])
def test_accumulating_two_half_batches_steps_like_the_whole_batch(grad_clip):
    overrides = [*MADE, f"model.method.grad_clip={grad_clip if grad_clip else 'null'}"]
    stream = batches_of(overrides, 32, 6)
    whole, accumulated = build(overrides), build(overrides)
    accumulated.accumulate = 2
    whole_batches, micro_batches = iter(stream), halves(stream)
    for step in range(len(stream)):
        a = whole.train_step(whole_batches, step)
        b = accumulated.train_step(micro_batches, step)
        assert a.keys() == b.keys()
        for key in a:  # logged: the mean over the micro-batches = the whole batch's value
            torch.testing.assert_close(b[key], a[key], rtol=ACCUMULATION_RTOL, atol=ACCUMULATION_ATOL)
    assert next(micro_batches, None) is None  # two micro-batches per step, no more
    moved = 0.0
    for (name, p), q in zip(whole.named_parameters(), accumulated.parameters()):
        torch.testing.assert_close(q, p, rtol=ACCUMULATION_RTOL, atol=ACCUMULATION_ATOL, msg=name)
    for p, p0 in zip(whole.parameters(), build(overrides).parameters()):
        moved = max(moved, float((p - p0).detach().abs().max()))
    assert moved > 1e-3  # the steps did move the weights: the comparison means something


def test_gan_accumulates_micro_batches_with_the_lazy_clock_per_optimizer_step(monkeypatch):
    """Conditional DCGAN, 2 D steps per G step, lazy R1 every 2 D steps, accumulate=2, EMA by half-life."""
    import genexp.methods.gan as gan_module

    overrides = ["model=dcgan", "loss=ns", "data=digits", *GAN_SMALL, "data.batch_size=8", "loss.d_steps=2",
                 "+loss/reg=[r1]", "loss.d_regularizers.r1.every=2", "model.num_classes=${data.num_classes}",
                 "+model.method.ema_kimg=0.01"]
    method = build(overrides)
    method.accumulate = 2
    steps, micro = 3, 4
    stream = batches_of(overrides, micro, steps * method.d_steps * method.accumulate + 1)
    batches = iter(stream)

    r1 = method.d_regularizers["r1"]
    r1_clock: list[int] = []  # d_steps_done at each R1 evaluation
    original_r1 = r1.__call__
    monkeypatch.setattr(type(r1), "__call__", lambda self, *a, **k: (r1_clock.append(method.d_steps_done),
                                                                      original_r1(*a, **k))[1])
    ema_batches: list[int] = []
    half_life = gan_module.half_life_beta
    monkeypatch.setattr(gan_module, "half_life_beta",
                        lambda batch, *a, **k: (ema_batches.append(batch), half_life(batch, *a, **k))[1])
    g_labels: list[tuple[bool, torch.Tensor]] = []  # (grad enabled: G's own step, labels) per call of G
    method.G.register_forward_pre_hook(lambda mod, args: g_labels.append((torch.is_grad_enabled(), args[1])))

    for step in range(steps):
        g_labels.clear()
        out = method.train_step(batches, step)
        assert set(out) == {"loss/d", "reg/r1", "loss/g", "d/real", "d/fake"}
        assert all(torch.isfinite(v) for v in out.values()), out
        # G's micro-phases take the labels of the last D step's micro-batches, in order
        d_fakes = [labels for grad, labels in g_labels if not grad]
        g_calls = [labels for grad, labels in g_labels if grad]
        assert len(d_fakes) == method.d_steps * method.accumulate and len(g_calls) == method.accumulate
        for mine, theirs in zip(g_calls, d_fakes[-method.accumulate:]):
            assert torch.equal(mine, theirs)
    assert method.d_steps_done == steps * method.d_steps  # once per D optimizer step, not per micro-batch
    assert next(batches) is stream[-1]  # exactly d_steps * accumulate micro-batches per step
    # R1 is due at D steps 0, 2, 4 (every 2) and is taken on each of the accumulate micro-batches
    assert r1_clock == [0, 0, 2, 2, 4, 4]
    assert ema_batches == [micro * method.accumulate] * steps  # the EMA counts the whole batch


def test_stylegan2_path_length_accumulates():
    overrides = [*SG2_SMALL, "+loss/reg=[r1,pl]", "loss.d_regularizers.r1.every=1", "loss.g_regularizers.pl.every=1",
                 "data.batch_size=4"]
    method = build(overrides)
    method.accumulate = 2
    batches = iter(batches_of(overrides, 2, 4))
    for step in range(2):
        out = method.train_step(batches, step)
        assert {"reg/r1", "reg/pl"} <= set(out) and all(torch.isfinite(v) for v in out.values()), out
    assert float(method.g_regularizers["pl"].pl_mean) > 0


def fp16_on_cpu() -> str | None:
    """Why float16 autocast with a GradScaler cannot run on this CPU build (None: it can)."""
    try:
        with torch.autocast("cpu", dtype=torch.float16):
            if (torch.ones(2, 2) @ torch.ones(2, 2)).dtype != torch.float16:
                return "torch.autocast('cpu', float16) does not cast matmuls"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if not torch.amp.GradScaler("cpu").is_enabled():
                return "torch.amp.GradScaler('cpu') is disabled"
    except (RuntimeError, TypeError, ValueError) as exc:
        return f"float16 autocast / GradScaler on CPU unsupported: {exc}"
    return None


@pytest.mark.skipif(fp16_on_cpu() is not None, reason=str(fp16_on_cpu()))
@pytest.mark.parametrize("accumulate", [1, 2])
def test_float16_with_a_grad_scaler_trains_made(accumulate):
    method = build(MADE)
    method.accumulate = accumulate
    method.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 4, growth_interval=2)
    before = [p.detach().clone() for p in method.parameters()]
    batches = iter(batches_of(MADE, 16 // accumulate, 4 * accumulate))
    for step in range(4):
        with torch.autocast("cpu", dtype=torch.float16):
            out = method.train_step(batches, step)
        assert all(torch.isfinite(v) for v in out.values()), out
    # 4 steps without an overflow at growth_interval 2: the scale doubled twice
    assert method.scaler.get_scale() == 2.0 ** 6
    assert all(not torch.equal(a, b) for a, b in zip(before, method.parameters()))


class Tiny(Method):
    """loss = sum(w * x) per micro-batch: the gradient of w is the micro-batches' mean x."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0, -2.0, 3.0]))
        self.optimizers = {"model": torch.optim.Adam([self.w], lr=0.1)}


def test_a_nonfinite_gradient_makes_the_scaler_skip_the_step():
    method = Tiny()
    method.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    before = method.w.detach().clone()
    method.optimize("model", lambda: (method.w * torch.tensor([1.0, float("inf"), 1.0])).sum())
    assert torch.equal(method.w.detach(), before)  # skipped: the weights and Adam's state untouched
    assert not method.optimizers["model"].state
    assert method.scaler.get_scale() == 2.0 ** 7  # and the scale backed off
    out = method.optimize("model", lambda: method.w.sum() * float("nan"), clip_grad_norm=1.0)
    assert torch.equal(method.w.detach(), before) and float(out["grad_norm"]) == 0.0  # 0, not nan: no step
    method.optimize("model", lambda: method.w.sum())
    assert not torch.equal(method.w.detach(), before)


def test_grad_sync_runs_once_after_every_backward_and_before_unscaling_and_clipping():
    method = Tiny()
    method.accumulate = 2
    scale = 2.0 ** 10
    method.scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    xs = iter([torch.tensor([1.0, 2.0, 2.0]), torch.tensor([3.0, 2.0, 0.0])])
    seen: list[torch.Tensor] = []
    method.grad_sync = lambda opt: seen.append(opt.param_groups[0]["params"][0].grad.clone())

    out = method.optimize("model", lambda: ((method.w * next(xs)).sum(), {"x": torch.tensor(1.0)}),
                          clip_grad_norm=1e9)
    mean_x = torch.tensor([2.0, 2.0, 1.0])
    assert len(seen) == 1  # once per optimizer step, after both micro-batches
    torch.testing.assert_close(seen[0], mean_x * scale)  # still scaled: the inf check follows the sync
    torch.testing.assert_close(out["grad_norm"], mean_x.norm())  # clipping sees unscaled gradients
    assert out["x"] == 1.0


def test_optimize_averages_scalars_and_zeroes_gradients_first():
    method = Tiny()
    method.accumulate = 4
    method.w.grad = torch.full((3,), 100.0)  # stale: must not leak into the step
    values = iter([1.0, 2.0, 3.0, 6.0])
    method.optimizers["model"] = torch.optim.SGD([method.w], lr=1.0)
    out = method.optimize("model", lambda: (method.w.sum(), {"v": torch.tensor(next(values))}))
    assert float(out["v"]) == 3.0
    torch.testing.assert_close(method.w.detach(), torch.tensor([0.0, -3.0, 2.0]))  # one step of gradient 1


@pytest.mark.parametrize("overrides, targets", [
    (["model=dcgan", "loss=ns", "+loss/reg=[r1]"], ["G"]),
    (["model=dcgan", "loss=ns"], ["G", "D"]),
    (["model=dcgan", "loss=wgan_gp"], ["G"]),
    (["model=dcgan", "loss=wgan_div"], ["G"]),
    (["model=dcgan", "loss=wgan"], ["G", "D"]),  # weight clipping: no double backward
    ([*SG2_SMALL[1:], "model=stylegan2", "+loss/reg=[pl]"], ["D"]),
    ([*SG2_SMALL[1:], "model=stylegan2", "+loss/reg=[r1,pl]"], []),
    (["model=bigan", "loss=gan_qp", "model.z_dim=8"], ["G", "D", "E"]),
    (["model=vae", "data=digits8"], ["encoder", "decoder"]),
    (["model=vqvae", "model.hidden=16", "model.codes=16", "model.dim=8"], ["encoder", "decoder", "prior"]),
    (["model=realnvp", "data=digits8"], []),
    ([*MADE], ["net"]),
])
def test_compile_targets(overrides, targets):
    method = build([*GAN_SMALL, *overrides] if "model=dcgan" in overrides else overrides)
    assert sorted(method.compile_targets()) == sorted(targets)
    for name in targets:  # each names a submodule that owns parameters, not an EMA copy
        assert any(True for _ in method.get_submodule(name).parameters()) and not name.endswith("_ema")
