"""Features of perturbations (gene priors, compound fingerprints): one table, checked once.

A perturbation's token is built from its identity (a gene's embedding, a learned vector for a perturbation that
is not a measured gene) and, when given, a numeric feature row: GO-derived gene features
(:func:`biojepa.data.go_features`), Morgan fingerprints of compounds (:func:`biojepa.data.compound_features`) or any
table indexed by perturbation name. A name with features but without identity (a compound never seen in training)
is predicted from its features alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

__all__ = ["PerturbationFeatures"]


@dataclass(frozen=True, eq=False)
class PerturbationFeatures:
    """A numeric feature row per perturbation name.

    Parameters
    ----------
    names
        Perturbation names (gene symbols or compound names), distinct.
    columns
        Feature names.
    values
        ``(len(names), len(columns))`` finite float32 values.

    Examples
    --------
    >>> import pandas as pd
    >>> from biojepa.perturbation import PerturbationFeatures
    >>> table = PerturbationFeatures.from_frame(pd.DataFrame({"f0": [1.0, 0.0]}, index=["drugA", "drugB"]))
    >>> values, known = table.lookup(["drugB", "drugC"])
    >>> values.tolist(), known.tolist(), "drugA" in table
    ([[0.0], [0.0]], [True, False], True)
    """

    names: tuple[str, ...]
    columns: tuple[str, ...]
    values: np.ndarray

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, key: str = "perturbation_features") -> PerturbationFeatures:
        """Check and wrap a DataFrame indexed by perturbation name (numeric, finite, distinct names)."""
        if isinstance(frame, PerturbationFeatures):
            return frame
        if not isinstance(frame, pd.DataFrame):
            raise TypeError(
                f"`{key}` must be a pandas DataFrame indexed by perturbation name, got {type(frame).__name__}."
            )
        if frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"`{key}` is empty ({frame.shape[0]} rows x {frame.shape[1]} columns).")
        names = [str(n) for n in frame.index]
        duplicated = sorted({n for n in names if names.count(n) > 1}) if len(set(names)) < len(names) else []
        if duplicated:
            raise ValueError(f"`{key}` has duplicated names {duplicated[:5]}; give one row per perturbation.")
        bad = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
        if bad:
            raise ValueError(f"`{key}` columns {bad[:5]} are not numeric; features must be numbers.")
        values = frame.to_numpy(dtype=np.float32)
        if not np.isfinite(values).all():
            rows = [names[i] for i in np.flatnonzero(~np.isfinite(values).all(1))[:5]]
            raise ValueError(f"`{key}` has NaN or infinite values for {rows}; fill or drop them.")
        return cls(tuple(names), tuple(map(str, frame.columns)), values)

    @property
    def n_features(self) -> int:
        """Number of feature columns."""
        return len(self.columns)

    def __contains__(self, name: str) -> bool:
        return name in self._lookup

    @cached_property
    def _lookup(self) -> dict[str, int]:
        return {n: i for i, n in enumerate(self.names)}

    def lookup(self, names: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Feature rows of ``names`` (zeros where absent) and whether each name has a row."""
        lookup = self._lookup
        rows = np.array([lookup.get(str(n), -1) for n in names], dtype=np.int64)
        out = np.zeros((len(rows), self.n_features), dtype=np.float32)
        known = rows >= 0
        out[known] = self.values[rows[known]]
        return out, known

    def to_frame(self) -> pd.DataFrame:
        """The table as a DataFrame."""
        return pd.DataFrame(self.values, index=list(self.names), columns=list(self.columns))
