"""Bad inputs of issue 16 item 4, each refused in one line (exit 2) before work starts: image folders and
zips with empty, unreadable, odd-sized or gray-among-color files (scanned at start, headers only), labels
that would ask for terabytes, weight files that are pickled code or another net's, an uncreatable or
too-long run dir; and Ctrl-C during start-up ends quietly."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from genexp.data.images import ImageFolderDataset
from genexp.errors import UserError

from ..conftest import REPO, TINY
from ..test_bad_input import one_error_line

RUN = [*TINY, "metrics=[]", "trainer.sample_every=0", "trainer.eval_every=0", "trainer.ckpt_every=0"]


def images(folder: Path, specs: list[tuple[tuple[int, int], str]]) -> Path:
    """img000.png, img001.png, ... of the given (size, mode)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, (size, mode) in enumerate(specs):
        Image.new(mode, size, 120).save(folder / f"img{i:03d}.png")
    return folder


def zipped(folder: Path) -> Path:
    dest = folder.with_suffix(".zip")
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted(folder.iterdir()):
            z.write(f, f.name)
    return dest


def train_on(run, path: Path, tmp_path: Path, *extra: str):
    return run("train", "data=images", f"data.path={path}", "data.resolution=16", "data.num_workers=0", *RUN,
               *extra, f"hydra.run.dir={tmp_path / 'r'}")


def refused(path: Path, **kwargs) -> str:
    with pytest.raises(UserError) as err:
        ImageFolderDataset(str(path), 16, scan=True, **kwargs)
    assert "\n" not in str(err.value)
    return str(err.value)


RGB16 = [((16, 16), "RGB")] * 5


def test_empty_image_refused_at_start(run, tmp_path):
    folder = images(tmp_path / "imgs", RGB16)
    (folder / "img100.png").write_bytes(b"")
    line = one_error_line(train_on(run, folder, tmp_path))
    assert "1 empty (0-byte) image file(s): img100.png; remove or replace them" in line
    assert not (tmp_path / "r" / "checkpoints").exists()
    # the same through a zip's members, and a file that is not an image at all
    assert "empty (0-byte)" in refused(zipped(folder))
    (folder / "img100.png").write_bytes(b"\x89PNG\r\n\x1a\n torn")
    assert "cannot be read: img100.png (not an image file PIL can read)" in refused(folder)
    assert "cannot be read: img100.png" in refused(zipped(folder))


@pytest.mark.slow  # the scan's refusal is covered by test_empty_image_refused_at_start in the default run
def test_one_pixel_image_among_16_pixel_ones_refused(run, tmp_path):
    folder = images(tmp_path / "imgs", [*RGB16, ((1, 1), "RGB")])
    line = one_error_line(train_on(run, folder, tmp_path))
    assert "images of 2 sizes (16x16: 5, 1x1: 1 (img005.png))" in line and "data.mixed=convert" in line
    assert "2 sizes" in refused(zipped(folder))
    ds = ImageFolderDataset(str(folder), 16, scan=True, mixed="convert")  # asked for: each one resized
    assert ds[5][0].shape == (3, 16, 16)


@pytest.mark.slow  # the scan's refusal is covered by test_empty_image_refused_at_start in the default run
def test_gray_among_rgb_refused(run, tmp_path, capsys):
    folder = images(tmp_path / "imgs", [*RGB16, ((16, 16), "L")])
    line = one_error_line(train_on(run, folder, tmp_path))
    assert "1 gray and 5 color images (the fewer: img005.png)" in line and "data.mixed=convert" in line
    ImageFolderDataset(str(folder), 16, scan=True, mixed="convert")
    assert "converting 1 gray image(s) to RGB (data.channels=3)" in capsys.readouterr().err
    # gray data for a gray model is no mix
    ImageFolderDataset(str(images(tmp_path / "gray", [((16, 16), "L")] * 3)), 16, 1, scan=True)
    out = capsys.readouterr()
    assert "scanned 3 images in" in out.out and "all 16x16 gray" in out.out and not out.err


def test_folder_of_another_size_is_resized_with_a_note(run, tmp_path):
    folder = images(tmp_path / "imgs", [((32, 32), "RGB")] * 4)
    res = train_on(run, folder, tmp_path, "data.batch_size=4")
    assert res.code == 0, res
    assert "genexp: resizing 32x32 images to data.resolution=16" in res.err
    assert "scanned 4 images in" in res.out and "all 32x32 RGB" in res.out


