"""`genexp train init=<file>`: start a new run from another run's networks (transfer learning).

The file is a genexp checkpoint or an official StyleGAN2 network file (genexp.pretrained). Only the
networks' weights are taken (G, D and G_ema for a GAN; every net a family has), never the file's
config, optimizer state, step or augmentation state: the run trains on its own data, with fresh
optimizers, from step 0, as stylegan2-ada-pytorch's --resume does for a pickle.
"""

from __future__ import annotations

from omegaconf import DictConfig

from genexp.errors import UserError, first_line


def network_names(method) -> list[str]:
    """The method's children that hold a network (an EMA copy counts; ADA's p does not)."""
    return [name for name, child in method.named_children() if any(True for _ in child.parameters())]


def model_hint(ckpt: dict) -> str:
    """The model options the file's networks were made with, as overrides to add."""
    keys = [o.lstrip("+") for o in ckpt.get("overrides", []) if o.lstrip("+").startswith(("model", "data.resolution",
                                                                                          "data.channels"))]
    return f"; its networks were made with: {' '.join(keys)}" if keys else ""


def init_from(method, path: str, cfg: DictConfig, note) -> None:
    from genexp.pretrained.as_checkpoint import load_any_checkpoint

    ckpt = load_any_checkpoint(path)
    model = ckpt.get("config", {}).get("model", {})
    theirs, ours = model.get("resolution"), cfg.model.get("resolution")
    if theirs is not None and ours is not None and int(theirs) != int(cfg.data.resolution):
        raise UserError(f"init={path}: its networks are {theirs}x{theirs} and data.resolution={cfg.data.resolution}: "
                        f"train at data.resolution={theirs}, or start from a network of your data's resolution")
    modules = ckpt["method"]["modules"]
    loaded = []
    for name in network_names(method):
        state = {k[len(name) + 1:]: v for k, v in modules.items() if k.startswith(name + ".")}
        if not state:
            continue
        try:
            getattr(method, name).load_state_dict(state, strict=True)
        except RuntimeError as exc:
            reason = first_line(exc).split(":", 1)[-1].strip()[:140]
            raise UserError(f"init={path}: its {name} does not fit this run's model ({reason}){model_hint(ckpt)}") \
                from None
        loaded.append(name)
    if not loaded:
        raise UserError(f"init={path}: it holds none of this model's networks ({', '.join(network_names(method))})")
    source = ckpt.get("source", {}).get("format", "genexp checkpoint")
    note(f"init: {', '.join(loaded)} from {path} ({source}); optimizers, step and augmentation start fresh")
