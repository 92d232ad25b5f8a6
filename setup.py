"""Only what pyproject.toml cannot say: the discovered packages plus conf/ (and its group
folders) shipped as genexp.conf, so that a non-editable install has the configs."""

from pathlib import Path

from setuptools import find_packages, setup

groups = sorted(f"genexp.conf.{p.name}" for p in Path(__file__).parent.joinpath("conf").iterdir() if p.is_dir())
setup(packages=[*find_packages(include=["genexp", "genexp.*"]), "genexp.conf", *groups])
