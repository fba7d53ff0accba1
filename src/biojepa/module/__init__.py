"""The BioJEPA scvi-tools module."""

from ._biojepa import BioJEPAModule

__all__ = ["BioJEPAModule"]
