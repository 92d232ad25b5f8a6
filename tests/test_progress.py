"""Progress and throughput: kimg counts the reals drawn (D's k steps included), rates never read
'0.0 it/s', plain log lines carry rate, kimg and ETA, eval says what it computes."""

from __future__ import annotations

import json

from genexp.logger.console import Console, Counter, PlainProgress
from genexp.training.throughput import duration, images_seen, rate_text

from .conftest import TINY


def test_rates_and_durations_read_well():
    assert rate_text(12.34) == "12.3 it/s" and rate_text(0.25) == "4.0 s/it" and rate_text(0) == "- it/s"
    assert rate_text(812.0, "img") == "812.0 img/s"
    assert duration(5) == "5 s" and duration(125) == "2 min 5 s" and duration(7300) == "2 h 1 min"


def test_counter_says_the_end_and_throttles_the_rest():
    said = []
    c = Counter(said.append, "eval: generated images", 1000, every_s=3600)
    for done in range(0, 1000, 100):
        c.update(done)
    assert said == []  # throttled
    c.update(1000)
    assert len(said) == 1 and said[0].startswith("eval: generated images 1,000/1,000  ") and "img/s" in said[0]


def test_plain_progress_line_has_rate_kimg_and_eta(capsys):
    bar = PlainProgress(Console("plain"), total=100, start=0)
    bar.report(10, {"loss/g": 0.5, "train/kimg": 0.64, "train/images_per_s": 123.0})
    line = capsys.readouterr().out.strip()
    assert line.startswith("step  10/100  loss/g 0.5  ") and "kimg 0.6  123.0 img/s" in line and "ETA" in line
    assert "train/" not in line


class Loader:
    epoch, index, batches_per_epoch, batch_size = 2, 3, 10, 16


def test_images_seen_is_the_loaders_position():
    assert images_seen(Loader()) == (2 * 10 + 3) * 16


def test_wgan_gp_steps_see_five_batches_and_the_log_says_so(run, tmp_path):
    """Steps count G updates: WGAN-GP's 5 D steps per G step draw 5 batches of reals each step."""
    out = {}
    for loss in ("ns", "wgan_gp"):
        res = run("train", *TINY, f"loss={loss}", "metrics=[]", f"hydra.run.dir={tmp_path / loss}")
        assert res.code == 0, res
        out[loss] = [json.loads(line) for line in (tmp_path / loss / "metrics.jsonl").read_text().splitlines()]
    batch = 16  # TINY's data.batch_size
    assert [r["train/kimg"] for r in out["ns"]] == [batch / 1000, 2 * batch / 1000]
    assert [r["train/kimg"] for r in out["wgan_gp"]] == [5 * batch / 1000, 10 * batch / 1000]
    last = out["wgan_gp"][-1]
    assert last["train/images_per_s"] > 0 and last["train/peak_mem_mb"] > 0
    assert {"train/lr/G", "train/lr/D"} <= set(last)


def test_max_kimg_ends_training_at_a_budget_of_images(run, tmp_path):
    from .test_bad_input import one_error_line

    out = tmp_path / "kimg"
    res = run("train", *TINY, "trainer.max_steps=1000", "trainer.max_kimg=0.05", "metrics=[]", f"hydra.run.dir={out}")
    assert res.code == 0, res
    assert "trainer.max_kimg=0.05 reached: training stops at step 4 (64 images drawn)" in res.err
    assert json.loads((out / "run.json").read_text())["step"] == 4 and (out / "checkpoints/last.pt").is_file()
    line = one_error_line(run("train", "trainer.max_kimg=-1.0", f"hydra.run.dir={tmp_path / 'bad'}"))
    assert "trainer.max_kimg=-1.0: a positive number" in line and not (tmp_path / "bad").exists()


def test_compare_losses_pack_sweeps_every_gan_objective_times_three_seeds():
    from genexp.config.prepare import parse, with_sweeper_params

    from .conftest import CONF, compose

    overrides = with_sweeper_params("train", ["hparams_search=compare_losses"], CONF)
    swept = {o.get_key_element(): list(o.sweep_iterator()) for o in parse(overrides) if o.is_sweep_override()}
    losses = {p.stem for p in (CONF / "loss").glob("*.yaml")} - {"edm", "elbo", "nll", "vq"}  # the GAN objectives
    assert set(swept["loss"]) == losses and swept["trainer.seed"] == [0, 1, 2]
    for loss in sorted(losses):
        cfg = compose("train", ["hparams_search=compare_losses", f"loss={loss}", "trainer.seed=1"])
        assert cfg.trainer.max_kimg == 192 and list(cfg.metrics) == ["fid"]
