"""Official networks wherever genexp takes a checkpoint: sample's seeds against the official generate.py.

The fixtures hold what NVIDIA's code computed (../shared/fixtures/stylegan2-official/README.md):
official state dicts and the uint8 images `generate.py --seeds ... --trunc=0.7 --noise-mode=const`
wrote for them. Here they go through genexp's conversion into a checkpoint and `genexp sample`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from genexp.pretrained.as_checkpoint import checkpoint_from_record, network_overrides
from genexp.training.checkpoint import save_checkpoint

from .conftest import official_fixture

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stylegan2-official"


def fixture(name: str) -> dict:
    return official_fixture(name)


def record_of(fx: dict) -> dict:
    """The layout genexp.pretrained.official.read_network_file gives for an official pickle."""
    return {"format": "stylegan2-ada-pytorch", "G_kwargs": fx["G_kwargs"], "G": fx["G"], "G_ema": fx["G_ema"],
            "D_kwargs": fx["D_kwargs"], "D": fx["D"], "notes": []}


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    out = {}
    for name in ("uncond32", "cond32_clamp"):
        fx = fixture(f"{name}.pt")
        path = tmp_path_factory.mktemp(name) / f"{name}.pt"
        save_checkpoint(checkpoint_from_record(record_of(fx), f"{name}.pkl"), path)
        out[name] = (path, fx)
    return out


def read_png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def largest_difference(images: dict[int, np.ndarray], expected: dict) -> int:
    worst = 0
    for seed, got in images.items():
        want = np.asarray(expected[seed]).astype(int)
        assert got.shape == want.shape
        worst = max(worst, int(np.abs(got.astype(int) - want).max()))
    return worst


def test_sample_seeds_write_what_generate_py_wrote(run, converted, tmp_path):
    """The whole command, on the unconditional network."""
    path, fx = converted["uncond32"]
    expected = fx["generate_seeds_psi07_const_uint8"]
    seeds = sorted(int(s) for s in expected)
    res = run("sample", f"ckpt={path}", "seeds=[" + ",".join(map(str, seeds)) + "]", "psi=0.7",
              "noise_mode=const", f"hydra.run.dir={tmp_path}", "trainer.device=cpu")
    assert res.code == 0, res
    images = {seed: read_png(tmp_path / f"seed{seed:04d}.png") for seed in seeds}
    assert largest_difference(images, expected) <= 1


def test_conditional_seed_images_match_generate_py(converted, tmp_path):
    """The conditional net (conv_clamp 256, class seed % 10 as generate.py was given), in-process."""
    from genexp.commands.common import restore_method
    from genexp.commands.sample_seeds import seed_images

    path, fx = converted["cond32_clamp"]
    expected = fx["generate_seeds_psi07_const_uint8"]
    method, _, _ = restore_method(str(path), torch.device("cpu"))
    images = {}
    for seed in sorted(int(s) for s in expected):
        (png,) = seed_images(method.G_ema, [seed], seed % 10, 0.7, "const", tmp_path, print)
        images[seed] = read_png(png)
    assert largest_difference(images, expected) <= 1


def test_the_converted_config_describes_the_networks(converted):
    path, fx = converted["cond32_clamp"]
    ckpt = torch.load(path, weights_only=True)
    model = ckpt["config"]["model"]
    assert model["num_classes"] == fx["G_kwargs"]["c_dim"] and model["generator"]["conv_clamp"] == 256
    assert ckpt["step"] == 0 and ckpt["source"]["format"] == "stylegan2-ada-pytorch"
    assert "model=stylegan2" in network_overrides(record_of(fx))


@pytest.mark.parametrize("bad", ["9-3", "x", "0-99999999", "-1", "[]"])
def test_seeds_that_do_not_parse_are_refused(bad):
    from genexp.commands.sample_seeds import parse_seeds
    from genexp.errors import UserError

    with pytest.raises(UserError, match="seeds="):
        parse_seeds([] if bad == "[]" else bad)


def test_seeds_parse_as_generate_py_reads_them():
    from genexp.commands.sample_seeds import parse_seeds

    assert parse_seeds("0-3") == [0, 1, 2, 3] and parse_seeds(7) == [7]
    assert parse_seeds([1, "5-6"]) == [1, 5, 6] and parse_seeds("1,4,10-11") == [1, 4, 10, 11]


def test_a_bad_seeds_value_is_one_line_from_the_cli(run, converted, tmp_path):
    path, _ = converted["uncond32"]
    res = run("sample", f"ckpt={path}", "seeds=9-3", f"hydra.run.dir={tmp_path / 'x'}")
    assert res.code == 2 and "seeds=9-3" in res.err and "Traceback" not in res.err, res


def test_seeds_of_a_conditional_network_need_a_class(run, converted, tmp_path):
    path, _ = converted["cond32_clamp"]
    res = run("sample", f"ckpt={path}", "seeds=0-1", f"hydra.run.dir={tmp_path / 'x'}")
    assert res.code == 2 and "class=" in res.err, res


# --- the original file formats, through the CLI -------------------------------------------------

from .test_pretrained_reader import _ada_pickle, fakes  # noqa: E402,F401  (a fixture, used by name)


def test_an_official_pickle_is_a_checkpoint_for_sample_and_convert(run, fakes, tmp_path):  # noqa: F811
    fx = fixture("uncond32.pt")
    pkl = _ada_pickle(fakes, tmp_path, fx, name="network-snapshot-000000.pkl")
    expected = fx["generate_seeds_psi07_const_uint8"]
    seeds = sorted(int(s) for s in expected)[:2]
    out = tmp_path / "s"
    res = run("sample", f"ckpt={pkl}", "seeds=[" + ",".join(map(str, seeds)) + "]", "psi=0.7", "noise_mode=const",
              f"hydra.run.dir={out}")
    assert res.code == 0, res
    images = {seed: read_png(out / f"seed{seed:04d}.png") for seed in seeds}
    assert largest_difference(images, expected) <= 1

    converted = tmp_path / "net.pt"
    res = run("convert", str(pkl), str(converted))
    assert res.code == 0 and converted.is_file(), res
    ckpt = torch.load(converted, weights_only=True)
    assert ckpt["source"]["format"] == "stylegan2-ada-pytorch" and ckpt["step"] == 0
    before = converted.read_bytes()
    res = run("convert", str(pkl), str(converted))
    assert res.code == 2 and "exists" in res.err and converted.read_bytes() == before, res


def test_a_pickle_that_would_run_code_is_refused_everywhere(run, tmp_path):
    import pickle

    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):

            return os.system, (f"touch {marker}",)

    evil = tmp_path / "ffhq.pkl"
    evil.write_bytes(pickle.dumps({"G_ema": Payload()}, protocol=4))
    for args in (["sample", f"ckpt={evil}", f"hydra.run.dir={tmp_path / 's'}"],
                 ["convert", str(evil), str(tmp_path / "o.pt")]):
        res = run(*args)
        assert res.code == 2 and "allow-list" in res.err and len(res.err.strip().splitlines()) == 1, res
        assert not marker.exists()


# --- train init=: transfer learning from a network file -------------------------------------------

def test_init_loads_every_network_and_nothing_else(converted):
    from genexp.commands.transfer import init_from
    from genexp.methods import build_method
    from genexp.pretrained.as_checkpoint import compose_train, network_overrides

    path, fx = converted["uncond32"]
    cfg = compose_train(network_overrides(record_of(fx)) + ["data=digits", "data.resolution=32", "data.channels=3"])
    method = build_method(cfg, torch.device("cpu"))
    notes = []
    init_from(method, str(path), cfg, notes.append)
    assert "G, D, G_ema" in notes[0]
    for name, official in (("G", fx["G"]), ("D", fx["D"]), ("G_ema", fx["G_ema"])):
        own = getattr(method, name).state_dict()
        for key, value in official.items():
            if not key.endswith("resample_filter"):
                assert torch.equal(own[key], value), f"{name}.{key}"
    assert all(not state for state in method.optimizers["G"].state.values())  # fresh optimizers


def test_init_of_another_resolution_is_refused_before_anything_is_written(run, converted, tmp_path):
    path, fx = converted["uncond32"]
    model = [o for o in network_overrides(record_of(fx)) if o.startswith(("model", "++model"))]
    out = tmp_path / "r"
    res = run("train", *model, "data=digits", "data.channels=3", "data.resolution=16", f"init={path}",
              "logger=none", "metrics=[]", f"hydra.run.dir={out}")
    assert res.code == 2 and "32x32" in res.err and "data.resolution=16" in res.err, res
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").exists()


def test_init_with_other_model_options_names_them(run, converted, tmp_path):
    path, _ = converted["uncond32"]
    res = run("train", "model=stylegan2", "data=digits", "data.channels=3", "data.resolution=32", f"init={path}",
              "logger=none", "metrics=[]", f"hydra.run.dir={tmp_path / 'r'}")
    assert res.code == 2 and "does not fit" in res.err and "model.channel_base=1024" in res.err, res


def test_which_reader_names_a_bad_file(tmp_path):
    """A rosinality file with missing keys gets the rosinality reader's line; a torn or foreign torch
    file gets genexp's checkpoint reader's."""
    from genexp.errors import UserError
    from genexp.pretrained.as_checkpoint import load_any_checkpoint

    ros = tmp_path / "550000.pt"
    torch.save({"g_ema": {"style.1.weight": torch.zeros(4, 4)}, "latent_avg": torch.zeros(4)}, ros)
    torn = tmp_path / "torn.pt"
    torn.write_bytes(b"PK\x03\x04 torn")
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    for path, words in ((ros, "rosinality"), (torn, "cannot be read"), (foreign, "not written by genexp")):
        with pytest.raises(UserError, match=words):
            load_any_checkpoint(path)
