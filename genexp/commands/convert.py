"""genexp convert NETWORK OUT.pt: an official StyleGAN2 network file as a genexp checkpoint.

Reads a stylegan2-ada-pytorch / stylegan3 pickle, a TF-era StyleGAN2 pickle or a rosinality
checkpoint without executing anything in it (genexp.pretrained), and writes the genexp checkpoint
that `sample`, `eval`, `project` and `train init=` read quickly thereafter (they also take the
original file directly, converting it each time).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genexp.errors import UserError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genexp convert", description=__doc__.split("\n\n")[0])
    p.add_argument("network", help="network-snapshot-*.pkl, ffhq.pkl, stylegan2-*-config-f.pkl or a rosinality .pt")
    p.add_argument("out", help="the genexp checkpoint to write (.pt); must not exist yet")
    return p


def main(args: list[str]) -> None:
    ns = parser().parse_args(args)
    out = Path(ns.out)
    if out.exists():
        raise UserError(f"{out} exists already: give a new file name (genexp convert never overwrites)")
    if not out.parent.is_dir():
        raise UserError(f"{out.parent} is not a directory: create it first")
    from genexp.pretrained.as_checkpoint import checkpoint_from_network_file
    from genexp.training.checkpoint import save_checkpoint

    ckpt = checkpoint_from_network_file(ns.network)
    try:
        save_checkpoint(ckpt, out)
    except OSError as exc:
        raise UserError(f"cannot write {out}: {exc.strerror or exc}") from None
    model = ckpt["config"]["model"]
    print(f"wrote {out}: a {ckpt['source']['format']} StyleGAN2 at {model['resolution']}x{model['resolution']}, "
          f"{model['num_classes'] or 'no'} classes")
    for note in ckpt["source"]["notes"]:
        print(f"note: {note}")
