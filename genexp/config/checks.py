"""Compositions that cannot train, caught before anything starts, each with the fix in one line."""

from __future__ import annotations

import math

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from genexp.errors import UserError


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
    policy = OmegaConf.select(model, "method.augment", default=None)
    policy = OmegaConf.to_container(policy) if OmegaConf.is_list(policy) else policy
    if policy:
        from genexp.methods.augment import parse_policy

        if data.kind != "image":
            raise UserError(f"model.method.augment={policy}: augmentations work on images and data={data.name} is "
                            f"{data.kind}")
        try:
            parse_policy(policy)
        except ValueError as exc:
            raise UserError(f"model.method.augment={policy}: {exc}") from None
    ada = OmegaConf.select(model, "method.ada", default=None)
    if ada is not None and ada.get("enabled", False):
        from genexp.methods.ada import PIPELINES

        if data.kind != "image":
            raise UserError(f"model.method.ada.enabled=true: ADA augments images and data={data.name} is {data.kind}")
        if ada.get("pipeline", "bgc") not in PIPELINES:
            raise UserError(f"model.method.ada.pipeline={ada.pipeline}: use one of {', '.join(PIPELINES)}")
        colour = set(PIPELINES["color"]) & set(PIPELINES[ada.get("pipeline", "bgc")])
        if colour and int(data.channels) not in (1, 3):
            raise UserError(f"model.method.ada.pipeline={ada.pipeline} has colour transforms, which take 1 or 3 "
                            f"channels, and data.channels={data.channels}: use model.method.ada.pipeline=bg")
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
    try:
        from genexp.optim.schedule import LrDecay

        LrDecay(optim.get("decay", "constant"), optim.get("decay_start", 0.0), cfg.trainer.max_steps)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    trainer = cfg.trainer
    if str(trainer.get("on_nan", "stop")) not in ("stop", "skip"):
        raise UserError(f"trainer.on_nan={trainer.on_nan}: use stop (end the run) or skip (skip non-finite steps)")
    if str(trainer.get("precision", "32")) not in ("32", "bf16", "16"):
        raise UserError(f"trainer.precision={trainer.precision}: use 32, bf16 (bfloat16 autocast) or 16 (float16 "
                        "autocast with loss scaling)")
    accumulate = trainer.get("accumulate", 1)
    if not isinstance(accumulate, int) or isinstance(accumulate, bool) or accumulate < 1:
        raise UserError(f"trainer.accumulate={accumulate}: a whole number of micro-batches per step, at least 1")
    if int(data.batch_size) % accumulate:
        raise UserError(f"data.batch_size={data.batch_size} does not split into trainer.accumulate={accumulate} "
                        "equal micro-batches: use a multiple")
    for key in ("compile", "channels_last"):
        if not isinstance(trainer.get(key, False), bool):
            raise UserError(f"trainer.{key}={trainer.get(key)}: use true or false")
    if str(trainer.get("time_clock", "process")) not in ("process", "wall"):
        raise UserError(f"trainer.time_clock={trainer.time_clock}: use process (this process's CPU time) or wall")
    budget = trainer.get("max_time_s")
    if budget is not None and (not isinstance(budget, (int, float)) or isinstance(budget, bool) or not budget > 0):
        raise UserError(f"trainer.max_time_s={budget}: a positive number of seconds, or null (no time budget)")
    kimg = trainer.get("max_kimg")
    if kimg is not None and (not isinstance(kimg, (int, float)) or isinstance(kimg, bool) or not kimg > 0):
        raise UserError(f"trainer.max_kimg={kimg}: a positive number of thousands of images, or null (no budget)")
    if trainer.get("keep_last") is not None and int(trainer.keep_last) < 1:
        raise UserError(f"trainer.keep_last={trainer.keep_last}: keep at least 1 step checkpoint (null keeps all)")
    if int(data.batch_size) < 1:
        raise UserError(f"data.batch_size={data.batch_size}: must be at least 1")
    for key in ("log_every", "sample_every", "eval_every", "ckpt_every", "eval_samples", "grid_samples"):
        if trainer.get(key) is not None and int(trainer[key]) < 0:
            raise UserError(f"trainer.{key}={trainer[key]}: use 0 (never) or a positive count, or null")
    check_learning_rates(optim)


def check_learning_rates(optim: DictConfig) -> None:
    """Every lr under optim (its shared one and each net's) a finite number >= 0: a negative lr climbs
    the loss, a NaN one turns every weight into NaN at the first step."""
    def walk(node, prefix):
        for key, value in node.items():
            if OmegaConf.is_dict(value):
                walk(value, f"{prefix}{key}.")
            elif key == "lr" and value is not None:
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                        or value < 0:
                    raise UserError(f"optim.{prefix}lr={value}: a learning rate is a finite number >= 0 "
                                    "(e.g. optim.lr=2e-4)")
    walk(optim, "")
