"""`genexp <command> --help`: the command's config groups and every key with its default and its
description, read from conf/'s yaml files and their comments (the one place keys are documented).

Hydra's own help composes the config, which means importing Hydra and, through our resolvers, torch:
seconds before a line shows. This reads the yaml text directly: no torch, no Hydra, no composition.
Interpolations show as written (``${..lr}``); `--cfg job` prints the composed values.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Entry:
    key: str  # dotted, from the config root
    value: str  # as written in the yaml ("" for a mapping)
    doc: str
    type: str = ""  # from the option's schema (genexp/config/schemas.py), where it names one


@dataclass
class Section:
    title: str
    path: Path
    doc: str = ""
    entries: list[Entry] = field(default_factory=list)


def _strip_comment(text: str) -> tuple[str, str]:
    """`value  # note` -> (value, note), leaving '#' inside quotes alone."""
    quote = None
    for i, ch in enumerate(text):
        if ch in "'\"" and quote in (None, ch):
            quote = None if quote else ch
        elif ch == "#" and quote is None and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip(), text[i + 1:].strip()
    return text.rstrip(), ""


def read_yaml_doc(path: Path) -> tuple[str | None, str, list[tuple[str, str, str]], list[str]]:
    """(package directive, file description, [(dotted key, value, comment)], defaults lines) of one file,
    by its text: a comment block right above a key documents that key; the file's first block documents
    the file."""
    package, header, entries, defaults = None, [], [], []
    stack: list[tuple[int, str]] = []  # (indent, key) of the mappings we are inside
    block: list[str] = []
    seen_key = in_defaults = False
    last: list | None = None  # the entry a following "- item" belongs to
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if stripped.startswith("# @package"):
            package = stripped.split(None, 2)[2].strip()
            continue
        if stripped.startswith("#"):
            block.append(stripped.lstrip("#").strip())
            continue
        if not stripped:
            if not seen_key and block and not header:
                header, block = block, []
            block = [] if seen_key else block
            continue
        indent = len(raw) - len(raw.lstrip())
        if stripped.startswith("- "):
            if in_defaults and indent >= 0:
                defaults.append(_strip_comment(stripped[2:])[0])
            elif last is not None:
                item = _strip_comment(stripped[2:])[0]
                last[1] = last[1] + ", " + item if last[1] else "\0" + item  # \0: a block list
            block = []
            continue
        if not seen_key and block and not header:
            header, block = block, []
        seen_key = True
        key, _, rest = stripped.partition(":")
        value, inline = _strip_comment(rest.strip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        in_defaults = indent == 0 and key == "defaults"
        if in_defaults:
            block, last = [], None
            continue
        if stack and stack[0][1] == "defaults":
            continue
        dotted = ".".join([k for _, k in stack] + [key])
        doc = " ".join(block + ([inline] if inline else []))
        entry = [dotted, value, doc]
        entries.append(entry)
        last = entry if not value else None
        if not value:
            stack.append((indent, key))
        block = []
    for e in entries:
        if e[1].startswith("\0"):
            e[1] = "[" + e[1][1:] + "]"
    return package, " ".join(header), [tuple(e) for e in entries], defaults


def _internal(key: str) -> bool:
    """_target_, _partial_ ...: how an object is built, not a setting."""
    return any(part.startswith("_") for part in key.split("."))


def about(conf: Path, command: str) -> str:
    for key, value, _ in read_yaml_doc(conf / f"{command}.yaml")[2]:
        if key == "about":
            return value
    return ""


def _choices(defaults: list[str]) -> list[tuple[str, str | list[str], bool]]:
    """(group, option or options, optional) of a defaults list's entries, leaving out _self_ and hydra."""
    out = []
    for item in defaults:
        if ":" not in item:
            continue
        group, _, option = item.partition(":")
        group, option = group.strip(), option.strip()
        optional = group.startswith("optional ")
        group = group.removeprefix("optional ").removeprefix("override ").strip().lstrip("/")
        if group.startswith("hydra"):
            continue
        options: str | list[str] = ([o.strip() for o in option.strip("[]").split(",") if o.strip()]
                                    if option.startswith("[") else option)
        out.append((group, options, optional))
    return out


def _group_options(conf: Path, group: str) -> list[str]:
    return sorted(p.stem for p in (conf / group).glob("*.yaml"))


def _option_file(conf: Path, group: str, option: str) -> tuple[str | None, str, list[tuple[str, ...]], list[str]]:
    """read_yaml_doc of conf/<group>/<option>.yaml with the sibling options it extends (a bare name in
    its defaults list) merged under it: their keys first, its own values and comments over them; each
    entry with the type its schema gives the key ("" without one)."""
    from genexp.config.schemas import field_types

    package, doc, entries, defaults = read_yaml_doc(conf / group / f"{option}.yaml")
    merged: dict[str, tuple[str, str, str, str]] = {}
    types: dict[str, str] = {}
    for base in defaults:
        if base.startswith("/"):  # a schema (/schema/...@_here_): types, not keys or values
            types.update(field_types(base))
        elif ":" not in base and base != "_self_" and (conf / group / f"{base}.yaml").is_file():
            for k, v, d, t in _option_file(conf, group, base)[2]:
                merged[k] = (k, v, d, t)
    for k, v, d in entries:
        old = merged.get(k, ("", "", "", ""))
        merged[k] = (k, v, d or old[2], types.get(k, old[3]))
    return package, doc, list(merged.values()), defaults


