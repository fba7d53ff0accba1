"""The perturbation setup of a model: built once from the registry, frozen, and what every other part reads."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from ._value import Perturbation, _check_delimiter, parse_perturbation

logger = logging.getLogger(__name__)

#: Fewest training combinations (all members also observed alone) before some are held out to validate the
#: interaction's strength; with fewer, the interaction is not validated and predictions stay additive.
MIN_VALIDATION_COMBINATIONS = 5
#: Fewest singles (of genes in no other label) for some to be held out to choose how far to trust new tokens.
MIN_VALIDATION_SINGLES = 8

#: Fraction of such combinations held out from the perturbation loss to choose the interaction's strength.
VALIDATION_FRACTION = 0.2


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
    >>> from biojepa.perturbation import check_perturbation_setup
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
        parse_perturbation(label, control_value, delimiter)
    if perturbation_type_key is not None and adata.obs[perturbation_type_key].isna().any():
        raise ValueError(f"adata.obs[{perturbation_type_key!r}] has missing values; fill them.")
    if dose_key is not None:
        pairs = pd.DataFrame({"p": labels.astype(str), "d": adata.obs[dose_key]}).drop_duplicates()
        if pairs["d"].isna().any():
            raise ValueError(f"adata.obs[{dose_key!r}] has missing doses; fill them.")
        for label, dose in pairs.itertuples(index=False):
            parse_perturbation(label, control_value, delimiter, dose=dose, dose_key=f"adata.obs[{dose_key!r}]")


@dataclass(frozen=True)
class PerturbationSetup:
    """How a model reads perturbations: keys, registered categories and the perturbation vocabulary.

    Built once from the registry with :meth:`from_registry`; the model's module and every prediction read it.

    Parameters
    ----------
    perturbation_key, control_value, delimiter
        Column of perturbation labels, the control label and the combination delimiter.
    dose_key, type_key
        Columns of doses and perturbation types, or ``None``.
    covariate_keys
        Keys that define covariate groups: ``batch_key`` then ``categorical_covariate_keys``.
    labels, doses, types
        Registered categories (category code order) of the perturbation, dose and type columns.
    vocabulary, n_measured
        Perturbation vocabulary, the measured genes (``var_names`` order) first, then perturbed genes that are not
        measured (learned embeddings); ``n_measured`` counts the former.
    holdout
        Canonical labels held out from the perturbation loss: combinations that choose the interaction's strength,
        and singles of genes in no other label that choose the ``novelty_scale`` (how far to trust untrained tokens).

    Examples
    --------
    >>> from biojepa.perturbation import PerturbationSetup
    >>> setup = PerturbationSetup("pert", "ctrl", "+", labels=("ctrl", "B+X"), vocabulary=("A", "B", "X"), n_measured=2)
    >>> setup.index(["X", "A"]), setup.condition_genes().tolist()
    ([2, 0], [[-1, -1], [1, 2]])
    """

    perturbation_key: str
    control_value: str
    delimiter: str = "+"
    dose_key: str | None = None
    type_key: str | None = None
    covariate_keys: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    doses: tuple[str, ...] | None = None
    types: tuple[str, ...] = ()
    vocabulary: tuple[str, ...] = ()
    n_measured: int = 0
    holdout: tuple[str, ...] = ()

    @classmethod
    def from_registry(cls, registry: dict, var_names: Sequence[str], seed: int = 0) -> PerturbationSetup:
        """Build the setup from an :class:`~scvi.data.AnnDataManager` registry (``manager.registry``).

        Raises
        ------
        ValueError
            If the model was set up without a ``perturbation_key``.
        """
        args = registry["setup_args"]
        if args.get("perturbation_key") is None:
            raise ValueError(
                "This model was set up without perturbations; call `BioJEPA.setup_anndata(adata, "
                "perturbation_key=..., control_value=...)` before creating the model."
            )
        fields = registry["field_registries"]

        def categories(key):
            return tuple(map(str, fields[key]["state_registry"]["categorical_mapping"])) if key in fields else None

        control, delim = str(args["control_value"]), args["combination_delimiter"]
        labels = categories("perturbation")
        measured = tuple(map(str, var_names))
        known = set(measured)
        genes = {g for label in labels for g in parse_perturbation(label, control, delim).genes}
        extra = tuple(sorted(genes - known))
        if extra:
            logger.info("Perturbed genes not measured (learned embeddings): %s", list(extra))
        covariates = ([args["batch_key"]] if args.get("batch_key") else []) + list(
            args.get("categorical_covariate_keys") or []
        )
        return cls(
            perturbation_key=args["perturbation_key"],
            control_value=control,
            delimiter=delim,
            dose_key=args.get("dose_key"),
            type_key=args.get("perturbation_type_key"),
            covariate_keys=tuple(covariates),
            labels=labels,
            doses=categories("dose"),
            types=categories("perturbation_type") or (),
            vocabulary=measured + extra,
            n_measured=len(measured),
            holdout=validation_labels(labels, control, delim, seed) + validation_singles(labels, control, delim, seed),
        )

    def parse(self, label: str, dose=None, perturbation_type: str | None = None) -> Perturbation:
        """Parse a label (and dose) with this setup's control value and delimiter."""
        return parse_perturbation(label, self.control_value, self.delimiter, dose, perturbation_type)

    def index(self, genes: Sequence[str]) -> list[int]:
        """Vocabulary indices of ``genes``; a ValueError names genes without a token."""
        lookup = {g: i for i, g in enumerate(self.vocabulary)}
        missing = [g for g in genes if g not in lookup]
        if missing:
            raise ValueError(
                f"Genes {missing} are neither measured (in var_names) nor perturbed in the training data, so the "
                "model has no token and no prior for them; predict only measured or training-perturbed genes."
            )
        return [lookup[g] for g in genes]

    def width(self) -> int:
        """Most genes in one registered perturbation (at least 1)."""
        return max(1, max((len(self.parse(label).genes) for label in self.labels), default=1))

    def condition_genes(self) -> np.ndarray:
        """``(n_labels, K)`` vocabulary indices of each registered label's sorted genes, ``-1`` padded."""
        out = np.full((len(self.labels), self.width()), -1, dtype=np.int64)
        for i, label in enumerate(self.labels):
            genes = self.parse(label).genes
            out[i, : len(genes)] = self.index(genes)
        return out

    def condition_dose(self) -> np.ndarray | None:
        """``(n_labels, n_doses, K)`` doses of each (label, dose category) pair, aligned with :meth:`condition_genes`.

        A pair that never occurs together (its dose string does not fit the label) gets the mean of the dose
        string's numbers for every gene.
        """
        if self.doses is None:
            return None
        out = np.ones((len(self.labels), len(self.doses), self.width()), dtype=np.float32)
        for i, label in enumerate(self.labels):
            n = len(self.parse(label).genes)
            for j, value in enumerate(self.doses):
                try:
                    doses = self.parse(label, dose=value).doses
                except ValueError:
                    doses = (float(np.mean([float(v) for v in str(value).split(self.delimiter)])),) * n
                out[i, j, :n] = doses[:n]
        return out

    def trained_vocabulary(self) -> np.ndarray:
        """``(n_vocabulary,)`` whether each entry is perturbed in a label that trains (not held out)."""
        held = set(self.holdout)
        out = np.zeros(len(self.vocabulary), dtype=bool)
        for label in self.labels:
            genes = self.parse(label).genes
            if genes and self.delimiter.join(genes) not in held:
                out[self.index(genes)] = True
        return out

    def trained_singles(self) -> np.ndarray:
        """Vocabulary indices of the genes whose single label trains (all trained entries if there is none)."""
        held = set(self.holdout)
        singles = {
            self.parse(label).genes[0]
            for label in self.labels
            if len(self.parse(label).genes) == 1 and self.parse(label).genes[0] not in held
        }
        if not singles:
            return np.flatnonzero(self.trained_vocabulary())
        return np.array(sorted(self.index(sorted(singles))), dtype=np.int64)

    def holdout_mask(self) -> np.ndarray:
        """``(n_labels,)`` whether each registered label is held out to validate the interaction."""
        held = set(self.holdout)
        return np.array([self.parse(label).label(self.delimiter) in held for label in self.labels], dtype=bool)


