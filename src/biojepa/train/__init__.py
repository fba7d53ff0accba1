"""Training plan of BioJEPA."""

from ._plan import BioJEPATrainingPlan

__all__ = ["BioJEPATrainingPlan"]
