"""Hyperparameter tuning with :func:`scvi.autotune.run_autotune` (optional extra ``biojepa[tune]``)."""

from ._search_space import search_space

__all__ = ["search_space"]
