"""Training plan and data splitter of BioJEPA."""

from ._plan import BioJEPATrainingPlan
from ._splitter import BioJEPADataSplitter

__all__ = ["BioJEPADataSplitter", "BioJEPATrainingPlan"]
