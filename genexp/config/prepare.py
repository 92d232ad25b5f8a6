"""Check a command line before Hydra acts on it, and expand `resume=` into the run's overrides.

Hydra reports a bad override over several lines with exit code 1, after it has made
the run directory. Here every composition the command asks for is built with the
compose API first; any problem becomes a UserError (one line, exit 2) and nothing
has been written yet.
"""

from __future__ import annotations

import itertools
import typing
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from genexp.errors import UserError, cause_of

# Hydra flags after which no job runs: nothing to check.
_INFO_FLAGS = ("help", "hydra_help", "info", "shell_completion")


def prepare_args(command: str, args: list[str], conf_dir: Path) -> list[str]:
    from hydra._internal.utils import get_args_parser

    from genexp.config.suggest import unknown_flag

    bad_flag = unknown_flag(args)
    if bad_flag:
        raise UserError(f"{bad_flag} (genexp {command} --help lists the keys and options)")
    try:
        ns = get_args_parser().parse_args(args)
    except SystemExit as exc:  # argparse already printed its usage line
        raise SystemExit(2) from exc
    if ns.multirun and (ns.cfg or any(getattr(ns, flag, None) for flag in _INFO_FLAGS if flag != "help")):
        # Hydra's own refusal is a traceback.
        raise UserError("--cfg and --info show one run's config: leave out -m (and give a swept key one value); "
                        "an hparams_search pack's search space shows as hydra.sweeper.params with --cfg hydra")
    if any(getattr(ns, flag, None) for flag in _INFO_FLAGS):
        return args
    overrides = list(ns.overrides)
    check_optional_groups(command, overrides, conf_dir)
    check_pack_needs_multirun(overrides, bool(ns.multirun), bool(ns.cfg))
    if command == "train":
        overrides = expand_resume(overrides, bool(ns.multirun))
    validate(command, overrides, conf_dir, multirun=bool(ns.multirun))
    flags = [a for a in args if a not in set(ns.overrides)]
    return flags + overrides


def check_optional_groups(command: str, overrides: list[str], conf_dir: Path) -> None:
    """Hydra skips an `optional` group's option that does not exist (hparams_search=nope would train
    with the defaults, experiment=nope too): every option named for one must be a file there."""
    defaults = OmegaConf.load(conf_dir / f"{command}.yaml").get("defaults") or []
    optional = {k.split(" ", 1)[1] for d in defaults if isinstance(d, DictConfig)
                for k in d if k.startswith("optional ")}
    for o in parse(overrides):
        group = o.key_or_group
        if group not in optional or o.is_delete() or o.package is not None:
            continue
        values = sweep_values(o) if o.is_sweep_override() else [o.get_value_element_as_str()]
        for value in values:
            if value not in ("null", "None", "") and not (conf_dir / group / f"{value}.yaml").is_file():
                known = sorted(p.stem for p in (conf_dir / group).glob("*.yaml"))
                from genexp.config.suggest import did_you_mean

                raise UserError(f"{group}={value}: no such option{did_you_mean(value, known)} "
                                f"(available options in {group}: {', '.join(known)})")


def check_pack_needs_multirun(overrides: list[str], multirun: bool, showing: bool) -> None:
    """An hparams_search pack only sets up a sweeper, which Hydra runs with -m alone: without it the
    command would quietly train one run with the defaults. (A resume re-applies a trial's overrides,
    pack included, as a single run: that comes later, from the checkpoint, and is fine.)"""
    packs = [o for o in overrides if o.lstrip("+").startswith("hparams_search=")]
    if packs and not multirun and not showing and packs[-1].split("=", 1)[1] not in ("null", ""):
        raise UserError(f"{packs[-1]} is a sweep: add -m (genexp train -m {packs[-1]})")


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
    stored = stored_overrides(ckpt, f"checkpoint {ckpt_path}", rest)
    merged = merge_overrides(stored, rest)
    merged.append(f"resume={quote(str(ckpt_path))}")
    newest = run_dir / "checkpoints" / "last.pt" if run_dir is not None else None
    in_place = newest is not None and (newest.resolve() == ckpt_path.resolve() or (
        newest.is_file() and int(load_checkpoint(newest).get("step", -1)) == int(ckpt.get("step", -2))))
    if in_place and not any(o.startswith("hydra.run.dir=") for o in merged):
        merged.append(f"hydra.run.dir={quote(str(run_dir))}")
    return merged


