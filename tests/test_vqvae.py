"""VQ-VAE: the quantiser's formulas by hand, the prior's schedule, and train -> eval -> sample by the CLI."""

from __future__ import annotations

import json

import pytest
import torch

from genexp.models.vqvae import Decoder, Encoder, VectorQuantizer, usage_and_perplexity

from .conftest import compose

# Tiny nets: a CLI run takes seconds.
TINY_VQ = [
    "model=vqvae", "logger=none", "trainer.progress=plain", "trainer.max_steps=3", "trainer.log_every=1",
    "trainer.sample_every=3", "trainer.eval_every=3", "trainer.ckpt_every=3", "trainer.grid_samples=4",
    "data.batch_size=16", "model.hidden=16", "model.codes=16", "model.dim=8",
    "model.encoder.residual_hidden=8", "model.decoder.residual_hidden=8", "model.prior.hidden=16",
    "model.prior.layers=2", "metrics=[recon]", "metrics.recon.num_samples=32",
]


def quantizer(codes=3, dim=2, **kw) -> VectorQuantizer:
    q = VectorQuantizer(codes=codes, dim=dim, **kw)
    q.initialized.fill_(True)  # skip the first-batch initialisation: these tests set the codebook by hand
    return q


def as_map(vectors: list[list[float]]) -> torch.Tensor:
    """M vectors of size D -> a (1, D, 1, M) encoder output."""
    return torch.tensor(vectors).t()[None, :, None, :]


def test_ema_update_matches_its_formula_by_hand():
    q = quantizer(codes=3, dim=2, ema=True, decay=0.9, eps=0.1, restart_threshold=0.0)
    q.cluster_size.copy_(torch.tensor([2.0, 1.0, 0.5]))
    q.embed_sum.copy_(torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.5]]))
    z = as_map([[1.0, 3.0], [3.0, 1.0], [0.0, 2.0]])
    codes = torch.tensor([[[0, 0, 1]]])  # two vectors to code 0, one to code 1, none to code 2
    q.update(z, codes)
    # N <- 0.9 N + 0.1 n with n = (2, 1, 0)
    n_ema = [0.9 * 2 + 0.1 * 2, 0.9 * 1 + 0.1 * 1, 0.9 * 0.5 + 0.1 * 0]  # 2.0, 1.0, 0.45
    # m <- 0.9 m + 0.1 * (sum of the assigned vectors)
    m = [[0.9 * 2 + 0.1 * (1 + 3), 0.9 * 0 + 0.1 * (3 + 1)],
         [0.9 * 0 + 0.1 * 0, 0.9 * 1 + 0.1 * 2],
         [0.9 * 0.5, 0.9 * 0.5]]
    total = sum(n_ema)  # 3.45
    smoothed = [(n + 0.1) / (total + 3 * 0.1) * total for n in n_ema]  # Laplace smoothing
    e = [[m[i][d] / smoothed[i] for d in range(2)] for i in range(3)]
    assert torch.allclose(q.cluster_size, torch.tensor(n_ema), atol=1e-6)
    assert torch.allclose(q.embed_sum, torch.tensor(m), atol=1e-6)
    assert torch.allclose(q.embedding, torch.tensor(e), atol=1e-6)
    # the numbers themselves, once: code 0 = (2.2, 0.4) / (2.1 / 3.75 * 3.45)
    assert q.embedding[0].tolist() == pytest.approx([2.2 / (2.1 / 3.75 * 3.45), 0.4 / (2.1 / 3.75 * 3.45)], abs=1e-6)


def test_quantise_picks_the_nearest_code_with_straight_through_gradients():
    q = quantizer(codes=3, dim=2, ema=False)
    q.embedding.data.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0], [-2.0, 0.0]]))
    z = as_map([[0.9, 1.2], [-1.5, 0.2], [0.1, -0.1]]).requires_grad_(True)
    out = q(z)
    assert out.codes.tolist() == [[[1, 2, 0]]]
    assert torch.equal(out.z_q.detach(), as_map([[1.0, 1.0], [-2.0, 0.0], [0.0, 0.0]]))
    diffs = torch.tensor([[-0.1, 0.2], [0.5, 0.2], [0.1, -0.1]])  # z_e - e
    assert out.commit.item() == pytest.approx(diffs.pow(2).mean().item(), rel=1e-5)
    assert out.codebook.item() == pytest.approx(out.commit.item(), rel=1e-5)
    # straight-through: d z_q / d z_e is the identity; the codebook loss reaches only the codebook
    out.z_q.sum().backward(retain_graph=True)
    assert torch.equal(z.grad, torch.ones_like(z))
    z.grad = None
    out.codebook.backward()
    assert z.grad is None and q.embedding.grad is not None and q.embedding.grad.abs().sum() > 0