def validation_labels(labels: Sequence[str], control_value: str, delimiter: str, seed: int = 0) -> tuple[str, ...]:
    """Combination labels held out from the perturbation loss to choose the interaction's strength.

    Among labels of two or more genes whose every member is also a registered single, hold out
    ``VALIDATION_FRACTION`` (at least 2) at random from ``seed`` when there are at least
    ``MIN_VALIDATION_COMBINATIONS``; otherwise none.

    Examples
    --------
    >>> from biojepa.perturbation import validation_labels
    >>> labels = ["ctrl", *"ABCDEFG", "A+B", "B+C", "C+D", "D+E", "E+F", "F+G", "A+Z"]
    >>> len(validation_labels(labels, "ctrl", "+")), validation_labels(labels[:10], "ctrl", "+")
    (2, ())
    """
    parsed = [parse_perturbation(str(label), control_value, delimiter).genes for label in labels]
    singles = {genes[0] for genes in parsed if len(genes) == 1}
    combos = sorted({delimiter.join(g) for g in parsed if len(g) > 1 and set(g) <= singles})  # canonical labels
    if len(combos) < MIN_VALIDATION_COMBINATIONS:
        return ()
    n = max(2, round(VALIDATION_FRACTION * len(combos)))
    chosen = np.random.default_rng(seed).choice(len(combos), n, replace=False)
    return tuple(sorted(combos[i] for i in chosen))


