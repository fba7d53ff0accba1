"""The BioJEPA model class."""

from ._biojepa import BioJEPA

__all__ = ["BioJEPA"]
