"""The GAN method's iteration as phases (genexp/methods/phases.py): the schedule a config gives, the data
the phases share, and the official StyleGAN2 training step checked against what NVIDIA's
stylegan2-ada-pytorch computed (shared/fixtures/stylegan2-official, see its README): one iteration of
genexp's own phases, every phase due, from a fixture's weights and latents, gives the official gradients,
losses, R1 penalties, path lengths and path-length mean."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from genexp.errors import UserError
from genexp.methods import build_method
from genexp.methods.phases import OFFICIAL_SCHEDULE, IterationData
from genexp.models.stylegan2_official import (
    discriminator_from_official,
    discriminator_kwargs,
    generator_from_official,
    generator_kwargs,
)
from genexp.optim.build import build_optimizer

from .conftest import compose, official_fixture

FIXTURES = Path(__file__).resolve().parents[2] / "shared/fixtures/stylegan2-official"
OFFICIAL = "loss.schedule=[Gmain,Greg,Dmain,Dreg]"
SG2_SMALL = ["model=stylegan2", "data=digits", "model.channel_base=64", "model.channel_max=8", "model.z_dim=8",
             "model.w_dim=8", "model.generator.mapping_layers=2", "model.discriminator.mbstd_group=2", "metrics=[]"]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Relative L2 distance of a from the reference b."""
    return float((a.detach().float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def build(overrides: list[str], seed: int = 0):
    torch.manual_seed(seed)
    return build_method(compose("train", overrides), torch.device("cpu"))


# ---------------------------------------------------------------------------------------------
# The schedule as data.

def test_default_schedule_is_d_steps_then_g_with_d_regularizers_on_ds_loss():
    method = build(["model=mlp", "data=ring", "metrics=[]", "loss=wgan_gp", "loss.d_steps=3"])
    assert [(p.name, p.net, p.repeat, p.interval) for p in method.phases()] == [
        ("Dmain", "D", 3, 1), ("Gmain", "G", 1, 1)]
    assert not method.d_reg_phases


def test_official_schedule_makes_each_regularizer_a_lazy_phase():
    method = build([*SG2_SMALL, "+loss/reg=[r1,pl]", OFFICIAL])
    assert [(p.name, p.net, p.interval, p.reg) for p in method.phases()] == [
        ("Gmain", "G", 1, False), ("Greg/pl", "G", 4, True), ("Dmain", "D", 1, False), ("Dreg/r1", "D", 16, True)]
    assert tuple(method.schedule) == OFFICIAL_SCHEDULE


@pytest.mark.parametrize("pack", ["stylegan2_ffhq256", "stylegan2_cifar10"])
def test_stylegan2_packs_run_the_official_order_with_compensated_adam(pack):
    cfg = compose("train", [f"experiment={pack}", "data.path=x" if "ffhq" in pack else "data.root=x"])
    assert list(cfg.loss.schedule) == list(OFFICIAL_SCHEDULE)
    # training_loop.py: a net with lazy regularisation every k steps gets lr * c and betas ** c, c = k/(k+1)
    # (genexp applies it when it builds the optimizer: tests/test_optim_follow.py)
    for net, k in (("generator", 4), ("discriminator", 16)):
        c = k / (k + 1)
        group = build_optimizer(cfg.optim[net], [torch.nn.Parameter(torch.zeros(1))]).param_groups[0]
        assert group["lr"] == pytest.approx(0.0025 * c, rel=1e-6)
        assert list(group["betas"]) == pytest.approx([0.0, 0.99 ** c], abs=1e-5)


@pytest.mark.parametrize("schedule,words", [
    ("[Gmain,Dmain,Dsomething]", "Dsomething"),
    ("[Gmain,Dmain,Dmain]", "twice"),
    ("[Gmain,Greg]", "no Dmain"),
])
def test_bad_schedules_are_refused_in_one_line(schedule, words):
    error = user_error(["model=mlp", "data=ring", "metrics=[]", f"loss.schedule={schedule}"])
    assert words in str(error) and "\n" not in str(error)


def test_g_regularizers_need_a_greg_phase():
    assert "add Greg" in str(user_error([*SG2_SMALL, "+loss/reg=[pl]", "loss.schedule=[Dmain,Gmain]"]))


def user_error(overrides: list[str]) -> UserError:
    """The UserError building the method raises (hydra's instantiate wraps it; the CLI unwraps it)."""
    with pytest.raises(Exception) as caught:
        build(overrides)
    error = caught.value if isinstance(caught.value, UserError) else caught.value.__cause__
    assert isinstance(error, UserError), caught.value
    return error


def test_iteration_data_shares_one_batch_in_the_official_order_and_draws_per_d_step_otherwise():
    def run(order):  # (phase draws?, micro-batches per step) -> the batch each step used
        stream = iter(range(100))
        data = IterationData((torch.full((2,), float(i)), None) for i in stream)
        used = []
        for draws in order:
            data.start(draws)
            used.append([int(data.next().real[0]) for _ in range(2)])
        return used
    # genexp's order: 3 D steps (each a new batch of 2 micro-batches), then G on the last D step's batch
    assert run([True, True, True, False, False]) == [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]]
    # official: G draws, D's first step takes the same batch, its second a new one, Dreg the latest
    assert run([False, False, True, True, False]) == [[0, 1], [0, 1], [0, 1], [2, 3], [2, 3]]


@pytest.mark.parametrize("overrides", [
    [*SG2_SMALL, "+loss/reg=[r1,pl]", "loss.d_steps=2", "model.method.ada.enabled=true", "model.method.ada.p=0.2"],
    ["model=bigan", "loss=ns", "data=digits", "metrics=[]", "+loss/reg=[r1]"],
    ["model=ogan", "loss=rsgan", "data=digits", "metrics=[]", "+loss/reg=[r2]"],
    ["model=dcgan", "loss=wgan_gp", "data=digits", "metrics=[]", "model.generator.base_channels=8",
     "model.discriminator.base_channels=8", "model.method.pack=2"],
], ids=["stylegan2", "bigan", "ogan", "dcgan_pack"])
def test_every_method_trains_in_the_official_order(overrides):
    from genexp.data import build_dataset
    from genexp.data.loader import InfiniteLoader

    method = build([*overrides, OFFICIAL])
    loader = InfiniteLoader(build_dataset(compose("train", overrides).data), 8, seed=0)
    nets: list[str] = []
    for name, opt in method.optimizers.items():
        opt.register_step_pre_hook(lambda *_, name=name: nets.append(name))
    lazy = {f"reg/{name}" for name, reg in {**method.d_regularizers, **method.g_regularizers}.items() if reg.every > 1}
    drawn = []

    def counted():
        while True:
            drawn.append(step)
            yield next(loader)
    batches = counted()
    for step in range(2):
        nets.clear()
        out = method.train_step(batches, step)
        assert drawn.count(step) == method.d_steps  # G's and the lazy phases take D's first batch
        assert all(torch.isfinite(v) for v in out.values()), out
        assert {"loss/d", "loss/g", "d/real", "d/fake"} <= set(out)
        # G's phases, then D's; the lazy ones (R1, R2 every 16, PL every 4) at step 0 only
        due = [phase for phase in method.phases() if phase.due(step)]
        assert nets == [phase.net for phase in due for _ in range(phase.repeat)]
        assert nets == sorted(nets, key=lambda net: net != "G"), nets
        assert (lazy <= set(out)) if step == 0 else not (lazy & set(out))
    assert method.d_steps_done == 2 * method.d_steps


# ---------------------------------------------------------------------------------------------
# The official training step against the official code's numbers.

@pytest.fixture(scope="module", params=["uncond32", "cond32_clamp"])
def ref(request):
    return official_fixture(request.param)


def official_method(ref, pl_batch_shrink: int = 1):
    """A GAN method from a stylegan2 config with the fixture's shapes and the official phases, its nets
    holding the fixture's weights; lr 0, so that every phase of the iteration sees those weights."""
    g, d = generator_kwargs(ref["G_kwargs"], bf16=False), discriminator_kwargs(ref["D_kwargs"], bf16=False)
    clamp = "null" if g["conv_clamp"] is None else g["conv_clamp"]
    overrides = [
        "model=stylegan2", "data=cifar10", "data.root=x", "metrics=[]", "loss=ns", "+loss/reg=[r1,pl]", OFFICIAL,
        "loss.d_regularizers.r1.weight=0.5",  # gamma = 1
        f"loss.g_regularizers.pl.batch_shrink={pl_batch_shrink}", f"model.num_classes={g['num_classes']}",
        f"model.z_dim={g['z_dim']}", f"model.w_dim={g['w_dim']}", f"model.channel_base={g['channel_base']}",
        f"model.channel_max={g['channel_max']}", f"model.generator.mapping_layers={g['mapping_layers']}",
        "model.generator.style_mixing=0", f"model.generator.conv_clamp={clamp}",
        f"model.discriminator.mbstd_group={d['mbstd_group']}", f"model.discriminator.architecture={d['architecture']}",
        "optim.lr=0",
    ]
    method = build(overrides)
    for mine, which in ((method.G, "G"), (method.G_ema, "G_ema")):
        mine.load_state_dict(generator_from_official(ref["G_kwargs"], ref[which], bf16=False).state_dict())
    method.D.load_state_dict(discriminator_from_official(ref["D_kwargs"], ref["D"], bf16=False).state_dict())
    method.train()
    method.G_ema.eval()
    return method


def fixture_inputs(method, ref):
    """The fixture's latents for every draw, its fakes for D's phases, constant noise in G and its
    path-length noise: the inputs the official numbers were computed from."""
    method.latents = lambda n, dim, generator=None: ref["z"][:n].clone()
    method.fakes = lambda n, labels: ref["d_fake"][:n].clone()
    synthesis = method.G.synthesis.forward
    method.G.synthesis.forward = lambda ws, noise_mode="random", fused_modconv=None: synthesis(ws, "const",
                                                                                                fused_modconv)
    pl = method.g_regularizers["pl"]
    pl.noise = lambda img: ref["pl_noise"][:len(img)]
    lengths = []
    compute = pl.lengths
    pl.lengths = lambda img, ws, noise=None: lengths.append(compute(img, ws, noise)) or lengths[-1]
    return lengths


def batches(ref):
    while True:
        yield ref["real"], ref["labels"]


def one_iteration(method, ref):
    """Runs train_step at step 0 (every phase due); returns its scalars and, per optimizer step in
    order, (net, gradients by parameter name, G's w_avg)."""
    steps = []
    nets = {"G": method.G, "D": method.D}
    for name, opt in method.optimizers.items():
        def record(*_, name=name):
            grads = {k: p.grad.clone() for k, p in nets[name].named_parameters() if p.grad is not None}
            steps.append((name, grads, method.G.mapping.w_avg.clone()))
        opt.register_step_pre_hook(record)
    out = method.train_step(batches(ref), 0)
    return out, steps


def check_grads(grads: dict, expected: dict) -> None:
    """As tests/test_stylegan2_parity.py: every tensor within 1e-4 relative L2, the 0-d noise strengths
    (sums that nearly cancel) within 1e-3, all together within 1e-5."""
    assert expected.keys() == grads.keys()
    for name, want in expected.items():
        assert rel(grads[name], want) < (1e-3 if want.dim() == 0 else 1e-4), name
    ours = torch.cat([grads[name].flatten() for name in expected])
    assert rel(ours, torch.cat([want.flatten() for want in expected.values()])) < 1e-5


def reference_pl_grads(ref) -> dict:
    """G's gradient of the official Greg loss, gain 4, by the plain formula on an independently built G."""
    G = generator_from_official(ref["G_kwargs"], ref["G"], bf16=False, style_mixing=0.0).train()
    ws = G.mapping(ref["z"], G.one_hot(ref["labels"], len(ref["z"]), "cpu"))
    img = G.synthesis(ws, noise_mode="const")
    (grad,) = torch.autograd.grad((img * ref["pl_noise"]).sum(), ws, create_graph=True)
    lengths = grad.square().sum(2).mean(1).sqrt()
    pl_mean = torch.zeros([]).lerp(lengths.mean().detach(), 0.01)
    (2.0 * (lengths - pl_mean).square().mean() * 4).backward()
    return {name: p.grad for name, p in G.named_parameters() if p.grad is not None}


def test_one_official_iteration_equals_the_official_formulas(ref):
    method = official_method(ref)
    lengths = fixture_inputs(method, ref)
    out, steps = one_iteration(method, ref)
    assert [net for net, _, _ in steps] == ["G", "G", "D", "D"]  # Gmain, Greg, Dmain, Dreg
    (_, g_main, w_avg), (_, g_reg, _), (_, d_main, _), (_, d_reg, _) = steps

    # Gmain: non-saturating loss of G in training mode; w_avg after that one training forward
    assert rel(out["loss/g"], ref["g_main_loss"]) < 1e-5
    check_grads(g_main, ref["g_main_grads"])
    assert rel(w_avg, ref["w_avg_after_train_forward"]) < 1e-5

    # Greg: path lengths for the given noise, the running mean after one update, the penalty x interval 4
    pl = method.g_regularizers["pl"]
    assert rel(lengths[0], ref["pl_lengths"]) < 1e-4
    assert rel(pl.pl_mean, ref["pl_mean_after"]) < 1e-4
    want = 2.0 * (ref["pl_lengths"] - ref["pl_mean_after"]).square().mean()
    assert rel(out["reg/pl"], want) < 1e-4
    expected = reference_pl_grads(ref)
    assert expected.keys() == g_reg.keys()
    for name, want in expected.items():  # the gradients of a double backward: 1e-3 on the 0-d ones
        assert rel(g_reg[name], want) < (1e-3 if want.dim() == 0 else 1e-4), name

    # Dmain + Dreg: the official D loss with R1 (gamma = 1) is Dmain's loss plus Dreg's / its interval 16
    r1 = method.d_regularizers["r1"]
    assert r1.every == 16
    assert rel(out["reg/r1"], ref["r1_penalty"].mean() / 2) < 1e-4
    assert rel(out["loss/d"] + out["reg/r1"], ref["d_loss_with_r1_gamma1"]) < 1e-5
    assert d_reg.keys() < d_main.keys()  # R1 does not reach the last layer's bias
    check_grads({k: d_main[k] + d_reg[k] / 16 if k in d_reg else d_main[k] for k in d_main}, ref["d_grads"])


def test_path_length_phase_takes_pl_batch_shrink_of_the_batch(ref):
    method = official_method(ref, pl_batch_shrink=2)
    lengths = fixture_inputs(method, ref)
    one_iteration(method, ref)
    assert len(lengths) == 1 and len(lengths[0]) == 2
    assert rel(lengths[0], ref["pl_lengths"][:2]) < 1e-4
    assert rel(method.g_regularizers["pl"].pl_mean, 0.01 * ref["pl_lengths"][:2].mean()) < 1e-4


class ConvBackwards(TorchDispatchMode):
    """Records the output masks (input, weight, bias) of every convolution backward."""

    def __init__(self):
        super().__init__()
        self.masks = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution_backward.default:
            self.masks.append(tuple(args[-1]))
        return func(*args, **(kwargs or {}))


def test_r1_input_gradient_computes_no_weight_gradients(ref):
    """stylegan2-ada's no_weight_gradients: R1's first backward needs only the input gradient."""
    method = official_method(ref)
    r1 = method.d_regularizers["r1"]
    real = ref["real"]
    with ConvBackwards() as spy:
        norms = r1.gradient_norm(method.D, real, ref["labels"])
    assert spy.masks and all(not weight for _, weight, _ in spy.masks), spy.masks
    assert rel(norms.square(), ref["r1_penalty"]) < 1e-4


def test_official_order_resumes_bit_exactly():
    """The phases keep no state of their own: the checkpointed method (pl_mean, D's step clock, ADA's p)
    continues as if never stopped."""
    from genexp.data import build_dataset
    from genexp.data.loader import InfiniteLoader

    overrides = [*SG2_SMALL, "+loss/reg=[r1,pl]", "loss.d_regularizers.r1.every=2", "loss.g_regularizers.pl.every=3",
                 "loss.d_steps=2", "model.method.ada.enabled=true", "model.method.ada.p=0.2", OFFICIAL]
    loader = InfiniteLoader(build_dataset(compose("train", overrides).data), 4, seed=0)
    stream = [next(loader) for _ in range(8)]

    def train(method, batches, steps):
        for step in steps:
            method.train_step(batches, step)

    whole, first = build(overrides), build(overrides)
    torch.manual_seed(1)
    train(whole, iter(stream), range(4))
    torch.manual_seed(1)
    batches = iter(stream)
    train(first, batches, range(2))
    state, rng = first.state_dict_all(), torch.get_rng_state()
    second = build(overrides, seed=7)
    second.load_state_dict_all(state)
    torch.set_rng_state(rng)
    train(second, batches, range(2, 4))
    for (name, p), q in zip(whole.state_dict().items(), second.state_dict().values()):
        if torch.is_tensor(p):
            assert torch.equal(p, q), name
    assert whole.d_steps_done == second.d_steps_done == 8
    pl_means = [method.g_regularizers["pl"].pl_mean for method in (whole, second)]
    assert torch.equal(*pl_means) and pl_means[0] > 0
