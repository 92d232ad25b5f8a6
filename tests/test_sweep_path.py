"""Where the docs say a sweep lands (README.md, `genexp --help`, `genexp report`'s error) is where one
does land (issue 17): one real one-step sweep from an empty folder, with Hydra's own sweep.dir."""

from __future__ import annotations

import re

from genexp.cli import USAGE

from .conftest import REPO, TINY

# How each text writes a sweep folder: placeholders (<date>, <time>) or an example date.
DATE, TIME = r"\d{4}-\d{2}-\d{2}", r"\d{2}-\d{2}-\d{2}"
SWEEP_WORD = re.compile(r"(?:multirun|outputs)[^\s)]*multirun[^\s)]*|multirun/[^\s)]+")


def documented(text: str, where: str) -> list[re.Pattern]:
    """Every sweep-folder path ``text`` shows, as a pattern a real folder must match."""
    found = [m.group(0).rstrip("/.,") for m in SWEEP_WORD.finditer(text)]
    assert found, f"{where} names no sweep folder"
    patterns = []
    for path in found:
        path = re.sub(r"/<(job|n)>/?$", "", path)  # the job's own folder below the sweep's
        pattern = re.escape(path).replace(re.escape("<command>"), "train")
        pattern = pattern.replace(re.escape("<date>"), DATE).replace(re.escape("<time>"), TIME)
        pattern = re.sub(r"\d{4}\\-\d{2}\\-\d{2}", DATE.replace("\\", "\\\\"), pattern)
        pattern = re.sub(r"(?<=_)\d{2}\\-\d{2}\\-\d{2}", TIME.replace("\\", "\\\\"), pattern)
        patterns.append(re.compile(pattern))
    return patterns


def test_the_documented_sweep_folder_is_where_a_sweep_lands(run, tmp_path):
    res = run("train", "-m", *TINY, "metrics=[]", "trainer.max_steps=1", "trainer.sample_every=0",
              "trainer.eval_every=0", "optim.lr=1e-4", cwd=tmp_path)
    assert res.code == 0, res
    sweeps = [p for p in (tmp_path / "outputs" / "train").iterdir()]
    assert len(sweeps) == 1, sweeps
    sweep = sweeps[0].relative_to(tmp_path).as_posix()
    assert (tmp_path / sweep / "0" / "checkpoints" / "last.pt").is_file()
    # the job says where it runs: inside the sweep folder
    printed = re.search(r"run dir (\S+)", res.out + res.err)
    assert printed and printed.group(1).endswith(f"{sweep}/0"), res

    missing = run("report", "no/such/sweep", cwd=tmp_path)
    assert missing.code == 2 and "\n" not in missing.err.strip(), missing
    readme = [line for line in (REPO / "README.md").read_text().splitlines() if "genexp report" in line]
    texts = {"README.md": "\n".join(readme), "genexp --help": USAGE, "genexp report's error": missing.err}
    for where, text in texts.items():
        for pattern in documented(text, where):
            assert pattern.fullmatch(sweep), f"{where} says {pattern.pattern}, the sweep landed in {sweep}"

    # and the documented next step works on it
    report = run("report", sweep, "--metric", "loss/g", cwd=tmp_path)
    assert report.code == 0, report
    assert (tmp_path / sweep / "report.csv").is_file()
