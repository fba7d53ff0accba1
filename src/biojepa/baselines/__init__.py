"""Perturbation-response baselines with the model's ``fit`` / ``predict_perturbation`` interface.

:class:`NoChange` (control mean), :class:`TrainMean` (mean training delta), :class:`Additive` (sum of
single-gene deltas), :class:`Linear` :cite:p:`ahlmanneltze2024deep` and the dose baselines :class:`NearestDose`
and :class:`LogDoseLinear` all derive from
:class:`PerturbationBaseline` and return predictions as an :class:`~anndata.AnnData` laid out like
:meth:`biojepa.BioJEPA.predict_perturbation`.
"""

from ._base import PerturbationBaseline
from ._dose import LogDoseLinear, NearestDose
from ._linear import Linear
from ._simple import Additive, NoChange, TrainMean

__all__ = ["Additive", "Linear", "LogDoseLinear", "NearestDose", "NoChange", "PerturbationBaseline", "TrainMean"]
