"""The schemas of conf/trainer, conf/data and conf/optim in Hydra's ConfigStore, under the group `schema`.

Each option names its schema first in its defaults list (`- /schema/data/image_folder@_here_`), so the
option's values merge onto a dataclass and Hydra itself refuses `trainer.max_steps=abc` or a key the
option does not have. `schema` is not a directory of conf/: it lists as no user option of any group.
Every composition needs the store filled first: the CLI before hydra.main, prepare.compose, and the
tests' conftest call ``register`` (cheap and idempotent).
"""

from __future__ import annotations

GROUP = "schema"


def register() -> None:
    from hydra.core.config_store import ConfigStore

    from genexp.data.config import SCHEMAS as DATA
    from genexp.optim.config import SCHEMAS as OPTIM
    from genexp.training.config import TrainerConfig

    store = ConfigStore.instance()
    store.store(group=GROUP, name="trainer", node=TrainerConfig)
    for group, schemas in (("data", DATA), ("optim", OPTIM)):
        for name, node in schemas.items():
            store.store(group=f"{GROUP}/{group}", name=name, node=node)


def refused_value(exc: BaseException) -> tuple[str, str] | None:
    """(dotted key, what it takes) when a schema refused a value's type during composition, else None.
    `optim.betas[1]` reports as optim.betas: the list is what the user wrote."""
    import dataclasses
    import typing

    from omegaconf.errors import ValidationError

    from genexp.errors import cause_of

    cause = cause_of(exc, ValidationError)
    if cause is None or not getattr(cause, "full_key", None):
        return None
    key = str(cause.full_key).split("[", 1)[0]
    owner = cause.object_type
    if dataclasses.is_dataclass(owner):
        annotation = typing.get_type_hints(owner).get(key.rsplit(".", 1)[-1])
    else:  # an element of a typed list or mapping: its container's annotation
        annotation = getattr(cause, "ref_type", None)
    return (key, describe(annotation)) if annotation is not None else None


def describe(annotation) -> str:
    """A field's type in a user's words: `an integer`, `a list of numbers`, `a number or null` ..."""
    import dataclasses
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin is typing.Union:  # Optional[X]
        return f"{describe(args[0])} or null"
    if origin in (list, typing.List):
        return "a list of " + {"an integer": "integers", "a number": "numbers"}.get(describe(args[0]), "values")
    if origin in (dict, typing.Dict) or dataclasses.is_dataclass(annotation):
        return "a mapping of keys"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(annotation, "another value")


def closed(exc: BaseException) -> bool:
    """An unknown key refused by a schema (its keys are fixed), rather than by an open mapping in struct mode."""
    import dataclasses

    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    from genexp.errors import cause_of

    cause = cause_of(exc, ConfigAttributeError) or cause_of(exc, ConfigKeyError)
    return cause is not None and dataclasses.is_dataclass(getattr(cause, "object_type", None))


def schema_of(cfg, key: str):
    """The dataclass that fixes the keys of the node holding dotted ``key`` in ``cfg``, or None (an open
    mapping, a node that does not exist)."""
    import dataclasses

    from omegaconf import OmegaConf

    parent = key.rsplit(".", 1)[0] if "." in key else ""
    node = OmegaConf.select(cfg, parent, throw_on_missing=False) if parent else cfg
    owner = OmegaConf.get_type(node) if OmegaConf.is_dict(node) else None
    return owner if dataclasses.is_dataclass(owner) else None
