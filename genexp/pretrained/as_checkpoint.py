"""An official StyleGAN2 network file as a genexp checkpoint: what `ckpt=`, `init=` and `genexp convert` take.

``read_network_file`` gives the official constructor kwargs and state dicts (nothing in the file
executed); genexp/models/stylegan2_official.py maps those kwargs onto genexp's networks. Here they
become the overrides of a `genexp train model=stylegan2` config (so the config says what the networks
are, as for any run), the method is built from that config, and the official weights are loaded into
its G, G_ema and D. The result has the layout of a checkpoint genexp train writes, at step 0.
"""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import OmegaConf, open_dict

from genexp.errors import UserError
from genexp.models import stylegan2_official as official
from genexp.pretrained.official import read_network_file
from genexp.training.checkpoint import FORMAT, VERSION

# genexp Generator / Discriminator arguments that are model-level keys of conf/model/stylegan2.yaml
# (the nets read them through interpolations, and the method and the data read them too).
MODEL_KEYS = {"z_dim", "w_dim", "num_classes", "channel_base", "channel_max"}
DATA_KEYS = {"resolution", "channels"}


def hydra_value(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(hydra_value(v) for v in value) + "]"
    return repr(value) if isinstance(value, float) else str(value)


def network_overrides(record: dict) -> list[str]:
    """`genexp train` overrides whose model=stylegan2 networks have the file's shapes and function."""
    G = official.generator_kwargs(record["G_kwargs"])
    D = official.discriminator_kwargs(record["D_kwargs"]) if record.get("D_kwargs") else None
    out = ["model=stylegan2", "data=images", "loss=ns"]
    out += [f"data.{k}={hydra_value(G[k])}" for k in sorted(DATA_KEYS)]
    out += [f"data.num_classes={hydra_value(G['num_classes'])}"]
    out += [f"model.{k}={hydra_value(G[k])}" for k in sorted(MODEL_KEYS)]
    out += [f"++model.generator.{k}={hydra_value(v)}" for k, v in G.items() if k not in MODEL_KEYS | DATA_KEYS]
    if D is not None:
        shared = {k for k in MODEL_KEYS | DATA_KEYS if D.get(k) == G.get(k)}
        out += [f"++model.discriminator.{k}={hydra_value(v)}" for k, v in D.items() if k not in shared]
    return out


def compose_train(overrides: list[str]):
    """The train config for ``overrides``, also from inside a running command (sample ckpt=X.pkl):
    Hydra's compose API wants its global state to itself, so the job's is set aside and put back."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    from genexp.cli import conf_dir
    from genexp.config.prepare import compose

    hydra, job = GlobalHydra.instance().hydra, HydraConfig.instance().cfg
    GlobalHydra.instance().clear()
    try:
        cfg = compose("train", overrides, conf_dir())
    finally:
        GlobalHydra.instance().clear()
        if hydra is not None:
            GlobalHydra.instance().initialize(hydra)
        HydraConfig.instance().cfg = job
    with open_dict(cfg):
        del cfg["hydra"]
        if "path" in cfg.data.keys():  # an image folder's (data=images, path ???): a schema adds no key elsewhere
            cfg.data.path = None  # the file holds no data: eval asks for data=...
    return cfg


def load_weights(method, record: dict, notes: list[str]) -> None:
    official.load(method.G, record["G"], "G")
    official.load(method.G_ema, record.get("G_ema") or record["G"], "G_ema")
    if record.get("D") is not None:
        official.load(method.D, record["D"], "D")
    else:
        notes.append("the file holds no discriminator: D starts from random weights")


def checkpoint_from_record(record: dict, source: str) -> dict:
    """A genexp checkpoint (step 0, fresh optimizers) holding the record's networks."""
    from genexp.methods import build_method

    overrides = network_overrides(record)
    cfg = compose_train(overrides)
    method = build_method(cfg, torch.device("cpu"))
    notes = list(record.get("notes", []))
    load_weights(method, record, notes)
    return {"genexp": {"format": FORMAT, "version": VERSION}, "config": OmegaConf.to_container(cfg, resolve=True),
            "overrides": overrides, "method": method.state_dict_all(), "step": 0,
            "source": {"path": source, "format": record["format"], "notes": notes}}


def checkpoint_from_network_file(path: str | Path) -> dict:
    return checkpoint_from_record(read_network_file(path), str(path))


def is_genexp_checkpoint(path: Path) -> bool:
    """A torch zip whose pickle carries genexp's marker (read without unpickling anything)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl")), None)
            return name is not None and FORMAT.encode() in z.read(name)
    except (OSError, zipfile.BadZipFile):
        return False


# What the reader says of a torch file that is rosinality's but cannot be used (any other failure of a
# zip: a torn or foreign file, which genexp's own checkpoint reader names better).
ROSINALITY_BUT_BAD = ("lacks rosinality tensor", "SWAGAN")


def load_any_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """A genexp checkpoint as it is, or an official network file converted (see the module doc).

    A raw pickle can only be an official network file; a torch zip without genexp's marker may be a
    rosinality checkpoint; anything else (a torn file, another torch file) gets genexp's own message."""
    from genexp.training.checkpoint import load_checkpoint

    path = Path(path)
    if not path.is_file() or is_genexp_checkpoint(path):
        return load_checkpoint(path, map_location)
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(b"\x80"):
        return checkpoint_from_network_file(path)
    if head == b"PK\x03\x04":
        try:
            return checkpoint_from_network_file(path)
        except UserError as exc:
            if any(sign in str(exc) for sign in ROSINALITY_BUT_BAD):  # a rosinality file, and a bad one
                raise
    return load_checkpoint(path, map_location)
