"""Check a command line before Hydra acts on it, and expand `resume=` into the run's overrides.

Hydra reports a bad override over several lines with exit code 1, after it has made
the run directory. Here every composition the command asks for is built with the
compose API first; any problem becomes a UserError (one line, exit 2) and nothing
has been written yet.
"""

from __future__ import annotations

import itertools
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from genexp.errors import UserError

# Hydra flags after which no job runs: nothing to check.
_INFO_FLAGS = ("help", "hydra_help", "info", "shell_completion")


def prepare_args(command: str, args: list[str], conf_dir: Path) -> list[str]:
    from hydra._internal.utils import get_args_parser

    try:
        ns = get_args_parser().parse_args(args)
    except SystemExit as exc:  # argparse already printed its usage line
        raise SystemExit(2) from exc
    if any(getattr(ns, flag, None) for flag in _INFO_FLAGS):
        return args
    overrides = list(ns.overrides)
    if command == "train":
        overrides = expand_resume(overrides, bool(ns.multirun))
    validate(command, overrides, conf_dir, multirun=bool(ns.multirun))
    flags = [a for a in args if a not in set(ns.overrides)]
    return flags + overrides


def one_line(exc: BaseException) -> str:
    """Hydra and OmegaConf messages span lines and end with a search path or a hint to set
    HYDRA_FULL_ERROR; keep the part a user can act on."""
    lines = []
    for line in str(exc).splitlines():
        if line.startswith(("Config search path", "Set the environment variable", "    full_key", "full_key")):
            break
        if line.strip():
            lines.append(line.strip())
    text = " ".join(lines) or type(exc).__name__
    return text.replace("Available options in", "available options in").replace(" :", ":")


def parse(overrides: list[str]):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as exc:
        raise UserError(one_line(exc)) from None


def merge_overrides(base: list[str], user: list[str]) -> list[str]:
    """`base` then `user`, where a key the user sets replaces the base's entry for it."""
    user_keys = {o.get_key_element() for o in parse(user)}
    kept = [raw for raw, o in zip(base, parse(base)) if o.get_key_element() not in user_keys]
    return kept + user


def expand_resume(overrides: list[str], multirun: bool = False) -> list[str]:
    """`resume=<run dir or checkpoint>` re-applies the run's own overrides. It continues in the
    run's dir when the checkpoint is that run's newest; from an older checkpoint it branches
    into a new run dir, so the later checkpoints stay as they are (hydra.run.dir= overrides both)."""
    resume = [o for o in overrides if o.startswith("resume=")]
    target = resume[-1].split("=", 1)[1].strip("'\"") if resume else ""
    if target in ("", "null", "None"):
        return overrides
    if target == "auto":  # resolved by the job itself, in its own run dir (commands/train.py)
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        if not any(o.startswith(f"{key}=") for o in overrides):
            raise UserError(f"resume=auto looks for checkpoints in the run dir: add {key}=<a fixed dir> "
                            "so that a restarted job finds the same one")
        return overrides
    from genexp.training.checkpoint import load_checkpoint, locate_resume

    ckpt_path, run_dir = locate_resume(target)
    ckpt = load_checkpoint(ckpt_path)
    rest = [o for o in overrides if not o.startswith("resume=")]
    merged = merge_overrides(list(ckpt.get("overrides", [])), rest)
    merged.append(f"resume={quote(str(ckpt_path))}")
    newest = run_dir / "checkpoints" / "last.pt" if run_dir is not None else None
    in_place = newest is not None and (newest.resolve() == ckpt_path.resolve() or (
        newest.is_file() and int(load_checkpoint(newest).get("step", -1)) == int(ckpt.get("step", -2))))
    if in_place and not any(o.startswith("hydra.run.dir=") for o in merged):
        merged.append(f"hydra.run.dir={quote(str(run_dir))}")
    return merged


def quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sweep_variants(overrides: list[str]) -> list[list[str]]:
    """Enough compositions to check every value of every sweep: the first value of each
    sweep, then each other value of one sweep at a time (not the full product)."""
    parsed = parse(overrides)
    choices = []
    for raw, o in zip(overrides, parsed):
        if o.is_sweep_override():
            try:
                values = list(o.sweep_string_iterator())
            except Exception:  # interval() etc. belong to a sweeper such as Optuna
                values = []
            key = raw.split("=", 1)[0]
            choices.append([f"{key}={v}" for v in values] or [None])
        else:
            choices.append([raw])
    first = [c[0] for c in choices]
    variants = [first]
    for i, values in enumerate(choices):
        for v in values[1:]:
            variants.append(first[:i] + [v] + first[i + 1:])
    return [[o for o in v if o is not None] for v in variants]


def compose(command: str, overrides: list[str], conf_dir: Path) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            return hydra_compose(command, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        raise UserError(one_line(exc)) from None


def validate(command: str, overrides: list[str], conf_dir: Path, multirun: bool) -> None:
    from genexp.config.checks import check_composition

    variants = sweep_variants(overrides) if multirun else [overrides]
    for variant in variants:
        cfg = compose(command, variant, conf_dir)
        check_output_dir(cfg, multirun, variant)
        with open_dict(cfg):
            del cfg["hydra"]  # holds fields that exist only once a job runs
        check_types(command, cfg, variant, conf_dir)
        check_composition(command, cfg)


def check_types(command: str, cfg: DictConfig, overrides: list[str], conf_dir: Path) -> None:
    """A value where the defaults hold a number (or a boolean) must be one too."""
    value_overrides = []
    group_overrides = []
    for raw, o in zip(overrides, parse(overrides)):
        key = o.key_or_group
        if o.is_delete() or key.startswith("hydra") or o.package is not None:
            continue
        (group_overrides if (conf_dir / key).is_dir() else value_overrides).append((raw, key))
    if not value_overrides:
        return
    base = compose(command, [raw for raw, _ in group_overrides], conf_dir)
    for raw, key in value_overrides:
        try:
            default = OmegaConf.select(base, key, throw_on_missing=False, default=None)
            value = OmegaConf.select(cfg, key, throw_on_missing=False, default=None)
        except OmegaConfBaseException as exc:
            raise UserError(f"{raw}: {one_line(exc)}") from None
        given = raw.split("=", 1)[1]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise UserError(f"{key}={given}: expected true or false")
        elif isinstance(default, int) and not (isinstance(value, int) and not isinstance(value, bool)):
            raise UserError(f"{key}={given}: expected an integer (the default is {default})")
        elif isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise UserError(f"{key}={given}: expected a number (the default is {default})")


def check_output_dir(cfg: DictConfig, multirun: bool, overrides: list[str]) -> None:
    """Never write a new run over files an earlier one left: an explicit output dir must be
    new or empty, unless this is the resume of the run that lives there."""
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    if not any(o.startswith(f"{key}=") for o in overrides):
        return
    path = Path(str(OmegaConf.select(cfg, key, throw_on_missing=False)))
    if not path.exists():
        return
    if not path.is_dir():
        raise UserError(f"{key}={path} is a file, not a directory")
    resume = cfg.get("resume")
    if resume == "auto" or resume and not multirun and Path(str(resume)).resolve().is_relative_to(path.resolve()):
        return
    used = [p.name for p in itertools.islice(path.iterdir(), 50) if p.name != ".hydra"]
    if used:
        raise UserError(
            f"{key}={path} already holds an earlier run ({', '.join(sorted(used)[:3])}); "
            "choose a new directory, or resume=<that dir> to continue training there"
        )
