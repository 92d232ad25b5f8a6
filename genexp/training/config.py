"""The trainer's settings (conf/trainer) as a schema Hydra checks types against, and the rules a type
cannot say, beside the loop they protect.

Choice fields are plain ``str`` checked by ``check``, not Enums: the composed config goes into every
checkpoint, and an Enum member there is a class the safe unpickler refuses to build.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from genexp.errors import UserError

ON_NAN = ("stop", "skip")
PRECISIONS = ("32", "bf16", "16")
TIME_CLOCKS = ("process", "wall")
# Cadences where 0 means never and null means each metric's own count.
COUNTS = ("log_every", "sample_every", "eval_every", "ckpt_every", "eval_samples", "grid_samples")


@dataclass
class PhemaConfig:
    sigma_rels: list[float] | None = MISSING
    snapshot_every: int = MISSING


@dataclass
class TrainerConfig:
    # No values here: conf/trainer/default.yaml holds them, with their comments (one source).
    device: str = MISSING
    max_steps: int = MISSING
    max_time_s: float | None = MISSING
    time_clock: str = MISSING
    max_kimg: float | None = MISSING
    seed: int = MISSING
    deterministic: bool = MISSING
    log_every: int | None = MISSING
    sample_every: int | None = MISSING
    eval_every: int | None = MISSING
    ckpt_every: int | None = MISSING
    eval_samples: int | None = MISSING
    grid_samples: int | None = MISSING
    progress: str = MISSING
    objective: str | None = MISSING
    keep_last: int | None = MISSING
    keep_best: bool = MISSING
    on_nan: str = MISSING
    precision: str = MISSING
    accumulate: int = MISSING
    compile: bool = MISSING
    channels_last: bool = MISSING
    phema: PhemaConfig = field(default_factory=PhemaConfig)


# The name conf/trainer's options use: /schema/trainer/default@_here_.
SCHEMAS = {"default": TrainerConfig}


def check(trainer, data) -> None:
    """The trainer's value rules (``trainer``: the composed trainer node; ``data``: the data node, whose
    batch the accumulation splits). Types were checked by Hydra against TrainerConfig."""
    if str(trainer.get("on_nan", "stop")) not in ON_NAN:
        raise UserError(f"trainer.on_nan={trainer.on_nan}: use stop (end the run) or skip (skip non-finite steps)")
    if str(trainer.get("precision", "32")) not in PRECISIONS:
        raise UserError(f"trainer.precision={trainer.precision}: use 32, bf16 (bfloat16 autocast) or 16 (float16 "
                        "autocast with loss scaling)")
    accumulate = trainer.get("accumulate", 1)
    if not isinstance(accumulate, int) or isinstance(accumulate, bool) or accumulate < 1:
        raise UserError(f"trainer.accumulate={accumulate}: a whole number of micro-batches per step, at least 1")
    if int(data.batch_size) % accumulate:
        raise UserError(f"data.batch_size={data.batch_size} does not split into trainer.accumulate={accumulate} "
                        "equal micro-batches: use a multiple")
    if str(trainer.get("time_clock", "process")) not in TIME_CLOCKS:
        raise UserError(f"trainer.time_clock={trainer.time_clock}: use process (this process's CPU time) or wall")
    budget = trainer.get("max_time_s")
    if budget is not None and not _positive(budget):
        raise UserError(f"trainer.max_time_s={budget}: a positive number of seconds, or null (no time budget)")
    kimg = trainer.get("max_kimg")
    if kimg is not None and not _positive(kimg):
        raise UserError(f"trainer.max_kimg={kimg}: a positive number of thousands of images, or null (no budget)")
    if trainer.get("keep_last") is not None and int(trainer.keep_last) < 1:
        raise UserError(f"trainer.keep_last={trainer.keep_last}: keep at least 1 step checkpoint (null keeps all)")
    for key in COUNTS:
        if trainer.get(key) is not None and int(trainer[key]) < 0:
            raise UserError(f"trainer.{key}={trainer[key]}: use 0 (never) or a positive count, or null")


def _positive(value) -> bool:
    # A config without the schema (a checkpoint's stored one) may still hold a string here.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