def stored_overrides(ckpt: dict, source: str, typed: list[str]) -> list[str]:
    """A checkpoint's overrides are data: nothing of Hydra's own, no target the user did not name
    (genexp.config.trust)."""
    from genexp.cli import conf_dir
    from genexp.config import trust

    stored = trust.check_stored_overrides(ckpt.get("overrides", []), source)
    trusted, trusting = trust.trusted_targets(conf_dir(), typed), trust.trust_flag(typed)
    trust.check_overrides_targets(stored, source, trusted, trusting)
    # What the stored overrides compose to may hold targets no override spells out (a group option
    # read from elsewhere): the composed config passes the same gate.
    cfg = compose("train", merge_overrides(stored, typed), conf_dir())
    with open_dict(cfg):
        del cfg["hydra"]
    trust.check_config(cfg, source, trusted, trusting)
    return stored


def quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def sweep_variants(overrides: list[str]) -> list[list[str]]:
    """Enough compositions to check every value of every sweep: the first value of each
    sweep, then each other value of one sweep at a time (not the full product)."""
    parsed = parse(overrides)
    choices = []
    for raw, o in zip(overrides, parsed):
        if o.is_sweep_override():
            key = raw.split("=", 1)[0]
            choices.append([f"{key}={v}" for v in sweep_values(o)] or [None])
        else:
            choices.append([raw])
    first = [c[0] for c in choices]
    variants = [first]
    for i, values in enumerate(choices):
        for v in values[1:]:
            variants.append(first[:i] + [v] + first[i + 1:])
    return [[o for o in v if o is not None] for v in variants]


def sweep_values(o) -> list[str]:
    """The values of one sweep to check: every value of a,b / choice() / range(); for interval(), which a
    sampling sweeper (Optuna) draws from, its two ends (floats, or integers for int(interval(...)))."""
    if o.is_interval_sweep():
        return [str(o.value().start), str(o.value().end)]
    try:
        return list(o.sweep_string_iterator())
    except Exception:  # a sweep this Hydra cannot list: left to the sweeper
        return []


def with_sweeper_params(command: str, overrides: list[str], conf_dir: Path) -> list[str]:
    """The search space in hydra.sweeper.params (an hparams_search pack's, or the basic sweeper's) as
    overrides ahead of the command line's, which win for the same key as they do in the sweepers: so a
    pack's keys and values are checked like the command line's, before any job starts."""
    cfg = compose(command, sweep_variants(overrides)[0], conf_dir)
    params = OmegaConf.select(cfg, "hydra.sweeper.params", default=None) or {}
    given = {o.get_key_element() for o in parse(overrides)}
    return [f"{k}={v}" for k, v in params.items() if k not in given] + overrides


def check_sweeper(command: str, cfg: DictConfig, overrides: list[str]) -> None:
    """What the chosen sweeper needs: the basic one lists values (no interval()); Optuna optimises the
    one number `genexp train` returns, so that number must exist and the direction must fit it."""
    target = str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="") or "")
    if "BasicSweeper" in target:
        for raw, o in zip(overrides, parse(overrides)):
            if o.is_interval_sweep():
                raise UserError(f"{raw}: interval() is sampled by a sweeper such as Optuna (an hparams_search pack, "
                                "or hydra/sweeper=optuna); the basic sweeper takes a,b,c / choice() / range()")
    elif command == "train" and "optuna" in target.lower():
        check_objective(cfg)
        sweep_dir = Path(str(OmegaConf.select(cfg, "hydra.sweep.dir")))
        if cfg.get("resume") == "auto" and sweep_dir.is_dir() and any(sweep_dir.iterdir()):
            # resume=auto is for a job that its scheduler starts again, not for the sweep command run again.
            raise UserError(f"hydra.sweep.dir={sweep_dir} holds an earlier Optuna sweep: a new study's trials would "
                            "draw new values into the old trials' run dirs; use a new hydra.sweep.dir")


