"""Only what pyproject.toml cannot say: the discovered packages plus conf/ (and its group
folders) shipped as genexp.conf, so that a non-editable install has the configs."""

from pathlib import Path

from setuptools import find_packages, setup

conf = Path(__file__).parent / "conf"
# every folder below conf/, nested ones too (conf/loss/reg, conf/hydra/launcher)
groups = sorted("genexp.conf." + ".".join(p.relative_to(conf).parts) for p in conf.rglob("*") if p.is_dir()
                and not p.name.startswith((".", "__")))
setup(packages=[*find_packages(include=["genexp", "genexp.*"]), "genexp.conf", *groups])
