"""Readers for pretrained networks published by other projects (official StyleGAN2 files)."""

from genexp.pretrained.official import read_network_file

__all__ = ["read_network_file"]
