"""`genexp <command> [overrides]`: pick the command's primary config and hand argv to Hydra.

Before Hydra runs, every composition the command line asks for (each job of a sweep)
is composed and checked here, so that a user's mistake ends with one line and exit
code 2 instead of Hydra's multi-line report, and before anything is written.
Imports stay inside functions so that `genexp --help` is instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

COMMANDS = {
    "train": "train a model (defaults: a DCGAN on the embedded 8x8 digits)",
    "eval": "evaluate a checkpoint: FID / IS / KID ... as a table and metrics.json",
    "sample": "draw samples from a checkpoint: a PNG grid (or scatter) and a tensor file",
    "project": "invert a StyleGAN2 checkpoint on an image (w / w+): projected image, latent, PSNR",
    "report": "one table (console, CSV, Markdown) and one plot of every run in a sweep folder",
    "convert": "an official StyleGAN2 network file (NVIDIA pickle, TF pickle, rosinality .pt) as a genexp checkpoint",
    "phema": "post-hoc EMA (EDM2): checkpoints of any EMA length from a run's trainer.phema snapshots",
}

USAGE = """\
genexp: reproducible generative-model experiments (Hydra configs, one CLI, one metrics protocol)

usage: genexp <command> [group=option ...] [key=value ...] [-m] [--cfg job] [--help]

commands:
{commands}

examples:
  genexp train                                        # DCGAN + non-saturating loss on digits
  genexp train data=ring model=mlp trainer.max_steps=2000
  genexp train -m loss=ns,wgan_gp optim.lr=1e-4,2e-4   # a sweep: 4 runs
  genexp train resume=outputs/train/<run dir>         # continue bit-exactly
  genexp eval ckpt=outputs/train/<run dir>/checkpoints/last.pt metrics=[fid,kid]
  genexp sample ckpt=outputs/train/<run dir>/checkpoints/last.pt n=64 seed=0
  genexp project ckpt=<stylegan2 run>/checkpoints/last.pt target=face.png space=w_plus steps=1000
  genexp report outputs/train/<date>_<time>_multirun --metric fid   # a sweep: table + report.png
  genexp sample ckpt=ffhq.pkl seeds=0-9 psi=0.7       # an official network: generate.py's images
  genexp convert ffhq.pkl ffhq.pt                     # the same network as a genexp checkpoint
  genexp phema ckpt_dir=<run dir> sigma_rel=0.05,0.10 # post-hoc EMA lengths as checkpoints (<run>/phema/)
  genexp train --help                                 # config groups and every key

Outputs land in outputs/<command>/<date>_<time>_<name>/ (override with hydra.run.dir=...), a sweep's
in outputs/<command>/<date>_<time>_multirun/<job>/ (hydra.sweep.dir=...).
"""


def conf_dir() -> Path:
    """conf/ at the repo top in a checkout or editable install; genexp/conf when installed."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise RuntimeError(f"genexp's conf/ directory is missing (looked beside {here})")


def fail(message: str) -> None:
    print(f"genexp: error: {message}", file=sys.stderr)
    sys.exit(2)


def main(argv: list[str] | None = None) -> None:
    """Ctrl-C before training has its own stop handler (imports, composition, building the data and
    nets) ends quietly with one line and the shell's 130, not a traceback through torch or Hydra."""
    try:
        run_main(argv)
    except Exception as exc:
        from genexp.errors import cause_of

        # Ctrl-C inside Hydra or OmegaConf can surface as the error it left behind (a half-set config
        # node), with the KeyboardInterrupt as its context: still a stop, not a bug to print.
        if cause_of(exc, KeyboardInterrupt) is None:
            raise
        interrupted()
    except KeyboardInterrupt:
        interrupted()


def interrupted() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while leaving says nothing more
    print("genexp: interrupted", file=sys.stderr)
    sys.exit(130)


def run_main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        print(USAGE.format(commands="\n".join(f"  {k:<{width}}  {v}" for k, v in COMMANDS.items())))
        return
    if argv[0] in ("-V", "--version"):
        from genexp import __version__

        print(f"genexp {__version__}")
        return
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        from genexp.config.suggest import did_you_mean

        fail(f"unknown command '{command}'{did_you_mean(command, COMMANDS)}: use one of {', '.join(COMMANDS)} "
             "(see genexp --help)")

    from genexp.errors import UserError

    if command in ("report", "convert", "phema"):  # read and write files; no config to compose
        import importlib

        try:
            importlib.import_module(f"genexp.commands.{command}").main(args)
        except UserError as err:
            fail(str(err))
        return
    if any(a in ("-h", "--help") for a in args):  # from the yaml text: no torch, no Hydra (config/help.py)
        from genexp.config.help import render

        print(render(conf_dir(), command, [a for a in args if not a.startswith("-")]))
        return
    try:
        from genexp.config.prepare import prepare_args

        args = prepare_args(command, args, conf_dir())
    except UserError as err:
        fail(str(err))
    run_hydra(command, args)


def run_hydra(command: str, args: list[str]) -> None:
    import hydra

    from genexp.commands import run_command

    def task(cfg):
        return run_command(command, cfg)

    args = rank_args(command, args)
    if not any(a.split("=", 1)[0] in SHOW_FLAGS for a in args):
        from genexp.rundir import NO_HYDRA_SUBDIR

        # Hydra would write .hydra/ before the job can claim its run dir (and over the run a resume
        # reads): the job writes it itself (genexp/rundir.py), once the dir is its own.
        args = [*args, NO_HYDRA_SUBDIR]
    # Hydra parses sys.argv itself; argv[0] only names the program in its messages.
    sys.argv = [f"genexp {command}", *args]
    from genexp.config.schemas import register

    register()  # the conf options' defaults lists name these schemas
    hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name=command)(task)()


# Hydra flags that show something and run no job.
SHOW_FLAGS = ("--cfg", "-c", "--info", "-i", "--help", "-h", "--hydra-help", "--shell-completion", "-sc")


def rank_args(command: str, args: list[str]) -> list[str]:
    """Data-parallel ranks other than 0 (torchrun, srun) write nothing of their own: Hydra gets a
    throwaway run dir and no .hydra/ folder; training moves them into rank 0's run dir."""
    from genexp import distributed

    world = distributed.from_env()
    if not world.enabled:
        return args
    if command != "train":
        fail(f"genexp {command} runs in one process: start it without torchrun / srun")
    if any(a in ("-m", "--multirun") for a in args):
        fail("a sweep (-m) under torchrun / srun: launch one torchrun per run instead (e.g. hydra/launcher=slurm "
             "with tasks_per_node set to the GPUs per node)")
    if world.main:
        return args
    import tempfile

    scratch = Path(tempfile.gettempdir()) / f"genexp-rank{world.rank}-{os.getpid()}"
    return [*args, f"hydra.run.dir={scratch}", "hydra.output_subdir=null"]


if __name__ == "__main__":
    main()
