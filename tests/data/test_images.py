from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from genexp.data.images import ImageFolderDataset
from genexp.errors import UserError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)
# relative path -> (size, color, label); listed out of order on purpose
FILES = {
    "00001/img00000002.png": ((8, 8), BLUE, 2),
    "00000/img00000001.JPG": ((8, 8), (128, 128, 128), 1),
    "00000/img00000000.png": ((8, 8), RED, 0),
    "00001/img00000003.bmp": ((16, 16), GREEN, 3),
}
ORDER = sorted(FILES)


def make_folder(root: Path, labels: bool = True) -> Path:
    for name, (size, color, _) in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, color).save(root / name, quality=100)
    (root / "notes.txt").write_text("not an image")
    if labels:
        (root / "dataset.json").write_text(json.dumps({"labels": [[n, v[2]] for n, v in FILES.items()]}))
    return root


def make_zip(folder: Path, dest: Path) -> Path:
    with zipfile.ZipFile(dest, "w") as z:
        for f in sorted(folder.rglob("*")):
            z.write(f, f.relative_to(folder).as_posix())
    return dest


@pytest.fixture
def folder(tmp_path) -> Path:
    return make_folder(tmp_path / "imgs")


@pytest.fixture
def archive(folder, tmp_path) -> Path:
    return make_zip(folder, tmp_path / "imgs.zip")


def one_line(err: pytest.ExceptionInfo) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def close(x: torch.Tensor, rgb, atol=0.02) -> bool:
    want = torch.tensor(rgb, dtype=torch.float32).view(-1, 1, 1) / 127.5 - 1
    return torch.allclose(x, want.expand_as(x), atol=atol)


@pytest.mark.parametrize("source", ["folder", "archive"])
def test_order_labels_and_pixels(source, request):
    ds = ImageFolderDataset(str(request.getfixturevalue(source)), resolution=8)
    assert (ds.kind, ds.num_classes, ds.resolution, ds.channels, len(ds)) == ("image", 4, 8, 3, 4)
    assert ds.files == ORDER
    assert [ds[i][1].item() for i in range(4)] == [FILES[n][2] for n in ORDER]
    x, y = ds[ORDER.index("00000/img00000000.png")]
    assert x.shape == (3, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert close(x, RED, atol=0)
    for i in range(4):
        x = ds[i][0]
        assert x.shape == (3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert close(ds[ORDER.index("00001/img00000003.bmp")][0], GREEN)  # 16 -> 8


def test_folder_and_zip_agree(folder, archive):
    a, b = ImageFolderDataset(str(folder), 8), ImageFolderDataset(str(archive), 8)
    assert a.files == b.files and a.labels == b.labels
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))


def test_gray_and_resize(folder):
    ds = ImageFolderDataset(str(folder), resolution=4, channels=1)
    x, _ = ds[ORDER.index("00000/img00000000.png")]
    assert x.shape == (1, 4, 4) and close(x, (76,), atol=1 / 127.5)  # ITU-R 601 luma of red
    gray = Image.new("L", (6, 6), 200)
    gray.save(folder / "00002.png")
    ds = ImageFolderDataset(str(folder), resolution=3, channels=3, use_labels=False)
    x, _ = ds[ds.files.index("00002.png")]
    assert x.shape == (3, 3, 3) and close(x, (200, 200, 200))


def test_center_crop(tmp_path):
    a = np.zeros((4, 8, 3), np.uint8)
    a[:, :2], a[:, 2:6], a[:, 6:] = RED, GREEN, BLUE  # 8 wide, 4 high: the crop keeps columns 2..5
    Image.fromarray(a).save(tmp_path / "wide.png")
    a = np.zeros((8, 4, 3), np.uint8)
    a[:2], a[2:6], a[6:] = RED, BLUE, GREEN
    Image.fromarray(a).save(tmp_path / "tall.png")
    ds = ImageFolderDataset(str(tmp_path), resolution=4)
    assert close(ds[ds.files.index("wide.png")][0], GREEN, atol=0)
    assert close(ds[ds.files.index("tall.png")][0], BLUE, atol=0)


