"""Each user mistake: one line on stderr, exit code 2, no traceback, nothing overwritten."""

from __future__ import annotations

import pytest
import torch

from .conftest import TINY


def one_error_line(res) -> str:
    assert res.code == 2, res
    assert "Traceback" not in res.err and "Traceback" not in res.out, res
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1, res
    assert lines[0].startswith("genexp: error:"), res
    return lines[0]


@pytest.mark.parametrize("args, expect", [
    (["model=nosuch"], "model=nosuch: no such option"),
    (["trainer.nosuch=1"], "nosuch"),
    (["trainer.max_steps=abc"], "expected an integer"),
    (["optim.lr=fast"], "expected a number"),
    (["trainer.deterministic=maybe"], "true or false"),
    (["data.resolution=32", "model.resolution=64"], "model.resolution=64 but data.resolution=32"),
    (["model=mlp"], "model=mlp takes points data"),
    (["loss=wgan_gp", "model.discriminator.norm=batch"], "batch norm"),
    (["loss=wgan", "loss.family=vae"], "loss=wgan is an objective for vae models but model=dcgan is a gan"),
    (["data=images"], "needs a value for 'data.path'"),
    (["resume=/nonexistent/run"], "no such run directory"),
    (["trainer.max_steps=${nosuch.key}"], "nosuch"),
    (["experiment=ring_mlp", "model.generator.norm=group"], "model.generator.norm=group: use none or batch"),
    (["optim.decay=step"], "optim.decay must be one of constant, linear, cosine"),
    (["trainer.precision=8"], "trainer.precision=8: use 32, bf16"),
    (["trainer.accumulate=0"], "trainer.accumulate=0: a whole number of micro-batches"),
    (["data.batch_size=63", "trainer.accumulate=2"], "data.batch_size=63 does not split into trainer.accumulate=2"),
    (["trainer.compile=maybe"], "true or false"),
    (["trainer.channels_last=2"], "true or false"),
    (["optim.decay=linear", "optim.decay_start=1.5"], "optim.decay_start is a fraction"),
])
def test_config_mistakes(run, args, expect):
    assert expect in one_error_line(run("train", *args))


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_asked_for_without_a_gpu(run, tmp_path):
    line = one_error_line(run("train", *TINY, "trainer.device=cuda", f"hydra.run.dir={tmp_path / 'r'}"))
    assert "no CUDA GPU" in line and not (tmp_path / "r" / "checkpoints").exists()


def test_unknown_command(run):
    assert "unknown command 'trian'" in one_error_line(run("trian"))


def test_eval_needs_ckpt(run):
    assert "ckpt" in one_error_line(run("eval"))


def test_missing_data_path(run, tmp_path):
    line = one_error_line(run("train", "data=images", f"data.path={tmp_path / 'nope.zip'}", *TINY,
                              f"hydra.run.dir={tmp_path / 'r'}"))
    assert "no such file" in line


def test_wrong_image_folder_contents(run, tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("not an image")
    line = one_error_line(run("train", "data=images", f"data.path={tmp_path / 'folder'}", *TINY,
                              f"hydra.run.dir={tmp_path / 'r'}"))
    assert "holds no images" in line


def test_mnist_files_missing_offline(run, tmp_path):
    line = one_error_line(run("train", "data=mnist", f"data.root={tmp_path}", "data.download=false", *TINY,
                              f"hydra.run.dir={tmp_path / 'r'}"))
    assert "train-images-idx3-ubyte" in line


@pytest.mark.parametrize("content, expect", [
    (None, "does not exist"),
    (b"PK\x03\x04 torn", "cannot be read"),
    ("foreign", "not written by genexp"),
])
def test_bad_checkpoints(run, tmp_path, content, expect):
    ckpt = tmp_path / "c.pt"
    if content == "foreign":
        import torch

        torch.save({"state_dict": {"w": torch.zeros(2)}}, ckpt)
    elif content is not None:
        ckpt.write_bytes(content)
    for command in ("eval", "sample"):
        assert expect in one_error_line(run(command, f"ckpt={ckpt}", f"hydra.run.dir={tmp_path / command}"))
    if content is not None:
        assert expect in one_error_line(run("train", f"resume={ckpt}"))


def test_existing_run_dir_is_not_overwritten(run, tmp_path):
    out = tmp_path / "r"
    res = run("train", *TINY, "metrics=[]", f"hydra.run.dir={out}")
    assert res.code == 0, res
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    line = one_error_line(run("train", *TINY, "trainer.seed=5", f"hydra.run.dir={out}"))
    assert "already holds an earlier run" in line
    assert before == {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}


def test_eval_on_data_of_another_resolution(run, tmp_path):
    out = tmp_path / "r"
    assert run("train", *TINY, "metrics=[]", f"hydra.run.dir={out}").code == 0
    line = one_error_line(run("eval", f"ckpt={out / 'checkpoints/last.pt'}", "data=digits", "data.resolution=32",
                              f"hydra.run.dir={tmp_path / 'e'}"))
    assert "data.resolution=16" in line


@pytest.mark.parametrize("args, expect", [
    (["model.num_classes=10", "data=images", "data.path=/x.zip"], "needs labelled data"),
    (["model.num_classes=${data.num_classes}", "model.method.pack=2"], "packed samples have no single label"),
    (["model.method.augment=[color,flip]"], "unknown augmentation 'flip'"),
])
def test_conditional_mistakes(run, args, expect):
    assert expect in one_error_line(run("train", *args))


def test_class_of_an_unconditional_model(run, tmp_path):
    out = tmp_path / "r"
    assert run("train", *TINY, "metrics=[]", f"hydra.run.dir={out}").code == 0
    line = one_error_line(run("sample", f"ckpt={out / 'checkpoints/last.pt'}", "class=3",
                              f"hydra.run.dir={tmp_path / 's'}"))
    assert "unconditional" in line


@pytest.mark.slow
def test_class_out_of_range(run, tmp_path):
    out = tmp_path / "r"
    assert run("train", *TINY, "metrics=[]", "experiment=digits_cgan", f"hydra.run.dir={out}").code == 0
    res = run("sample", f"ckpt={out / 'checkpoints/last.pt'}", "class=4", "n=5", f"hydra.run.dir={tmp_path / 's'}")
    assert res.code == 0, res
    assert torch.load(tmp_path / "s/samples.pt", weights_only=True)["labels"].tolist() == [4] * 5
    assert "classes 0..9" in one_error_line(run("sample", f"ckpt={out / 'checkpoints/last.pt'}", "class=12",
                                                f"hydra.run.dir={tmp_path / 's2'}"))
