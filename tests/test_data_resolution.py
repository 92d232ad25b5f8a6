"""An image folder whose images differ from data.resolution is never resized silently (issue 17.6): one
note line that names both sizes and the setting that keeps the images' own; a folder at data.resolution
says nothing; several sizes are refused unless data.mixed=convert."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from genexp.data.images import ImageFolderDataset
from genexp.errors import UserError


def folder_of(path: Path, sizes: list[int]) -> Path:
    path.mkdir()
    rng = np.random.default_rng(0)
    for i, side in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(path / f"{i:03d}.png")
    return path


def notes(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.parametrize("as_zip", [False, True])
def test_another_size_is_resized_with_one_note(tmp_path, capsys, as_zip):
    path = folder_of(tmp_path / "imgs", [32] * 5)
    if as_zip:
        with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
            for f in sorted(path.iterdir()):
                z.write(f, f.name)
        path = tmp_path / "imgs.zip"
    ds = ImageFolderDataset(str(path), 64, scan=True)
    assert notes(capsys) == ["genexp: resizing 32x32 images to data.resolution=64 (data.resolution=32 keeps "
                             "their size)"]
    assert tuple(ds[0][0].shape) == (3, 64, 64)


def test_the_right_size_says_nothing(tmp_path, capsys):
    ds = ImageFolderDataset(str(folder_of(tmp_path / "imgs", [32] * 3)), 32, scan=True)
    assert notes(capsys) == [] and tuple(ds[0][0].shape) == (3, 32, 32)


def test_several_sizes_are_refused_or_each_resized_with_a_note(tmp_path, capsys):
    path = folder_of(tmp_path / "imgs", [32, 32, 16])
    with pytest.raises(UserError, match="2 sizes"):
        ImageFolderDataset(str(path), 32, scan=True)
    ds = ImageFolderDataset(str(path), 32, scan=True, mixed="convert")
    assert notes(capsys) == ["genexp: resizing 1 16x16 images to data.resolution=32"]
    assert {tuple(ds[i][0].shape) for i in range(3)} == {(3, 32, 32)}
