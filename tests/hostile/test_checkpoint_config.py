"""A checkpoint is data: its stored config and overrides build genexp's own classes only.

Each crafted checkpoint below is one that torch.load(weights_only=True) accepts and whose config
would run code if genexp instantiated it as it stands: the payload writes a marker file, and every
test checks the marker is absent, the exit is 2 with one line naming the target, and nothing ran."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genexp.config import trust
from genexp.errors import UserError

from ..conftest import CONF, TINY


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from ..conftest import genexp

    out = tmp_path_factory.mktemp("trust") / "run"
    res = genexp("train", *TINY, f"hydra.run.dir={out}", "metrics=[]")
    assert res.code == 0, res
    return out


def payload(marker: Path) -> dict:
    """numpy.savetxt writes a file of the checkpoint's choosing when instantiated."""
    return {"_target_": "numpy.savetxt", "fname": str(marker), "X": [1.0]}


def craft(src: Path, dst: Path, edit) -> Path:
    ckpt = torch.load(src, weights_only=True)
    edit(ckpt)
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    torch.load(dst, weights_only=True)  # the file passes torch's own safe loading
    return dst


def refused(res, marker: Path, naming: str) -> None:
    assert res.code == 2, res
    assert not marker.exists(), "the checkpoint's payload ran"
    lines = [line for line in res.err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.err, res
    assert naming in lines[0], res


@pytest.mark.parametrize("command,extra", [("eval", ["metrics=[fid]", "n=8"]), ("sample", ["n=4"]),
                                           ("project", ["target=missing.png"])])
def test_stored_target_outside_the_allow_list_is_refused(run, trained, tmp_path, command, extra):
    marker = tmp_path / "marker.txt"

    def edit(ckpt):
        ckpt["config"]["model"]["generator"] = payload(marker)

    bad = craft(trained / "checkpoints" / "last.pt", tmp_path / "bad.pt", edit)
    res = run(command, f"ckpt={bad}", *extra, f"hydra.run.dir={tmp_path / 'out'}")
    refused(res, marker, "numpy.savetxt")


def test_trust_checkpoint_is_the_explicit_opt_in(run, trained, tmp_path):
    marker = tmp_path / "marker.txt"

    def edit(ckpt):
        ckpt["config"]["model"]["generator"] = payload(marker)

    bad = craft(trained / "checkpoints" / "last.pt", tmp_path / "bad.pt", edit)
    res = run("sample", f"ckpt={bad}", "n=4", "trust_checkpoint=true", f"hydra.run.dir={tmp_path / 'out'}")
    assert marker.exists(), res  # the user said so: the stored target was built


def test_a_resolver_in_a_stored_config_is_refused(run, trained, tmp_path):
    def edit(ckpt):
        ckpt["config"]["name"] = "${oc.env:HOME}"

    bad = craft(trained / "checkpoints" / "last.pt", tmp_path / "bad.pt", edit)
    res = run("sample", f"ckpt={bad}", "n=4", f"hydra.run.dir={tmp_path / 'out'}")
    refused(res, tmp_path / "none", "resolver")


@pytest.mark.parametrize("override,naming", [
    ("model.generator._target_=numpy.savetxt", "numpy.savetxt"),
    ("+model.generator={_target_:numpy.savetxt,fname:MARKER,X:[1.0]}", "numpy.savetxt"),
    ("+hydra.callbacks.x._target_=numpy.savetxt", "Hydra itself"),
    ("hydra.run.dir=MARKER", "Hydra itself"),
    ("hydra/launcher=local", "Hydra itself"),
])
def test_stored_overrides_are_data_on_resume(run, trained, tmp_path, override, naming):
    marker = tmp_path / "marker.txt"

    def edit(ckpt):
        ckpt["overrides"] = [*ckpt["overrides"], override.replace("MARKER", str(marker))]

    # A copy of the run: the resume would continue in that run dir.
    copy = tmp_path / "run"
    craft(trained / "checkpoints" / "last.pt", copy / "checkpoints" / "last.pt", edit)
    res = run("train", f"resume={copy}", "trainer.max_steps=4")
    refused(res, marker, naming)
    assert sorted(p.name for p in copy.iterdir()) == ["checkpoints"]  # nothing written there


def test_genexp_own_checkpoints_still_resume_and_sample(run, trained, tmp_path):
    res = run("sample", f"ckpt={trained / 'checkpoints' / 'last.pt'}", "n=4", f"hydra.run.dir={tmp_path / 's'}")
    assert res.code == 0, res


def test_trusted_targets_are_genexp_own_and_the_users():
    shipped = trust.shipped_targets(CONF)
    assert "genexp.methods.gan.GAN" in shipped and "numpy.savetxt" not in shipped
    typed = trust.trusted_targets(CONF, ["model.generator._target_=mypkg.nets.G"])
    assert "mypkg.nets.G" in typed


def test_targets_in_the_users_own_config_dir_are_trusted(tmp_path):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "mine.yaml").write_text("generator:\n  _target_: mylab.models.BigG\n")
    trusted = trust.trusted_targets(CONF, [f"hydra.searchpath=[file://{tmp_path}]"])
    assert "mylab.models.BigG" in trusted
    trust.check_config({"model": {"generator": {"_target_": "mylab.models.BigG"}}}, "x", trusted)


def test_nested_targets_in_lists_are_found():
    config = {"loss": {"d_regularizers": [{"inner": {"_target_": "os.system", "command": "true"}}]}}
    with pytest.raises(UserError, match="os.system"):
        trust.check_config(config, "checkpoint x", trust.shipped_targets(CONF))


@pytest.mark.parametrize("args,expect", [
    (["optim.lr=-0.01"], "optim.lr=-0.01"),
    (["optim.lr=nan"], "learning rate"),
    (["optim.discriminator.lr=inf"], "optim.discriminator.lr=inf"),
    (["trainer.ckpt_every=-1"], "trainer.ckpt_every=-1"),
    (["trainer.eval_every=-5"], "trainer.eval_every=-5"),
])
def test_numbers_that_cannot_train_are_refused_before_start(run, tmp_path, args, expect):
    res = run("train", *TINY, *args, f"hydra.run.dir={tmp_path / 'r'}")
    assert res.code == 2 and expect in res.err and len(res.err.strip().splitlines()) == 1, res
    assert not (tmp_path / "r").exists()


def test_a_nan_lr_in_a_sweep_is_one_line(run, tmp_path):
    res = run("train", "-m", *TINY, "optim.lr=1e-4,nan", f"hydra.sweep.dir={tmp_path / 's'}")
    assert res.code == 2 and "learning rate" in res.err and len(res.err.strip().splitlines()) == 1, res


def test_eval_n_negative_is_refused(run, trained, tmp_path):
    res = run("eval", f"ckpt={trained / 'checkpoints' / 'last.pt'}", "n=-5", f"hydra.run.dir={tmp_path / 'e'}")
    assert res.code == 2 and "n=-5" in res.err, res


def test_sample_n_beyond_memory_is_refused(run, trained, tmp_path):
    ckpt = trained / "checkpoints" / "last.pt"
    res = run("sample", f"ckpt={ckpt}", "n=2000000000000", f"hydra.run.dir={tmp_path / 's'}")
    assert res.code == 2 and "free memory" in res.err and "Traceback" not in res.err, res
