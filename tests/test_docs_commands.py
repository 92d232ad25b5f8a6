"""Every `genexp ...` command line in README.md and docs/*.md still means something (issue 17): the docs
cannot drift from conf/ or from the commands' options.

A command line is a line of a fenced code block that starts with `genexp ` (or `$ genexp `, or runs
`-m genexp` under torchrun / srun / python), its `\\` continuations joined and its `# comment` dropped.
train / eval / sample / project lines are composed and checked in-process exactly as `genexp` checks a
command line before Hydra runs (genexp.config.prepare: optional groups, packs, every sweep value, the
composition rules, and the types where a line picks no group option), with `--help` rendered from the yaml text; report / convert / phema lines go
through those commands' own argument parsers. A failing line fails the test with its file, line number
and error. The placeholders the docs may use stand for paths: they are listed in PLACEHOLDERS, and any
other `<...>` fails, so that a new one is a decision."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from genexp.errors import UserError

from .conftest import CONF, REPO

# What the docs write for "a path you have": each becomes a plain path that does not exist (composition
# does not read checkpoints or data; a command that would read one fails on the missing file after its
# arguments parsed, which is what is checked).
PLACEHOLDERS = {
    "<run>": "RUN", "<run dir>": "RUN_DIR", "<...>": "SOMEWHERE", "<stylegan2 run>": "STYLEGAN2_RUN",
    "<conditional run>": "CONDITIONAL_RUN", "<date>": "2026-01-01", "<time>": "00-00-00",
    "<sweep dir>": "SWEEP_DIR", "<n>": "0", "<name>": "NAME",
}
ELLIPSIS = "..."  # a whole argument "...": the rest of a command line, left out (`genexp train ...`)
HYDRA_COMMANDS = ("train", "eval", "sample", "project")
FENCE = re.compile(r"^\s*(```|~~~)")


@dataclass
class Line:
    where: str  # file:line
    text: str


def doc_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def command_lines(path: Path) -> list[Line]:
    """The genexp command lines of one Markdown file's fenced code blocks."""
    lines, inside, pending, start = [], False, "", 0
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        if FENCE.match(raw):
            inside, pending = not inside, ""
            continue
        if not inside:
            continue
        text = raw.strip()
        if pending:
            text = pending + " " + text
        else:
            start = number
        if text.endswith("\\"):
            pending = text[:-1].rstrip()
            continue
        pending = ""
        text = text[2:] if text.startswith("$ ") else text
        if text.startswith("genexp ") or text == "genexp" or re.search(r"(^|\s)-m genexp(\s|$)", text):
            lines.append(Line(f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path.name}:{start}", text))
    return lines


def arguments(text: str) -> list[str]:
    """The argv after `genexp`: placeholders substituted, the comment and a trailing `...` dropped."""
    for unknown in re.findall(r"<[^<>]*>", text.split(" #")[0]):
        if unknown not in PLACEHOLDERS:
            raise UserError(f"placeholder {unknown} is not one of tests/test_docs_commands.py's PLACEHOLDERS")
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    words = shlex.split(text, comments=True)
    words = words[words.index("genexp") + 1:]
    return [w for w in words if w != ELLIPSIS and not w.endswith("=" + ELLIPSIS)]


def check(argv: list[str]) -> None:
    """Raise what `genexp *argv` would refuse before it runs anything (UserError / SystemExit / any error)."""
    from genexp.cli import COMMANDS

    if not argv or argv[0] in ("-h", "--help", "help", "-V", "--version"):
        return
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        raise UserError(f"unknown command {command!r}")
    if command in HYDRA_COMMANDS:
        return check_hydra_command(command, args)
    if command == "phema":
        from genexp.commands.phema import parse

        parse(args)
    else:
        check_file_command(command, args)


def check_hydra_command(command: str, args: list[str]) -> None:
    from hydra._internal.utils import get_args_parser

    from omegaconf import open_dict

    from genexp.config import prepare
    from genexp.config.checks import check_composition
    from genexp.config.suggest import unknown_flag

    if unknown_flag(args):
        raise UserError(unknown_flag(args))
    if any(a in ("-h", "--help") for a in args):
        from genexp.config.help import render

        render(CONF, command, [a for a in args if not a.startswith("-")])
        return
    ns = get_args_parser().parse_args(args)
    overrides, multirun = list(ns.overrides), bool(ns.multirun)
    prepare.check_optional_groups(command, overrides, CONF)
    prepare.check_pack_needs_multirun(overrides, multirun, bool(ns.cfg))
    resume = [o.split("=", 1)[1] for o in overrides if o.startswith("resume=")]
    if command == "train" and resume and resume[-1] == "auto":  # a path would load its checkpoint
        overrides = prepare.expand_resume(overrides, multirun)
    # What genexp's own check (prepare.validate) does, within this test's time: every sweep value composed,
    # the composition rules, and the types where the line picks no group option (then the defaults it
    # compares with are one composition per command, which the memo keeps).
    typed = not any((CONF / o.key_or_group).is_dir() for o in prepare.parse(overrides) if not o.is_delete())
    for variant in prepare.sweep_variants(overrides) if multirun else [overrides]:
        cfg = prepare.compose(command, variant, CONF)
        with open_dict(cfg):
            del cfg["hydra"]
        if typed:
            prepare.check_types(command, cfg, variant, CONF)
        check_composition(command, cfg)


def check_file_command(command: str, args: list[str]) -> None:
    """report / convert parse their arguments, then fail on the placeholder path that does not exist: a
    UserError after parsing is a pass, argparse's SystemExit is not."""
    import importlib

    main = importlib.import_module(f"genexp.commands.{command}").main
    try:
        main(args)
    except UserError:
        return
    raise AssertionError(f"genexp {command} ran on a path the docs wrote as an example: {args}")


# A line the docs show failing on purpose says so in its comment (`genexp train trainer.max_step=3  # fails: ...`):
# it must fail.
FAILS = re.compile(r"\s#\s*fails\b")


def failures(lines: list[Line]) -> list[str]:
    out = []
    for line in lines:
        try:
            check(arguments(line.text))
        except SystemExit as exc:  # argparse already printed why
            if not FAILS.search(line.text):
                out.append(f"{line.where}: exit {exc.code}: {line.text}")
        except Exception as exc:  # noqa: BLE001 - every kind of failure is reported with its line
            if not FAILS.search(line.text):
                out.append(f"{line.where}: {type(exc).__name__}: {exc}\n    {line.text}")
        else:
            if FAILS.search(line.text):
                out.append(f"{line.where}: the docs say this fails, but it passes the checks: {line.text}")
    return out


def all_lines() -> list[Line]:
    return [line for path in doc_files() for line in command_lines(path)]


@pytest.fixture
def composed_once(monkeypatch):
    """Many lines compose the same thing (the defaults behind check_types, a pack, a line in README.md and
    again in a page): each (command, overrides) is composed once, and a copy handed out, since the checks
    edit what they get. A failure is not kept, so it is raised again each time."""
    import copy

    from genexp.config import prepare

    compose, memo = prepare.compose, {}

    def once(command, overrides, conf_dir):
        key = (command, tuple(overrides), str(conf_dir))
        if key not in memo:
            memo[key] = compose(command, overrides, conf_dir)
        return copy.deepcopy(memo[key])

    monkeypatch.setattr(prepare, "compose", once)


def test_every_documented_command_line_composes(tmp_path, monkeypatch, composed_once):
    monkeypatch.chdir(tmp_path)  # relative example paths (ffhq.pkl, outputs/...) exist nowhere
    lines = all_lines()
    assert len(lines) > 60, f"only {len(lines)} genexp command lines found in README.md and docs/*.md"
    bad = failures(lines)
    assert not bad, f"{len(bad)} of {len(lines)} documented command lines fail:\n" + "\n".join(bad)


def test_the_extraction(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("genexp train outside=a_block\n```bash\n$ genexp train loss=hinge \\\n"
                   "    trainer.max_steps=10   # a comment\n# genexp train in_a=comment\n"
                   "torchrun --nproc_per_node=2 -m genexp train ...\nmake demo\n```\n")
    lines = command_lines(doc)
    assert [(line.where.split(":")[-1], line.text) for line in lines] == [
        ("3", "genexp train loss=hinge trainer.max_steps=10   # a comment"),
        ("6", "torchrun --nproc_per_node=2 -m genexp train ..."),
    ]
    assert arguments(lines[0].text) == ["train", "loss=hinge", "trainer.max_steps=10"]
    assert arguments(lines[1].text) == ["train"]
    assert arguments("genexp eval ckpt=<run dir>/last.pt n=2 ckpt=...") == ["eval", "ckpt=RUN_DIR/last.pt", "n=2"]
    with pytest.raises(UserError, match="placeholder <your run>"):
        arguments("genexp eval ckpt=<your run>/last.pt")


@pytest.mark.parametrize("text, error", [
    ("genexp train trainer.max_step=3", "max_step"),                        # a wrong key
    ("genexp train loss=wgan_qp", "wgan_qp"),                               # a wrong option
    ("genexp train -m optim.lr=1e-4,fast", "fast"),                         # a wrong value in a sweep
    ("genexp train trainer.max_steps=lots", "max_steps"),                    # a wrong type
    ("genexp train hparams_search=digits_fid", "-m"),                       # a pack without -m
    ("genexp eval ckpt=x.pt metrics=[fid,nope]", "nope"),                   # a metric that does not exist
    ("genexp report outputs/train/x --group_by loss", "exit 2"),            # an option report does not have
    ("genexp phema ckpt_dir=x sigma=0.1", "sigma"),                         # a key phema does not have
    ("genexp convert only_one.pkl", "exit 2"),                              # a missing argument
    ("genexp trian", "trian"),                                              # an unknown command
])
def test_a_wrong_command_line_fails_with_its_place(text, error, tmp_path, monkeypatch, capsys, composed_once):
    monkeypatch.chdir(tmp_path)
    bad = failures([Line("doc.md:7", text)])
    assert len(bad) == 1 and bad[0].startswith("doc.md:7: "), bad
    assert error in bad[0], bad
    assert failures([Line("doc.md:8", f"{text}   # fails: on purpose")]) == []


def test_a_line_the_docs_say_fails_must_fail(composed_once):
    bad = failures([Line("doc.md:9", "genexp train trainer.max_steps=3   # fails: it does not")])
    assert len(bad) == 1 and "passes the checks" in bad[0], bad
