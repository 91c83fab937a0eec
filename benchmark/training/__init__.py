"""Training recipes: losses and miners (PML), batch sampling, optimizers and schedules, ``fit``."""

from benchmark.training.fit import fit

__all__ = ["fit"]
