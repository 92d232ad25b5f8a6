"""Compositions that cannot train, caught before anything starts, each with the fix in one line.

The rules here span groups (a model and its data, loss and optimizer); a rule of one group lives beside
its component (genexp/training/config.py, genexp/data/config.py, genexp/optim/config.py, the ADA and
DiffAugment modules) and is called from here.
"""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genexp.data import config as data_rules
from genexp.errors import UserError
from genexp.optim import config as optim_rules
from genexp.training import config as trainer_rules


def check_composition(command: str, cfg: DictConfig) -> None:
    """Semantic checks first (their messages say more than a failed interpolation would),
    then missing values, then every interpolation must resolve (a typo in ${...})."""
    try:
        if command == "train":
            check_train(cfg)
        if command == "eval":
            check_eval(cfg)
        missing = missing_values(OmegaConf.to_container(cfg, resolve=False))
        if missing:
            key = missing[0]
            raise UserError(f"genexp {command} needs a value for '{key}': add {key}=... to the command")
        OmegaConf.to_container(cfg, resolve=True)
    except OmegaConfBaseException as exc:
        from genexp.config.prepare import one_line

        raise UserError(one_line(exc)) from None


def check_eval(cfg: DictConfig) -> None:
    if cfg.get("n") is not None and int(cfg.n) < 1:
        raise UserError(f"n={cfg.n}: ask for at least one fake sample (null: each metric's own count)")
    if cfg.get("stats_only"):
        if cfg.get("data") is None:
            raise UserError("stats_only=true computes the statistics of a dataset: add data=... (e.g. data=digits)")
        return
    if cfg.get("ckpt") and cfg.get("fake"):
        raise UserError("genexp eval takes ckpt=<checkpoint> or fake=<generated images>, not both")
    if not cfg.get("ckpt") and not cfg.get("fake"):
        raise UserError("genexp eval needs ckpt=<checkpoint> or fake=<folder or zip of generated "
                        "images> (with data=...)")


def missing_values(node, prefix: str = "") -> list[str]:
    """Keys left at ``???``, read without resolving interpolations (which may point at them)."""
    if isinstance(node, dict):
        return [k for key, value in node.items() for k in missing_values(value, f"{prefix}{key}.")]
    if isinstance(node, list):
        return [k for i, value in enumerate(node) for k in missing_values(value, f"{prefix}{i}.")]
    return [prefix[:-1]] if node == "???" else []


def check_train(cfg: DictConfig) -> None:
    model, data, loss = cfg.model, cfg.data, cfg.loss
    data_rules.check(data)  # the rules of one group each live beside the component they protect
    if model.family != loss.family:
        hint = " (loss=edm)" if model.family == "diffusion" else ""
        raise UserError(
            f"loss={loss.name} is an objective for {loss.family} models but model={model.name} is a "
            f"{model.family}: choose a loss made for {model.family} models{hint}"
        )
    if model.data_kind != data.kind:
        raise UserError(
            f"model={model.name} takes {model.data_kind} data but data={data.name} is {data.kind} data: "
            f"use a {data.kind} model (e.g. model={'mlp' if data.kind == 'points' else 'dcgan'})"
        )
    if data.kind == "image":
        for key in ("resolution", "channels"):
            if model[key] != data[key]:
                raise UserError(
                    f"model.{key}={model[key]} but data.{key}={data[key]}: make them equal "
                    f"(model.{key} follows data.{key} unless you set it)"
                )
    else:
        if model.dim != data.dim:
            raise UserError(f"model.dim={model.dim} but data.dim={data.dim}: make them equal")
    if "levels" in model and model.levels is None and model.get("discrete", True):
        raise UserError(f"model={model.name} scores discrete pixel values and data={data.name} has none "
                        "(data.levels=null): use data=digits8, or data.levels=256 for 8-bit images at their "
                        "native size")
    augment_policy = OmegaConf.select(model, "method.augment", default=None)
    if augment_policy:
        from genexp.methods.augment import check_policy

        check_policy(augment_policy, data)
    ada = OmegaConf.select(model, "method.ada", default=None)
    if ada is not None and ada.get("enabled", False):
        from genexp.methods.ada import check_settings

        check_settings(ada, data)
    classes = int(model.get("num_classes", 0) or 0)
    if classes:
        if int(data.get("num_classes", 0) or 0) != classes:
            raise UserError(f"model.num_classes={classes} but data={data.name} has {data.get('num_classes', 0)} "
                            f"classes: a conditional model needs labelled data with as many classes "
                            f"(model.num_classes=${{data.num_classes}})")
        if int(OmegaConf.select(model, "method.pack", default=1) or 1) > 1:
            raise UserError("model.method.pack > 1 with a conditional model: packed samples have no single label; "
                            "use one of the two")
    d_norm = OmegaConf.select(model, "discriminator.norm", default=None)
    if loss.get("d_regularizers") and d_norm == "batch":
        names = ", ".join(loss.d_regularizers)
        raise UserError(
            f"loss={loss.name} penalises per-sample gradients of D ({names}), which batch norm couples "
            "across the batch: set model.discriminator.norm=layer (or none, or spectral)"
        )
    if int(loss.get("d_steps", 1)) < 1:
        raise UserError(f"loss.d_steps={loss.d_steps}: needs at least one D step per G step")
    optim = cfg.optim
    # GAN-like families train a generator and a discriminator; likelihood families one `model`.
    wanted = ("generator", "discriminator") if model.family == "gan" else ("model",)
    for key in wanted:
        if key not in optim:
            use = {"gan": "adam", "diffusion": "adam_edm"}.get(model.family, "adam_ml")
            raise UserError(f"optim={optim.name} has no '{key}' optimizer, which model={model.name} ({model.family}) "
                            f"needs: use optim={use} or one like it")
    if model.family == "diffusion" and "sampler" in model:
        from genexp.models.edm.sampler import sampler_settings

        sampler_settings(OmegaConf.to_container(model.sampler, resolve=True))
    trainer_rules.check(cfg.trainer, data)
    optim_rules.check(optim, cfg.trainer.max_steps)