def test_dead_codes_restart_on_encoder_outputs_of_the_batch():
    torch.manual_seed(0)
    q = quantizer(codes=4, dim=2, ema=True, decay=0.5, restart_threshold=0.3)
    q.cluster_size.copy_(torch.tensor([1.0, 1.0, 0.4, 0.5]))
    q.embedding.copy_(torch.tensor([[0.0, 0.0], [5.0, 5.0], [9.0, 9.0], [7.0, 7.0]]))
    q.embed_sum.copy_(q.embedding * q.cluster_size[:, None])
    batch = [[0.1, 0.0], [4.9, 5.0], [0.0, 0.2], [5.2, 5.1]]
    z = as_map(batch)
    restarted = q.update(z, q(z).codes)
    # codes 2 (0.4 -> 0.2) and 3 (0.5 -> 0.25) fell below 0.3; codes 0 and 1 stay as the EMA put them
    assert int(restarted) == 2
    assert q.cluster_size.tolist() == pytest.approx([1.5, 1.5, 1.0, 1.0])
    for i in (2, 3):
        assert q.embedding[i].tolist() in [pytest.approx(v) for v in batch]
        assert torch.allclose(q.embed_sum[i], q.embedding[i])
    assert q.embedding[1].tolist() == pytest.approx([7.55 / 1.5] * 2, rel=1e-3)


def test_first_update_puts_every_code_on_the_batch_and_counts_no_restart():
    torch.manual_seed(0)
    for ema in (True, False):
        q = VectorQuantizer(codes=8, dim=3, ema=ema)
        z = torch.randn(2, 3, 4, 4) + 10.0  # far from the initial codebook around 0
        batch = z.permute(0, 2, 3, 1).reshape(-1, 3)
        assert int(q.update(z, q(z).codes)) == 0
        dist = torch.cdist(q.embedding.detach(), batch).min(1).values
        assert bool(q.initialized) and dist.max() < 1e-5
        usage, perplexity = usage_and_perplexity(q(z).codes, 8)
        assert usage > 0.5 and perplexity > 3


def test_usage_and_perplexity():
    usage, perplexity = usage_and_perplexity(torch.tensor([0, 0, 1, 1]), 4)
    assert usage.item() == 0.5 and perplexity.item() == pytest.approx(2.0)
    usage, perplexity = usage_and_perplexity(torch.tensor([3, 3, 3]), 4)
    assert usage.item() == 0.25 and perplexity.item() == pytest.approx(1.0)


def test_encoder_decoder_shapes():
    enc, dec = Encoder(1, 16, dim=8, hidden=16, downsamples=2), Decoder(1, 16, dim=8, hidden=16, downsamples=2)
    z = enc(torch.zeros(2, 1, 16, 16))
    assert z.shape == (2, 8, 4, 4) and dec(z).shape == (2, 1, 16, 16)
    with pytest.raises(ValueError, match="downsamples"):
        Encoder(1, 12, downsamples=3)


def tiny_method(*overrides: str):
    from genexp.methods import build_method

    cfg = compose("train", [*TINY_VQ, *overrides])
    return build_method(cfg, torch.device("cpu")), cfg


