"""Optimizer settings shared by every method (the conf/optim group)."""