def check_objective(cfg: DictConfig) -> None:
    name = cfg.trainer.get("objective")
    direction = OmegaConf.select(cfg, "hydra.sweeper.direction", default="minimize")
    if not name:
        raise UserError("an Optuna sweep optimises trainer.objective, which is null: set it to a metric the runs "
                        "evaluate (e.g. trainer.objective=fid)")
    if not cfg.trainer.get("eval_every"):
        raise UserError(f"an Optuna sweep optimises the best {name} over a run's evaluations, but "
                        f"trainer.eval_every={cfg.trainer.get('eval_every')} makes none")
    if OmegaConf.is_list(direction):
        raise UserError(f"hydra.sweeper.direction={OmegaConf.to_container(direction)}: genexp train returns one "
                        f"value (the best {name}), so give one direction")
    direction = str(direction).split(".")[-1].lower()  # a string, or optuna's Direction enum
    expected = objective_direction(str(name))
    if expected is not None and direction != expected:
        raise UserError(f"hydra.sweeper.direction={direction} but trainer.objective={name} is better when "
                        f"{'higher' if expected == 'maximize' else 'lower'}: use hydra.sweeper.direction={expected}")


def objective_direction(name: str) -> str | None:
    """maximize or minimize for a metric kind or key, as its registered metric declares (metrics/registry.py),
    or None when the name covers keys of both kinds (modes: captured up, reverse_kl down)."""
    from genexp.metrics.registry import direction

    return direction(name)


def interval_hint(err: UserError, overrides: list[str]) -> UserError:
    """`trainer.max_steps=1000.0: expected an integer` reads oddly for interval(1000, 5000): say why."""
    key = str(err).split("=", 1)[0]
    for raw, o in zip(overrides, parse(overrides)):
        if o.get_key_element() == key and o.is_interval_sweep() and "expected an integer" in str(err):
            return UserError(f"{raw}: {key} takes integers but interval() samples floats: use int(interval(...))")
    return err


