"""Seedable samplers of gene-module masks."""

from ._module_mask import ModuleMaskSampler

__all__ = ["ModuleMaskSampler"]
