"""A config read from a file someone else made is data: it may only name objects we trust.

A checkpoint carries the config and the overrides it was trained with, and genexp builds its
method from them with Hydra's instantiate. Instantiate imports and calls whatever ``_target_``
names, so a downloaded checkpoint whose ``model.generator._target_`` is ``numpy.load`` (or
``os.system``) would run code, although ``torch.load(weights_only=True)`` accepted the file.

Trusted targets are genexp's own (every ``_target_`` in the shipped conf/ tree) and the ones the
user names now: on the command line, or in yaml under a ``hydra.searchpath`` they give. Anything
else is refused in one line naming it; ``trust_checkpoint=true`` is the explicit opt-in. Stored
overrides never touch Hydra itself (``hydra.*``: callbacks, launchers, sweepers, the run dir),
and no opt-in lifts that: genexp never stores such overrides, so a file that has them was made
to do something else.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from omegaconf import DictConfig, ListConfig, OmegaConf

from genexp.errors import UserError

TARGET_KEYS = ("_target_",)
# `_target_: x`, `_target_=x`, `"_target_": "x"`, as a target can appear in an override's text
_TARGET_TEXT = re.compile(r"""_target_['"]?\s*[:=]\s*['"]?([A-Za-z_][\w.]*)""")
# An OmegaConf resolver call (${oc.env:KEY}, ${eval:...} where one is registered); plain
# interpolations (${data.resolution}) are fine. Stored configs are saved resolved, so genexp
# itself never writes either.
_RESOLVER = re.compile(r"\$\{\s*[\w.\-]+\s*:")
# Override keys that reach Hydra's own machinery rather than the job's config.
_HYDRA_KEYS = ("hydra.", "hydra/", "hydra=", "hydra")


@functools.lru_cache(maxsize=4)
def shipped_targets(conf_dir: Path) -> frozenset[str]:
    """Every ``_target_`` named in genexp's own config tree."""
    found: set[str] = set()
    for path in conf_dir.rglob("*.yaml"):
        found.update(targets_in_text(path.read_text(encoding="utf-8", errors="replace")))
    return frozenset(found)


def targets_in_text(text: str) -> set[str]:
    return set(_TARGET_TEXT.findall(text))


def walk_targets(node, path: str = "") -> Iterator[tuple[str, str]]:
    """(dotted key, target) for every ``_target_`` in a plain container or an OmegaConf node."""
    if isinstance(node, (DictConfig, ListConfig)):
        node = OmegaConf.to_container(node, resolve=False)
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key in TARGET_KEYS:
                yield here, str(value)
            else:
                yield from walk_targets(value, here)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from walk_targets(value, f"{path}[{i}]")


def walk_strings(node, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from walk_strings(value, f"{path}[{i}]")
    elif isinstance(node, str):
        yield path, node


def searchpath_targets(overrides: Iterable[str]) -> set[str]:
    """Targets in the yaml of the config dirs the user adds with hydra.searchpath=[...]."""
    found: set[str] = set()
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+") != "hydra.searchpath":
            continue
        for entry in re.split(r"[\[\],\s'\"]+", value):
            if not entry or entry.startswith("pkg://"):
                continue
            folder = Path(entry.removeprefix("file://"))
            if folder.is_dir():
                for path in folder.rglob("*.yaml"):
                    found.update(targets_in_text(path.read_text(encoding="utf-8", errors="replace")))
    return found


def user_targets(overrides: Iterable[str]) -> set[str]:
    """What the user names now: targets typed on the command line and in their own config dirs."""
    overrides = list(overrides)
    found = searchpath_targets(overrides)
    for override in overrides:
        found.update(targets_in_text(override))
    return found


def trusted_targets(conf_dir: Path, overrides: Iterable[str] = ()) -> frozenset[str]:
    return shipped_targets(conf_dir) | frozenset(user_targets(overrides))


def check_stored_overrides(stored: Iterable[str], source: str) -> list[str]:
    """The overrides a checkpoint stores, refused whole when one of them reaches Hydra itself."""
    stored = [str(o) for o in stored]
    for override in stored:
        key = override.lstrip("+~").split("=", 1)[0].split("@", 1)[0].strip()
        if key == "hydra" or key.startswith(("hydra.", "hydra/")):
            raise UserError(f"{source} stores the override '{override[:80]}', which would change Hydra itself "
                            "(callbacks, launcher, sweeper or run dir); genexp never stores such overrides: "
                            "not loaded")
    return stored


def check_stored_config(config: dict, source: str, trusted: frozenset[str], trust: bool = False) -> None:
    """A config as a checkpoint stores it (resolved, plain containers): no resolver call, and
    nothing built outside ``trusted``."""
    for key, value in walk_strings(config):
        if _RESOLVER.search(value):
            raise UserError(f"{source} holds a resolver call at {key} ({value[:60]!r}); genexp stores configs "
                            "resolved, so this file was not written by genexp: not loaded")
    check_config(config, source, trusted, trust)


def check_config(config, source: str, trusted: frozenset[str], trust: bool = False) -> None:
    """Refuse a config from ``source`` that would build anything outside ``trusted``."""
    if trust:
        return
    for key, target in walk_targets(config):
        if target not in trusted:
            raise UserError(f"{source} asks to build {target} (at {key}), which is neither one of genexp's own "
                            "classes nor one you named: not loaded; add trust_checkpoint=true if you trust this "
                            "file and its author")


def check_overrides_targets(overrides: Iterable[str], source: str, trusted: frozenset[str],
                            trust: bool = False) -> None:
    """Stored overrides may set a ``_target_`` (or a whole node holding one) too."""
    if trust:
        return
    for override in overrides:
        for target in targets_in_text(override):
            if target not in trusted:
                raise UserError(f"{source} stores the override '{override[:80]}', which builds {target}: neither "
                                "one of genexp's own classes nor one you named: not loaded; add "
                                "trust_checkpoint=true if you trust this file and its author")


def trust_flag(overrides: Iterable[str]) -> bool:
    """trust_checkpoint=true on the command line (the last setting wins)."""
    value = False
    for override in overrides:
        key, _, raw = override.partition("=")
        if key.lstrip("+") == "trust_checkpoint":
            value = raw.strip().strip("'\"").lower() in ("true", "1", "yes")
    return value