def compose(command: str, overrides: list[str], conf_dir: Path) -> DictConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from genexp.config.schemas import register

    register()
    try:
        with initialize_config_dir(str(conf_dir), version_base="1.3"):
            return hydra_compose(command, overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        if cause_of(exc, KeyboardInterrupt):  # Ctrl-C while Hydra composed: a stop, not a config error
            raise KeyboardInterrupt from None
        from genexp.config import schemas
        from genexp.config.suggest import rephrase

        refused = schemas.refused_value(exc)
        if refused is not None:
            raise type_error(command, overrides, conf_dir, *refused) from None
        if "does not support deletion" in str(exc.__cause__ or exc):
            key = str(getattr(exc.__cause__, "full_key", "") or "the key")
            raise UserError(f"~{key}: every {key.split('.')[0]} option has this key (its schema fixes the keys): "
                            f"give it a value instead ({key}=...)") from None
        message = rephrase(one_line(exc), conf_dir, command, overrides, closed=schemas.closed(exc))
        raise UserError(message + plugin_hint(str(exc))) from None


def type_error(command: str, overrides: list[str], conf_dir: Path, key: str, expected: str) -> UserError:
    """A value a schema refused, said as check_types says it: the value as typed, what the key takes, and
    its default (composed without the refused override; this runs only on the way out)."""
    raw = next((r for r, o in zip(overrides, parse(overrides)) if o.key_or_group == key and not o.is_delete()), None)
    if raw is None:  # set in a config file (a pack of the user's own)
        return UserError(f"{key}: expected {expected} (the config files set it to something else)")
    said = f"{key}={raw.split('=', 1)[1]}: expected {expected}"
    if expected == "true or false":
        return UserError(said)
    try:
        default = OmegaConf.select(compose(command, [o for o in overrides if o is not raw], conf_dir), key,
                                   throw_on_missing=False)
    except (UserError, OmegaConfBaseException):
        return UserError(said)
    default = OmegaConf.to_container(default) if OmegaConf.is_config(default) else default
    return UserError(f"{said} (the default is {'null' if default is None else default})")


def plugin_hint(message: str) -> str:
    """A sweeper or launcher plugin that is not installed shows up as a config Hydra cannot find."""
    plugins = ("hydra/sweeper/optuna", "hydra/launcher/submitit_local", "hydra/launcher/submitit_slurm")
    if any(f"'{name}'" in message for name in plugins):
        return (" (the Optuna sweeper and the submitit launchers come with genexp's sweeps extra: "
                "pip install -e '.[sweeps]')")
    return ""


def validate(command: str, overrides: list[str], conf_dir: Path, multirun: bool) -> None:
    from genexp.config.checks import check_composition

    try:
        if multirun:
            overrides = with_sweeper_params(command, overrides, conf_dir)
        variants = sweep_variants(overrides) if multirun else [overrides]
        for i, variant in enumerate(variants):
            cfg = compose(command, variant, conf_dir)
            check_output_dir(cfg, multirun, variant)
            if multirun and i == 0:
                check_sweeper(command, cfg, overrides)
            with open_dict(cfg):
                del cfg["hydra"]  # holds fields that exist only once a job runs
            check_types(command, cfg, variant, conf_dir)
            check_composition(command, cfg)
    except UserError as err:
        raise interval_hint(err, overrides) from None


def check_types(command: str, cfg: DictConfig, overrides: list[str], conf_dir: Path) -> None:
    """What the schemas of trainer, data and optim (genexp/config/schemas.py) leave to check. Hydra refuses a
    wrong type there itself; here:
    - a key of a group without a schema (model, loss, metrics ...) or in an open mapping (a net's optimizer,
      data.dataset) must hold what its default holds: a number where the default is a number;
    - a schema's boolean takes true or false only: OmegaConf would also take yes, on, 1 and any integer
      (trainer.channels_last=2 would become true), more likely a slip than a choice;
    - `+key=` cannot add a key to a schema's node: Hydra adds it under open_dict, and nothing would read it."""
    from genexp.config import schemas

    value_overrides = []
    group_overrides = []
    for raw, o in zip(overrides, parse(overrides)):
        key = o.key_or_group
        if o.is_delete() or key.startswith("hydra") or o.package is not None:
            continue
        if (conf_dir / key).is_dir():
            group_overrides.append(raw)
            continue
        schema = schemas.schema_of(cfg, key)
        if schema is None:
            value_overrides.append((raw, key))
            continue
        field = key.rsplit(".", 1)[-1]
        hints = typing.get_type_hints(schema)
        if field not in hints:
            from genexp.config.help import all_keys
            from genexp.config.suggest import did_you_mean

            node = key.rsplit(".", 1)[0]
            known = [k for k in all_keys(conf_dir, command, overrides) if k.rsplit(".", 1)[0] == node]
            hint = did_you_mean(key, known, key=lambda k: k.rsplit(".", 1)[-1])
            raise UserError(f"{raw}: {key} does not exist{hint} and cannot be added: the keys of {node} are fixed "
                            f"by its schema (genexp {command} --help lists them)")
        value = o.value()
        if hints[field] in (bool, bool | None) and not isinstance(value, bool) and value is not None \
                and not str(value).startswith("${"):
            raise UserError(f"{key}={raw.split('=', 1)[1]}: expected true or false")
    if not value_overrides:
        return
    base = compose(command, group_overrides, conf_dir)
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
    try:
        exists = path.exists()
    except OSError as exc:  # ENAMETOOLONG, ELOOP, EACCES on a parent
        raise UserError(f"{key}={str(path)[:80]}{'...' if len(str(path)) > 80 else ''}: {exc.strerror or exc}; "
                        "choose a shorter or reachable directory") from None
    if not exists:
        check_creatable(key, path)
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


def check_creatable(key: str, path: Path) -> None:
    """The run dir does not exist yet: its names must fit the filesystem and its nearest existing parent
    must take a new folder (tried for real: permissions, read-only mounts and /proc all answer)."""
    import os
    import tempfile

    shown = f"{str(path)[:80]}..." if len(str(path)) > 80 else str(path)
    parent = path.absolute()
    while not parent.exists():
        parent = parent.parent
    try:
        name_max = os.pathconf(parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        name_max = 255
    long = [part for part in path.parts if len(os.fsencode(part)) > name_max]
    if long:
        raise UserError(f"{key}={shown}: the name {long[0][:40]}... is {len(os.fsencode(long[0]))} bytes, "
                        f"longer than the {name_max} this filesystem allows; choose a shorter directory name")
    if len(os.fsencode(str(path.absolute()))) > 4000:
        raise UserError(f"{key}={shown}: the path is {len(os.fsencode(str(path.absolute())))} bytes long, "
                        "too long to write files under; choose a shorter directory")
    if not parent.is_dir():
        raise UserError(f"{key}={shown}: {parent} is a file, not a directory; choose another directory")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".genexp-write-test-", dir=parent))
    except OSError as exc:
        raise UserError(f"{key}={shown}: cannot create it in {parent} ({exc.strerror or exc}); "
                        "choose a writable directory") from None
