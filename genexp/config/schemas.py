"""The schemas of conf/trainer, conf/data and conf/optim in Hydra's ConfigStore, under the group `schema`.

Each option names its schema first in its defaults list (`- /schema/data/image_folder@_here_`), so the
option's values merge onto a dataclass and Hydra itself refuses `trainer.max_steps=abc` or a key the
option does not have. `schema` is not a directory of conf/: it lists as no user option of any group.
Every composition needs the store filled first: the CLI before hydra.main, prepare.compose, and the
tests' conftest call ``register`` (cheap and idempotent).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

GROUP = "schema"
# Each group's schemas: a module whose SCHEMAS maps the name an option's defaults list uses
# (/schema/<group>/<name>@_here_) to its dataclass. help.py reads these modules as text.
MODULES = {"trainer": "genexp.training.config", "data": "genexp.data.config", "optim": "genexp.optim.config"}


def register() -> None:
    import importlib

    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, module in MODULES.items():
        for name, node in importlib.import_module(module).SCHEMAS.items():
            store.store(group=f"{GROUP}/{group}", name=name, node=node)


@cache  # help reads an option's file more than once
def field_types(entry: str) -> dict[str, str]:
    """{dotted key: type} of the schema a defaults entry names (`/schema/data/image_files@_here_`), read
    from its module's source with ast: `genexp --help` shows types and imports neither Hydra nor torch."""
    import ast

    parts = entry.split("@", 1)[0].strip().strip("/").split("/")
    if len(parts) != 3 or parts[0] != GROUP or parts[1] not in MODULES:
        return {}
    source = Path(__file__).resolve().parents[1].joinpath(*MODULES[parts[1]].split(".")[1:]).with_suffix(".py")
    tree = ast.parse(source.read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    names = next((node.value for node in tree.body if isinstance(node, ast.Assign)
                  and any(getattr(t, "id", "") == "SCHEMAS" for t in node.targets)), None)
    chosen = {getattr(k, "value", None): getattr(v, "id", None) for k, v in zip(names.keys, names.values)} \
        if isinstance(names, ast.Dict) else {}

    def fields(name: str | None, prefix: str = "") -> dict[str, str]:
        out = {}
        node = classes.get(name)
        for base in node.bases if node else []:
            out.update(fields(getattr(base, "id", None), prefix))
        for stmt in node.body if node else []:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                text, key = ast.unparse(stmt.annotation), prefix + stmt.target.id
                out.update(fields(text, key + ".") if text in classes else {key: _short(text)})
        return out

    return fields(chosen.get(parts[2]))


def _short(annotation: str) -> str:
    """`list[float] | None` -> `list of float or null`: a type as help shows it."""
    if annotation.endswith(" | None"):
        return _short(annotation[:-len(" | None")]) + " or null"
    if annotation.startswith("list[") and annotation.endswith("]"):
        return "list of " + _short(annotation[5:-1])
    return "mapping" if annotation.startswith("dict[") else annotation


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
    import types
    import typing

    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):  # X | None
        return f"{describe(args[0])} or null"
    if origin is list:
        return "a list of " + {"an integer": "integers", "a number": "numbers"}.get(describe(args[0]), "values")
    if origin is dict or dataclasses.is_dataclass(annotation):
        return "a mapping of keys"
    words = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    return words.get(annotation, "another value")


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