def validation_singles(labels: Sequence[str], control_value: str, delimiter: str, seed: int = 0) -> tuple[str, ...]:
    """Single-gene labels held out from the perturbation loss to choose how far to trust tokens never trained.

    Among singles whose gene appears in no other label (so that holding them out leaves their token untrained, as
    for a gene never perturbed), hold out ``VALIDATION_FRACTION`` (at least 2) at random from ``seed`` when there
    are at least ``MIN_VALIDATION_SINGLES``; otherwise none. Their observed shifts choose the model's
    ``novelty_scale`` after training.

    Examples
    --------
    >>> from biojepa.perturbation import validation_singles
    >>> labels = ["ctrl", *"ABCDEFGHIJ", "A+B"]
    >>> held = validation_singles(labels, "ctrl", "+")
    >>> len(held), set(held) & {"A", "B"}, validation_singles(labels[:8], "ctrl", "+")
    (2, set(), ())
    """
    parsed = [parse_perturbation(str(label), control_value, delimiter).genes for label in labels]
    counts: dict[str, int] = {}
    for genes in parsed:
        for g in set(genes):
            counts[g] = counts.get(g, 0) + 1
    singles = sorted({genes[0] for genes in parsed if len(genes) == 1 and counts[genes[0]] == 1})
    if len(singles) < MIN_VALIDATION_SINGLES:
        return ()
    n = max(2, round(VALIDATION_FRACTION * len(singles)))
    chosen = np.random.default_rng(seed + 1).choice(len(singles), n, replace=False)
    return tuple(sorted(singles[i] for i in chosen))


def validation_pairs(observed, seed: int = 0) -> tuple[tuple, ...]:
    """(single, group) pairs held out from the perturbation loss to choose how far an effect carries to a new group.

    ``observed`` holds one ``(label, group, type)`` triple per single observed alone in a covariate group (with
    control cells there). A single observed, with one type, in two or more groups is a candidate in each of them:
    predicting it in one group from the others is what a user asks of a gene perturbed in another cell line. With
    at least ``MIN_VALIDATION_SINGLES`` candidate pairs, ``VALIDATION_FRACTION`` of them (at least 2) are held out
    at random from ``seed``, at most one per single, so each stays trained in another group; otherwise none.
    Their observed changes choose, after training, how much of a single's learned and observed own effect
    elsewhere to trust in a group that did not observe it.

    Examples
    --------
    >>> from biojepa.perturbation import validation_pairs
    >>> observed = [(label, line, 0) for label in range(5) for line in ("x", "y")]
    >>> held = validation_pairs(observed)
    >>> len(held), len({label for label, _ in held}), validation_pairs(observed[:6])
    (2, 2, ())
    """
    groups: dict[tuple, list] = {}
    for label, group, kind in observed:
        groups.setdefault((label, kind), []).append(group)
    shared = {key: sorted(set(g), key=str) for key, g in groups.items() if len(set(g)) >= 2}
    n_candidates = sum(len(g) for g in shared.values())
    if n_candidates < MIN_VALIDATION_SINGLES:
        return ()
    keys = sorted(shared, key=str)
    n = min(len(keys), max(2, round(VALIDATION_FRACTION * n_candidates)))
    rng = np.random.default_rng(seed + 2)
    held = [(keys[i][0], shared[keys[i]][rng.integers(len(shared[keys[i]]))]) for i in rng.choice(len(keys), n, False)]
    return tuple(sorted(held, key=str))
