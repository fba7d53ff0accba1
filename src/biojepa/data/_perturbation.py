"""Perturbation registration: checks at setup and the per-condition tables the module looks up."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._perturbations import CONTROL_ALIASES, _check_delimiter, parse_perturbation

logger = logging.getLogger(__name__)


def ordered_genes(label: str, control_value: str, delimiter: str) -> list[str]:
    """Genes of a label in the order written (control tokens dropped); validates like ``parse_perturbation``.

    Examples
    --------
    >>> from biojepa.data import ordered_genes
    >>> ordered_genes("B+A", "ctrl", "+"), ordered_genes("A+ctrl", "ctrl", "+"), ordered_genes("ctrl", "ctrl", "+")
    (['B', 'A'], ['A'], [])
    """
    parse_perturbation(label, control_value, delimiter)  # raises on malformed labels
    if label == control_value:
        return []
    tokens = [t.strip() for t in label.split(delimiter)]
    return [t for t in tokens if t != control_value and t not in CONTROL_ALIASES]


def parse_dose(value, n_genes: int, delimiter: str, key: str = "dose") -> list[float]:
    """Per-gene doses of one cell: a number (every gene gets it) or one number per gene joined by ``delimiter``.

    Examples
    --------
    >>> from biojepa.data._perturbation import parse_dose
    >>> parse_dose("1+2", 2, "+"), parse_dose(0.5, 2, "+")
    ([1.0, 2.0], [0.5, 0.5])
    """
    parts = str(value).split(delimiter) if isinstance(value, str) else [value]
    try:
        doses = [float(p) for p in parts]
    except (TypeError, ValueError):
        raise ValueError(
            f"Dose {value!r} in adata.obs[{key!r}] is not a number or numbers joined by {delimiter!r}."
        ) from None
    if any(not np.isfinite(d) or d < 0 for d in doses):
        raise ValueError(f"Dose {value!r} in adata.obs[{key!r}] must be finite and >= 0.")
    if len(doses) == 1:
        return doses * max(n_genes, 1)
    if len(doses) != n_genes:
        raise ValueError(
            f"Dose {value!r} in adata.obs[{key!r}] gives {len(doses)} values for a perturbation of {n_genes} genes; "
            f"give one dose, or one per gene joined by {delimiter!r}."
        )
    return doses


def check_perturbation_setup(
    adata: AnnData,
    perturbation_key: str,
    control_value,
    delimiter: str,
    dose_key: str | None,
    perturbation_type_key: str | None,
) -> None:
    """Validate perturbation labels, the control value and the doses at ``setup_anndata``; raise naming the value.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.data import check_perturbation_setup
    >>> obs = pd.DataFrame({"pert": ["ctrl", "A", "A+B"], "dose": ["0", "1", "1+2"]}, index=["a", "b", "c"])
    >>> adata = ad.AnnData(np.ones((3, 1)), obs=obs)
    >>> check_perturbation_setup(adata, "pert", "ctrl", "+", "dose", None)  # valid: returns None
    >>> check_perturbation_setup(adata, "pert", "control", "+", None, None)
    Traceback (most recent call last):
    ...
    ValueError: Control value 'control' not found in adata.obs['pert'] (values include ['ctrl', 'A', 'A+B']); ...
    """
    _check_delimiter(delimiter)
    if control_value is None:
        raise ValueError(
            f"`control_value` is required with `perturbation_key`={perturbation_key!r}: pass the label of "
            "unperturbed cells (e.g. 'control' or GEARS' 'ctrl')."
        )
    labels = adata.obs[perturbation_key]
    if labels.isna().any():
        raise ValueError(
            f"adata.obs[{perturbation_key!r}] has missing labels; fill them (e.g. with the control value)."
        )
    uniques = pd.unique(labels.astype(str))
    control_value = str(control_value)
    if control_value not in uniques:
        raise ValueError(
            f"Control value {control_value!r} not found in adata.obs[{perturbation_key!r}] (values include "
            f"{list(uniques[:5])}); pass the label of unperturbed cells as `control_value`."
        )
    for label in uniques:
        ordered_genes(label, control_value, delimiter)
    if perturbation_type_key is not None and adata.obs[perturbation_type_key].isna().any():
        raise ValueError(f"adata.obs[{perturbation_type_key!r}] has missing values; fill them.")
    if dose_key is not None:
        pairs = pd.DataFrame({"p": labels.astype(str), "d": adata.obs[dose_key]}).drop_duplicates()
        if pairs["d"].isna().any():
            raise ValueError(f"adata.obs[{dose_key!r}] has missing doses; fill them.")
        for label, dose in pairs.itertuples(index=False):
            parse_dose(dose, len(ordered_genes(label, control_value, delimiter)), delimiter, dose_key)


@dataclass
class PerturbationTables:
    """Lookup tables from registered category codes to what the module consumes.

    Attributes
    ----------
    vocabulary
        Perturbation vocabulary: the measured genes (``var_names`` order) then perturbed genes that are not
        measured (they get learned embeddings).
    n_measured
        Number of measured genes (the first entries of ``vocabulary``).
    condition_genes
        ``(n_conditions, K)`` vocabulary indices of each registered label, ``-1`` padded (control: all ``-1``).
    condition_dose
        ``(n_conditions, n_doses, K)`` per-gene doses of each (label, dose category) pair, or ``None``.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import PerturbationTables
    >>> tables = PerturbationTables(["A", "B", "X"], 2, np.array([[-1, -1], [0, 2]]), None)
    >>> tables.n_measured, tables.vocabulary[tables.n_measured :], tables.index(["X", "A"])
    (2, ['X'], [2, 0])
    """

    vocabulary: list[str]
    n_measured: int
    condition_genes: np.ndarray
    condition_dose: np.ndarray | None

    def index(self, genes: Sequence[str]) -> list[int]:
        """Vocabulary indices of ``genes``; raise a ValueError naming genes without a token."""
        lookup = {g: i for i, g in enumerate(self.vocabulary)}
        missing = [g for g in genes if g not in lookup]
        if missing:
            raise ValueError(
                f"Genes {missing} are neither measured (in var_names) nor perturbed in the training data, so the "
                "model has no token for them; predict only measured or training-perturbed genes."
            )
        return [lookup[g] for g in genes]


def perturbation_tables(
    labels: Sequence[str],
    control_value: str,
    delimiter: str,
    var_names: Sequence[str],
    dose_labels: Sequence | None = None,
) -> PerturbationTables:
    """Build :class:`PerturbationTables` from the registered label and dose categories.

    Examples
    --------
    >>> from biojepa.data._perturbation import perturbation_tables
    >>> t = perturbation_tables(["ctrl", "A+X"], "ctrl", "+", ["A", "B"])
    >>> t.vocabulary, t.condition_genes.tolist()
    (['A', 'B', 'X'], [[-1, -1], [0, 2]])
    """
    ordered = [ordered_genes(str(label), control_value, delimiter) for label in labels]
    measured = list(map(str, var_names))
    known = set(measured)
    extra = sorted({g for genes in ordered for g in genes if g not in known})
    if extra:
        logger.info("Perturbed genes not measured (learned embeddings): %s", extra)
    vocab = measured + extra
    lookup = {g: i for i, g in enumerate(vocab)}
    width = max(1, max((len(g) for g in ordered), default=1))
    genes = np.full((len(ordered), width), -1, dtype=np.int64)
    for i, gs in enumerate(ordered):
        genes[i, : len(gs)] = [lookup[g] for g in gs]
    dose = None
    if dose_labels is not None:
        dose = np.ones((len(ordered), len(dose_labels), width), dtype=np.float32)
        for i, gs in enumerate(ordered):
            for j, value in enumerate(dose_labels):
                try:
                    dose[i, j, : len(gs)] = parse_dose(value, len(gs), delimiter)[: len(gs)]
                except ValueError:  # a (label, dose) pair that never occurs together
                    dose[i, j, : len(gs)] = np.mean(parse_dose(str(value).split(delimiter)[0], 1, delimiter))
    return PerturbationTables(vocab, len(measured), genes, dose)
