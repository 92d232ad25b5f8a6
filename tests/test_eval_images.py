"""genexp eval on generated images from disk: a folder or zip against a dataset, and two folders."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genexp.data.digits import DigitsDataset

from .test_bad_input import one_error_line

PLAIN = ["trainer.progress=plain", "metrics=[fid,kid]", "metrics.kid.subsets=5", "metrics.kid.subset_size=50"]


def write_pngs(folder: Path, images, start: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, x in enumerate(images):
        pixels = ((x[0].numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"img{start + i:05d}.png")
    return folder


def metrics_of(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def torch_rand(n: int) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1


def test_generated_folder_against_a_dataset_and_two_folders(run, tmp_path):
    digits = DigitsDataset(resolution=16)
    real_like = write_pngs(tmp_path / "real_like", digits.x[:400])
    noise = write_pngs(tmp_path / "noise", torch_rand(400))
    with zipfile.ZipFile(tmp_path / "real_like.zip", "w") as z:
        for f in sorted(real_like.iterdir()):
            z.write(f, f.name)

    scores = {}
    for name, fake in (("real", real_like), ("zip", tmp_path / "real_like.zip"), ("noise", noise)):
        out = tmp_path / f"eval_{name}"
        res = run("eval", f"fake={fake}", "data=digits", *PLAIN, f"hydra.run.dir={out}")
        assert res.code == 0, res
        record = metrics_of(out)
        assert record["count"] == 400 and record["fake"] == str(fake)
        scores[name] = record["metrics"]["fid/digits_lenet@400"]
    assert scores["real"] == scores["zip"]  # the same pixels, from a folder or a zip
    assert scores["real"] < 0.1 * scores["noise"]

    # two folders: the real side is an image folder too; a folder against itself scores 0
    out = tmp_path / "two"
    res = run("eval", f"fake={real_like}", "data=images", f"data.path={real_like}", "data.resolution=16",
              "data.channels=1", "data.num_workers=0", *PLAIN, "metrics.fid.extractor=digits_lenet",
              "metrics.kid.extractor=digits_lenet", f"hydra.run.dir={out}")
    assert res.code == 0, res
    assert abs(metrics_of(out)["metrics"]["fid/digits_lenet@400"]) < 1e-2


def test_eval_source_mistakes(run, tmp_path):
    folder = write_pngs(tmp_path / "few", torch_rand(5))
    assert "not both" in one_error_line(run("eval", "ckpt=x.pt", f"fake={folder}", "data=digits"))
    assert "name the real data" in one_error_line(run("eval", f"fake={folder}", f"hydra.run.dir={tmp_path / 'a'}"))
    line = one_error_line(run("eval", f"fake={folder}", "data=digits", "n=50", f"hydra.run.dir={tmp_path / 'b'}"))
    assert "n=50 but fake=" in line and "holds 5 images" in line
    line = one_error_line(run("eval", f"fake={tmp_path / 'nope'}", "data=digits", f"hydra.run.dir={tmp_path / 'c'}"))
    assert line.startswith(f"genexp: error: fake={tmp_path / 'nope'}: no such file or folder")


def test_stats_only_fills_the_cache_that_a_later_eval_reads(run, tmp_path):
    env = {"GENEXP_CACHE": str(tmp_path / "cache")}
    res = run("eval", "stats_only=true", "data=digits", *PLAIN, "n=300", f"hydra.run.dir={tmp_path / 's'}", env=env)
    assert res.code == 0, res
    files = sorted((tmp_path / "cache" / "stats").iterdir())
    assert [f.name.split("-")[0] for f in files] == ["fid", "kid"]
    assert str(files[0]) in res.out + res.err
    fakes = write_pngs(tmp_path / "fakes", DigitsDataset(resolution=16).x[:300])
    out = tmp_path / "e"
    res = run("eval", f"fake={fakes}", "data=digits", *PLAIN, f"hydra.run.dir={out}", env=env)
    assert res.code == 0, res
    protocol = metrics_of(out)["protocol"]["metrics"]["fid/digits_lenet@300"]
    assert protocol["reference_cache"] == str(files[0])
    assert sorted((tmp_path / "cache" / "stats").iterdir()) == files  # nothing new computed
    line = one_error_line(run("eval", "stats_only=true", f"hydra.run.dir={tmp_path / 'x'}", env=env))
    assert "add data=" in line


def test_paired_lpips_needs_originals_named_like_the_reconstructions(run, tmp_path):
    originals = write_pngs(tmp_path / "orig", torch_rand(4))
    recon = write_pngs(tmp_path / "recon", torch_rand(4), start=1)  # img00001 .. : names do not match
    common = ["metrics=[lpips]", "metrics.lpips.mode=paired", "trainer.progress=plain", f"fake={recon}"]
    line = one_error_line(run("eval", "data=images", f"data.path={originals}", "data.resolution=16",
                              "data.channels=1", *common, f"hydra.run.dir={tmp_path / 'a'}"))
    assert "pairs images by name" in line and "img00001.png meets img00000.png" in line
    line = one_error_line(run("eval", "data=digits", *common, f"hydra.run.dir={tmp_path / 'b'}"))
    assert "pass the originals as data=images" in line