def test_unlabeled(folder):
    ds = ImageFolderDataset(str(folder), 8, use_labels=False)
    assert ds.num_classes == 0 and {ds[i][1].item() for i in range(len(ds))} == {-1}
    (folder / "dataset.json").write_text('{"labels": null}')
    ds = ImageFolderDataset(str(folder), 8)
    assert ds.num_classes == 0 and ds[0][1].item() == -1
    (folder / "dataset.json").unlink()
    assert ImageFolderDataset(str(folder), 8).num_classes == 0


def test_skips_macos_forks(folder, tmp_path):
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._a.png").write_bytes(b"\0\5\26\7")
    (folder / ".hidden.png").write_bytes(b"junk")
    assert ImageFolderDataset(str(folder), 8).files == ORDER


def test_pickles_and_reopens_zip_in_workers(archive):
    ds = ImageFolderDataset(str(archive), resolution=8)
    ds[0]
    assert ds._zip is not None
    clone = pickle.loads(pickle.dumps(ds))
    assert clone._zip is None and torch.equal(clone[0][0], ds[0][0])
    loader = DataLoader(ds, batch_size=2, num_workers=2, multiprocessing_context="fork")
    xs, ys = zip(*loader, strict=True)
    assert torch.cat(ys).tolist() == [FILES[n][2] for n in ORDER]
    assert torch.cat(xs).shape == (4, 3, 8, 8)


def test_zip_reopened_in_a_forked_child(archive, monkeypatch):
    ds = ImageFolderDataset(str(archive), resolution=8)
    ds[0]
    parent = ds._zip
    ds[1]
    assert ds._zip is parent
    monkeypatch.setattr("genexp.data.images.os.getpid", lambda: -1)
    ds[1]
    assert ds._zip is not parent


def test_missing_path(tmp_path):
    with pytest.raises(UserError) as err:
        ImageFolderDataset(str(tmp_path / "nope"), 8)
    assert f"data.path={tmp_path / 'nope'}: no such file or folder" in one_line(err)


def test_no_images(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(UserError) as err:
        ImageFolderDataset(str(tmp_path), 8)
    assert "holds no images" in one_line(err) and ".png" in str(err.value) and ".webp" in str(err.value)
    with zipfile.ZipFile(tmp_path / "e.zip", "w") as z:
        z.writestr("a.txt", "x")
    with pytest.raises(UserError, match="holds no images .* in the zip"):
        ImageFolderDataset(str(tmp_path / "e.zip"), 8)


def test_not_a_zip(tmp_path):
    (tmp_path / "bad.zip").write_bytes(b"PK\3\4 definitely not a zip")
    with pytest.raises(UserError) as err:
        ImageFolderDataset(str(tmp_path / "bad.zip"), 8)
    assert "not a folder nor a valid zip" in one_line(err)


@pytest.mark.parametrize("zipped", [False, True])
def test_corrupt_image(folder, tmp_path, zipped):
    (folder / "00000" / "img00000000.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    ds = ImageFolderDataset(str(make_zip(folder, tmp_path / "c.zip") if zipped else folder), 8)
    assert torch.isfinite(ds[1][0]).all()
    with pytest.raises(UserError) as err:
        ds[0]
    assert "image 00000/img00000000.png is corrupt" in one_line(err)


@pytest.mark.parametrize("content, why", [
    ("{not json", "unreadable"),
    ('{"classes": []}', "unreadable"),
    ('{"labels": [["00000/img00000000.png", "cat"]]}', "unreadable"),
    ('{"labels": [["00000/img00000000.png", 0]]}', "no label for 3 image(s)"),
])
def test_bad_dataset_json(folder, content, why):
    (folder / "dataset.json").write_text(content)
    with pytest.raises(UserError) as err:
        ImageFolderDataset(str(folder), 8)
    msg = one_line(err)
    assert "dataset.json" in msg and why in msg
    assert len(ImageFolderDataset(str(folder), 8, use_labels=False)) == 4


def test_dataset_json_names_missing_file(folder, archive, tmp_path):
    labels = [[n, v[2]] for n, v in FILES.items()] + [["00009/gone.png", 1]]
    (folder / "dataset.json").write_text(json.dumps({"labels": labels}))
    for path in (folder, make_zip(folder, tmp_path / "m.zip")):
        with pytest.raises(UserError) as err:
            ImageFolderDataset(str(path), 8)
        assert "labels 1 file(s) that do not exist (first: 00009/gone.png)" in one_line(err)
