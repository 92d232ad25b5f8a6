""""Did you mean": the nearest known name to a mistyped key, option, flag or command."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

# Hydra's command-line flags (hydra._internal.utils.get_args_parser), long and short.
FLAGS = ("--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--resolve", "--package", "-p", "--run", "-r",
         "--multirun", "-m", "--shell-completion", "-sc", "--config-path", "-cp", "--config-name", "-cn",
         "--config-dir", "-cd", "--experimental-rerun", "--info", "-i")


def did_you_mean(word: str, choices, key=None) -> str:
    """' (did you mean X?)' when one of ``choices`` is close to ``word``, else ''. ``key`` maps a choice
    to the text compared (a dotted key's last part, say), so `max_step` finds `trainer.max_steps`."""
    choices = list(dict.fromkeys(choices))
    near = difflib.get_close_matches(word, choices, n=2, cutoff=0.6)
    if not near and key is not None:
        by_part = {}
        for c in choices:
            by_part.setdefault(key(c), c)
        near = [by_part[m] for m in difflib.get_close_matches(key(word), list(by_part), n=2, cutoff=0.75)]
    return f" (did you mean {' or '.join(near)}?)" if near else ""


def unknown_flag(args: list[str]) -> str | None:
    """The first `-x` / `--xyz` argument Hydra's parser would not take, with a suggestion."""
    for arg in args:
        flag = arg.split("=", 1)[0]
        if arg.startswith("-") and not re.fullmatch(r"-\d.*", arg) and flag not in FLAGS:
            return f"unknown option {flag}{did_you_mean(flag, FLAGS)}"
    return None


def rephrase(message: str, conf: Path, command: str, overrides: list[str], closed: bool = False) -> str:
    """Hydra's message about an unknown key or group option, said as genexp says it, with the nearest
    known name; any other message unchanged. ``closed``: a schema refused the key (genexp/config/schemas.py),
    so `+key=` cannot add it either."""
    m = re.search(r"Could not override '([^']+)'", message) or re.search(r"Key '([^']+)' is not in struct", message)
    if m:
        from genexp.config.help import all_keys

        bad = m.group(1)
        rest = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != bad]
        try:
            hint = did_you_mean(bad, all_keys(conf, command, rest), key=lambda k: k.rsplit(".", 1)[-1])
        except OSError:
            hint = ""
        if closed:
            return (f"unknown key {bad}{hint}; genexp {command} --help lists the keys (the keys of "
                    f"{bad.rsplit('.', 1)[0]} are fixed by its schema: +{bad}=... cannot add it)")
        return (f"unknown key {bad}{hint}; genexp {command} --help lists the keys "
                f"(a key of your own: +{bad}=...)")
    m = re.search(r"Could not find '([^']+)/([^'/]+)'", message)
    if m and (conf / m.group(1)).is_dir():
        group, option = m.groups()
        known = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        return (f"{group}={option}: no such option{did_you_mean(option, known)} "
                f"(available options in {group}: {', '.join(known)})")
    return message