def test_prior_trains_from_prior_start_and_sample_decodes_its_codes():
    from genexp.data import build_dataset
    from genexp.data.loader import InfiniteLoader

    torch.manual_seed(0)
    method, cfg = tiny_method("trainer.max_steps=4", "model.method.prior_start=0.5")
    assert method.prior_start_step == 2 and set(method.optimizers) == {"model", "prior"}
    loader = InfiniteLoader(build_dataset(cfg.data), 16, seed=0)
    prior_before = [p.detach().clone() for p in method.prior.parameters()]
    enc_before = [p.detach().clone() for p in method.encoder.parameters()]
    for step in range(2):
        out = method.train_step(loader, step)
    assert all(torch.equal(a, b) for a, b in zip(prior_before, method.prior.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(enc_before, method.encoder.parameters()))
    assert {"loss/recon", "loss/commit", "codebook/usage", "codebook/perplexity", "loss/prior"} <= set(out)
    method.train_step(loader, 2)
    assert not all(torch.equal(a, b) for a, b in zip(prior_before, method.prior.parameters()))

    method.eval()
    samples = method.sample(5, generator=torch.Generator().manual_seed(1))
    codes = method.prior.sample(5, (1, 4, 4), generator=torch.Generator().manual_seed(1))
    assert samples.shape == (5, 1, 16, 16) and samples.abs().max() <= 1
    assert torch.equal(samples, method.decode(codes[:, 0]))
    x = torch.stack([loader.dataset[i][0] for i in range(3)])
    assert method.encode(x).shape == (3, 4, 4) and method.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("override, words", [
    ("model.downsamples=5", "downsamples"),
    ("model.quantizer.restart_threshold=2", "model.quantizer: restart_threshold=2"),
    ("model.method.prior_start=1.5", "prior_start"),
    ("loss.recon=bce", "loss.recon=bce"),
])
def test_bad_settings_are_one_line_user_errors(override, words):
    from genexp.commands import user_error_in

    with pytest.raises(Exception) as info:
        tiny_method(override)
    err = user_error_in(info.value)  # the CLI prints this one line (Hydra's instantiate wraps it)
    assert err is not None and words in str(err), info.value


def test_plain_codebook_learns_by_its_loss():
    torch.manual_seed(0)
    method, cfg = tiny_method("model.quantizer.ema=false")
    from genexp.data import build_dataset
    from genexp.data.loader import InfiniteLoader

    loader = InfiniteLoader(build_dataset(cfg.data), 16, seed=0)
    method.train_step(loader, 0)  # initialises the codebook on the batch
    before = method.quantizer.embedding.detach().clone()
    out = method.train_step(loader, 1)
    assert "loss/codebook" in out and out["loss/codebook"] > 0
    assert not torch.equal(before, method.quantizer.embedding.detach())


def test_train_eval_sample_through_the_cli(run, tmp_path):
    train_dir = tmp_path / "train"
    res = run("train", *TINY_VQ, "model.method.prior_start=0.3", f"hydra.run.dir={train_dir}")
    assert res.code == 0, res
    lines = [json.loads(line) for line in (train_dir / "metrics.jsonl").read_text().splitlines()]
    assert [rec["step"] for rec in lines] == [1, 2, 3]
    for key in ("loss/recon", "loss/commit", "codebook/usage", "codebook/perplexity", "loss/prior"):
        assert key in lines[0], key
    assert 0 < lines[-1]["codebook/usage"] <= 1 and 1 <= lines[-1]["codebook/perplexity"] <= 16
    assert "recon/mse@test:32" in lines[-1]
    for f in ("checkpoints/last.pt", "samples/step_000003.png", "samples/recon_000003.png"):
        assert (train_dir / f).is_file(), f

    ckpt = train_dir / "checkpoints" / "last.pt"
    res = run("eval", f"ckpt={ckpt}", "metrics=[recon]", "metrics.recon.num_samples=32",
              f"hydra.run.dir={tmp_path / 'eval'}")
    assert res.code == 0, res
    record = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert record["metrics"]["recon/mse@test:32"] == pytest.approx(lines[-1]["recon/mse@test:32"], abs=1e-6)

    res = run("sample", f"ckpt={ckpt}", "n=9", "seed=3", f"hydra.run.dir={tmp_path / 'sample'}")
    assert res.code == 0, res
    samples = torch.load(tmp_path / "sample" / "samples.pt", weights_only=True)["samples"]
    assert samples.shape == (9, 1, 16, 16) and samples.abs().max() <= 1
    assert len({s.numpy().tobytes() for s in samples}) > 1  # codes drawn from the prior, not one image