def _selected(conf: Path, command: str, overrides: list[str]) -> tuple[dict, list[str], list[str]]:
    """The command's groups with the option each takes: the defaults, then what the chosen options'
    own defaults override (a loss its optimizer, an experiment its model ...), then the command line."""
    _, _, _, defaults = read_yaml_doc(conf / f"{command}.yaml")
    chosen, order, optional = {}, [], []
    for group, option, is_optional in _choices(defaults):
        chosen[group] = option
        order.append(group)
        if is_optional:
            optional.append(group)
    given = {}
    for raw in overrides:
        key, eq, value = raw.lstrip("+~").partition("=")
        if eq and key in chosen and (conf / key).is_dir():
            given[key] = [v.strip() for v in value.strip("[]").split(",")] if value.startswith("[") else value
    chosen.update(given)
    # Options override groups in Hydra's order (experiment after model, ...); two passes reach what an
    # experiment's model then overrides (model=edm's loss and optimizer).
    for _ in range(2):
        for group in order:
            option = chosen[group]
            if not isinstance(option, str) or not (conf / group / f"{option}.yaml").is_file():
                continue
            for item in _option_file(conf, group, option)[3]:
                target, _, value = item.partition(":")
                if not target.strip().startswith("override"):
                    continue
                target = target.strip().removeprefix("override").strip().lstrip("/").split("@")[0]
                value = value.strip()
                if target in chosen and target not in given:
                    chosen[target] = ([v.strip() for v in value.strip("[]").split(",")] if value.startswith("[")
                                      else value)
    return chosen, order, optional


def sections(conf: Path, command: str, overrides: list[str] = ()) -> tuple[list[Section], dict, list[str], list[str]]:
    chosen, order, optional = _selected(conf, command, list(overrides))
    _, doc, entries, _ = read_yaml_doc(conf / f"{command}.yaml")
    skip = {"task_name", "about"}
    out = [Section(f"genexp {command}", conf / f"{command}.yaml", doc,
                   [Entry(k, v, d) for k, v, d in entries if k not in skip and not _internal(k)])]
    for group in order:
        options = chosen[group]
        for option in options if isinstance(options, list) else [options]:
            path = conf / group / f"{option}.yaml"
            if option in ("null", "None", "") or not path.is_file():
                continue
            package, doc, entries, _ = _option_file(conf, group, option)
            prefix = "" if package == "_global_" else (package or group.replace("/", ".")) + "."
            out.append(Section(f"{group}={option}", path, doc,
                               [Entry(prefix + k, v, d, t) for k, v, d, t in entries if not _internal(k)]))
    return out, chosen, order, optional


def render(conf: Path, command: str, overrides: list[str] = (), width: int | None = None) -> str:
    width = width or min(110, max(60, shutil.get_terminal_size((100, 20)).columns))
    secs, chosen, order, optional = sections(conf, command, overrides)
    lines = [f"genexp {command}: {about(conf, command)}", "",
             f"usage: genexp {command} [group=option ...] [key=value ...]"
             + (" [-m]" if command == "train" else "") + " [--cfg job] [--help]", "",
             "Config groups (group=option; * marks what this command line picks):"]
    listed = []
    for group in order:
        pick = chosen.get(group)
        picks = set(pick if isinstance(pick, list) else [pick])
        names = [("*" if o in picks else "") + o for o in _group_options(conf, group)]
        note = " (optional)" if group in optional else ""
        listed.append((group + note, ", ".join(names)))
        for sub in sorted(p for p in (conf / group).iterdir() if p.is_dir()):
            listed.append((f"+{group}/{sub.name}", ", ".join(_group_options(conf, f"{group}/{sub.name}"))
                           + f"  (add: +{group}/{sub.name}=[{_group_options(conf, f'{group}/{sub.name}')[0]}])"))
    if command == "train" and (conf / "hydra" / "launcher").is_dir():
        listed.append(("hydra/launcher", ", ".join(_group_options(conf, "hydra/launcher")) + "  (with -m)"))
    pad = max(len(g) for g, _ in listed) + 2
    for group, names in listed:
        lines += textwrap.wrap(names, width, initial_indent="  " + group.ljust(pad),
                               subsequent_indent=" " * (pad + 2), break_on_hyphens=False)
    lines += ["", "Keys (key=value; the defaults of the options above; ${...} resolves at run time; (type): what "
              "Hydra accepts):"]
    for sec in secs:
        if not sec.entries:
            continue
        rel = os.path.relpath(sec.path, conf.parent) if conf.parent in sec.path.parents else sec.path.name
        lines += ["", f"{sec.title}  ({rel})"]
        if sec.doc:
            lines += textwrap.wrap(sec.doc, width, initial_indent="  ", subsequent_indent="  ")
        for e in sec.entries:
            shown = (f"{e.key}={e.value}" if e.value else f"{e.key}:") + (f"  ({e.type})" if e.type else "")
            lines.append("  " + shown)
            if e.doc:
                lines += textwrap.wrap(e.doc, width, initial_indent="      ", subsequent_indent="      ")
    lines += ["", "Sweep: -m key=a,b. The composed config: --cfg job. Hydra's own flags: --hydra-help.",
              "Docs: README.md and docs/ (a page per task)."]
    return "\n".join(lines)


def all_keys(conf: Path, command: str, overrides: list[str] = ()) -> list[str]:
    """Every dotted key the yaml files of this command line define (for "did you mean")."""
    secs, *_ = sections(conf, command, overrides)
    return [e.key for s in secs for e in s.entries]
