"""`genexp sample out=dir/|file.zip` (issue 17.7): n samples as 000000.png ... that `genexp eval fake=` reads
back, uint8 as generate.py rounds them (img * 127.5 + 128, clamped, cast), gray as 1-channel L images; an
existing target is never damaged by a mistake."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import TINY
from .test_bad_input import one_error_line

TRAIN = [*TINY, "metrics=[]", "trainer.max_steps=1", "trainer.sample_every=0", "trainer.eval_every=0"]
EVAL = ["data=digits", "metrics=[fid]", "metrics.fid.allow_small=true", "trainer.progress=plain"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A conditional DCGAN on digits (16 px gray, 10 classes), one step."""
    from .conftest import genexp

    out = tmp_path_factory.mktemp("cgan") / "run"
    res = genexp("train", "experiment=digits_cgan", *TRAIN, f"hydra.run.dir={out}")
    assert res.code == 0, res
    return out / "checkpoints" / "last.pt"


def sample(run, ckpt, tmp_path, *args):
    return run("sample", f"ckpt={ckpt}", *args, f"hydra.run.dir={tmp_path / 'sample_run'}", cwd=tmp_path)


def generate_py_uint8(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [-1, 1] -> H x W x C uint8 as stylegan2-ada-pytorch's generate.py writes it."""
    return np.clip(np.floor(x.permute(1, 2, 0).double().numpy() * 127.5 + 128), 0, 255).astype(np.uint8)


def test_a_folder_holds_the_samples_eval_reads_them(run, ckpt, tmp_path):
    res = sample(run, ckpt, tmp_path, "n=37", "seed=3", "out=fid/", "format=png")
    assert res.code == 0, res
    assert "sample: images 37/37" in res.out and "img/s" in res.out, res  # the progress line
    names = sorted(p.name for p in (tmp_path / "fid").iterdir())
    assert names == [f"{i:06d}.png" for i in range(37)] + ["dataset.json"]
    # the same samples the grid path stores as a tensor (one batch of 37: the same draw)
    grid = run("sample", f"ckpt={ckpt}", "n=37", "seed=3", f"hydra.run.dir={tmp_path / 'grid'}")
    assert grid.code == 0, grid
    record = torch.load(tmp_path / "grid" / "samples.pt", weights_only=True)
    for i in (0, 17, 36):
        with Image.open(tmp_path / "fid" / f"{i:06d}.png") as img:
            assert img.mode == "L" and img.size == (16, 16)
            pixels = np.asarray(img)
        assert np.array_equal(pixels, generate_py_uint8(record["samples"][i])[..., 0])
    labels = json.loads((tmp_path / "fid" / "dataset.json").read_text())["labels"]
    assert labels == [[f"{i:06d}.png", i % 10] for i in range(37)] == \
        [[f"{i:06d}.png", int(c)] for i, c in enumerate(record["labels"])]

    evaluated = run("eval", "fake=fid", *EVAL, f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert evaluated.code == 0, evaluated
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["count"] == 37


def test_a_zip_in_batches_and_eval_reads_it(run, ckpt, tmp_path):
    res = sample(run, ckpt, tmp_path, "n=21", "out=s.zip", "batch_size=8", "class=4")
    assert res.code == 0, res
    with zipfile.ZipFile(tmp_path / "s.zip") as z:
        names = z.namelist()
        assert sorted(names) == [f"{i:06d}.png" for i in range(21)] + ["dataset.json"]
        assert {c for _, c in json.loads(z.read("dataset.json"))["labels"]} == {4}
        assert all(Image.open(z.open(n)).mode == "L" for n in names[:3])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    evaluated = run("eval", "fake=s.zip", *EVAL, f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)
    assert evaluated.code == 0, evaluated
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["count"] == 21


def fake_samples(target: str, n: int, fmt: str = "png") -> None:
    """A target as an earlier `genexp sample out=` left it (written in-process: no checkpoint needed)."""
    from genexp.commands.sample_files import check_target, write_samples
    from genexp.logger.console import Counter

    images = (np.full((4, 4, 1), i, dtype=np.uint8) for i in range(n))
    write_samples(check_target(target, fmt, False), images, n, None, Counter(lambda line: None, "images", n))


def test_mistakes_change_nothing_on_disk(run, ckpt, tmp_path, monkeypatch):
    from genexp.commands.sample_files import check_target
    from genexp.errors import UserError

    monkeypatch.chdir(tmp_path)
    folder, archive, mine = tmp_path / "old", tmp_path / "old.zip", tmp_path / "mine"
    fake_samples("old", 5)
    fake_samples("old.zip", 5)
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    (tmp_path / "a_file").write_text("x")
    before = {p: p.read_bytes() for p in [*folder.iterdir(), archive, mine / "notes.txt"]}
    for args, words in [  # through the CLI: one line, exit 2
        (["out=old"], "overwrite=true"),
        (["out=new", "format=gif"], "format=gif"),
        (["out=new", "mode=mixing"], "mode=mixing"),
    ]:
        assert words in one_error_line(sample(run, ckpt, tmp_path, "n=3", *args)), args
    for out, overwrite, words in [  # the same checks, in-process
        ("old.zip", False, "overwrite=true"),
        ("mine", True, "not genexp samples"),
        ("x.tar", False, "a zip file"),
        ("a_file", False, "is a file"),
        ("mine", False, "overwrite=true"),
    ]:
        with pytest.raises(UserError, match=words):
            check_target(out, "png", overwrite)
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(p.name for p in folder.iterdir()) == [f"{i:06d}.png" for i in range(5)]
    assert not (tmp_path / "new").exists()

    # overwrite=true replaces a folder of samples whole: no image of the old, larger set is left behind
    res = sample(run, ckpt, tmp_path, "n=2", "out=old", "overwrite=true")
    assert res.code == 0, res
    assert sorted(p.name for p in folder.iterdir()) == ["000000.png", "000001.png", "dataset.json"]