def test_label_of_a_billion_refused(run, tmp_path):
    folder = images(tmp_path / "imgs", [((16, 16), "RGB")] * 3)
    labels = {"labels": [["img000.png", 0], ["img001.png", 1], ["img002.png", 10 ** 9]]}
    (folder / "dataset.json").write_text(json.dumps(labels))
    line = one_error_line(train_on(run, folder, tmp_path))
    assert "label 1,000,000,000 (of img002.png) is beyond 100,000 classes" in line
    assert "but data.num_classes=10" in refused(folder, num_classes=10)
    labels["labels"][2][1] = 5000  # 3 classes named 0, 1 and 5000: not class indices
    (folder / "dataset.json").write_text(json.dumps(labels))
    assert "3 distinct labels but the largest is 5,000" in refused(folder)
    assert ImageFolderDataset(str(folder), 16, num_classes=6000).num_classes == 5001  # declared: a subset


class Payload:
    def __reduce__(self):
        return (os.system, (f"touch {MARK}",))


MARK = Path("/tmp/genexp-hostile-weights-ran")


@pytest.mark.parametrize("net", ["digits_lenet", "inception", "user"])
def test_weight_files_are_data(net, tmp_path):
    from genexp.metrics.classifiers import DigitsLeNet
    from genexp.metrics.extractors import WeightsError, build_extractor
    from genexp.metrics.inception import FIDInceptionV3

    spec = {"digits_lenet": "digits_lenet", "inception": "inception",
            "user": {"_target_": "genexp.metrics.classifiers.DigitsLeNet"}}[net]
    good = (FIDInceptionV3() if net == "inception" else DigitsLeNet()).state_dict()

    def message(state_or_bytes) -> str:
        path = tmp_path / "w.pt"
        if isinstance(state_or_bytes, bytes):
            path.write_bytes(state_or_bytes)
        else:
            torch.save(state_or_bytes, path)
        with pytest.raises(WeightsError) as err:
            build_extractor(spec, "features", weights=str(path), example=torch.zeros(2, 1, 8, 8))
        assert isinstance(err.value, UserError) and "\n" not in str(err.value)
        return str(err.value)

    MARK.unlink(missing_ok=True)
    assert "pickled code or objects" in message(pickle.dumps({"w": Payload()}, protocol=2))
    assert "pickled code or objects" in message(pickle.dumps({"w": Payload()}))
    assert not MARK.exists()
    assert "pickled code or objects (torch.nn.modules" in message(torch.nn.Linear(2, 2))
    first, last = list(good)[0], list(good)[-1]
    wrong = {k: v for k, v in good.items() if k != first}
    wrong["extra.weight"] = torch.zeros(1)
    line = message(wrong)
    assert f"missing keys {first}" in line and "unexpected keys extra.weight" in line
    line = message({**good, last: torch.zeros(3, 3)})
    assert f"shape of {last} is (3, 3) where the net has {tuple(good[last].shape)}" in line
    assert "could not be read as a weight file" in message(b"not a weight file")


def test_sigint_during_start_up_is_quiet(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    # SIG_DFL: a shell's background job ignores SIGINT, and Python then never raises KeyboardInterrupt
    proc = subprocess.Popen([sys.executable, "-m", "genexp", "train", *RUN, "trainer.max_steps=100000",
                             f"hydra.run.dir={tmp_path / 'r'}"], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (130, 2), (proc.returncode, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err and len(lines) <= 2, err
    assert not (tmp_path / "r" / "checkpoints").exists()


@pytest.mark.parametrize("where, expect", [
    ("/proc/genexp-run", "cannot create it in /proc"),
    ("long", "choose a shorter"),
])
def test_uncreatable_run_dir(run, tmp_path, where, expect):
    path = tmp_path / ("n" * 300) / "r" if where == "long" else Path(where)
    line = one_error_line(run("train", *RUN, f"hydra.run.dir={path}"))
    assert expect in line and "hydra.run.dir=" in line


def test_an_error_left_behind_by_ctrl_c_is_an_interrupt(monkeypatch, capsys):
    """Ctrl-C inside OmegaConf/Hydra can surface as another exception (a half-set node) whose context is
    the KeyboardInterrupt: exit 130 with one line, no traceback. Any other error still raises."""
    from genexp import cli

    def interrupted_inside(argv=None):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise KeyError("_flags_cache")  # noqa: B904 (the context is the point)

    monkeypatch.setattr(cli, "run_main", interrupted_inside)
    with pytest.raises(SystemExit) as stop:
        cli.main(["train"])
    assert stop.value.code == 130 and capsys.readouterr().err.strip() == "genexp: interrupted"
    monkeypatch.setattr(cli, "run_main", lambda argv=None: (_ for _ in ()).throw(KeyError("a bug")))
    with pytest.raises(KeyError):
        cli.main(["train"])
