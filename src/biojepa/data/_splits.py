"""Split protocols of perturbation screens: what is held out, decided by a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from ..perturbation import parse_perturbation

#: Protocols of :func:`split_perturbations`.
PROTOCOLS = ("combo_seen0", "combo_seen1", "combo_seen2", "unseen_single", "unseen_context", "unseen_dose")


@dataclass(frozen=True)
class PerturbationSplit:
    """Cells to train on and to test on, from one protocol and seed.

    Parameters
    ----------
    protocol, seed
        How the split was drawn.
    train, test
        Boolean cell masks. Test cells are never training cells.
    reference
        Boolean mask of cells given at prediction as the reference (``adata=``): the control cells of a held-out
        context for ``"unseen_context"``, else the training cells.
    held_out
        What is held out: canonical perturbation labels, a context value, or ``"label@dose"`` pairs.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.data import PerturbationSplit
    >>> split = PerturbationSplit("combo_seen2", 0, np.array([True, False]), np.array([False, True]),
    ...                           np.array([True, False]), ("A+B",))
    >>> int(split.test.sum()), split.held_out
    (1, ('A+B',))
    """

    protocol: str
    seed: int
    train: np.ndarray
    test: np.ndarray
    reference: np.ndarray
    held_out: tuple[str, ...]


def split_perturbations(
    adata: AnnData,
    perturbation_key: str,
    control_value: str,
    protocol: str,
    seed: int = 0,
    fraction: float = 0.25,
    delimiter: str = "+",
    context_key: str | None = None,
    dose_key: str | None = None,
) -> PerturbationSplit:
    """Split a perturbation screen by a protocol, deterministically from ``seed``.

    Protocols:

    - ``"combo_seen2"``: a ``fraction`` of the combinations whose members are all observed alone is held out; the
      singles stay in training.
    - ``"combo_seen1"`` / ``"combo_seen0"``: a ``fraction`` of the genes observed alone is held out (their singles
      and every combination holding them leave training); the test cells are the combinations with exactly 1 / 0
      members still observed alone in training.
    - ``"unseen_single"``: a ``fraction`` of the genes observed alone is held out (their singles are the test
      cells; combinations holding them leave training).
    - ``"unseen_context"``: one value of ``context_key`` (e.g. a cell line) leaves training entirely; its
      perturbed cells are the test cells and its control cells the prediction reference.
    - ``"unseen_dose"``: for every perturbation with at least 3 doses, one dose that is neither its lowest nor
      its highest is held out (an interpolation).

    Parameters
    ----------
    adata
        The screen (not modified).
    perturbation_key, control_value, delimiter
        Column of perturbation labels, control label and combination delimiter.
    protocol
        One of ``PROTOCOLS``.
    seed
        Seed of every random choice.
    fraction
        Fraction of combinations or genes held out (at least one).
    context_key
        Column of contexts, for ``"unseen_context"``.
    dose_key
        Column of doses, for ``"unseen_dose"``.

    Returns
    -------
    The split; control cells are always training cells (except a held-out context's).

    Raises
    ------
    ValueError
        For an unknown protocol, a missing ``context_key``/``dose_key``, or a split with no test cell.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.data import split_perturbations
    >>> labels = ["ctrl", "A", "B", "C", "D", "A+B", "C+D", "A+C", "B+D"] * 2
    >>> adata = ad.AnnData(np.zeros((len(labels), 1)), obs=pd.DataFrame({"p": labels}, index=map(str, range(18))))
    >>> split = split_perturbations(adata, "p", "ctrl", "combo_seen2", seed=0)
    >>> split.held_out, int(split.test.sum()), bool((split.train & split.test).any())
    (('C+D',), 2, False)
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"Unknown split protocol {protocol!r}; choose one of {PROTOCOLS}.")
    if perturbation_key not in adata.obs:
        raise KeyError(f"Perturbation column {perturbation_key!r} not found in adata.obs.")
    rng = np.random.default_rng(seed)
    raw = adata.obs[perturbation_key].astype(str).to_numpy()
    parsed = {label: parse_perturbation(label, control_value, delimiter).genes for label in pd.unique(raw)}
    genes = [parsed[label] for label in raw]
    canon = np.array([delimiter.join(g) if g else control_value for g in genes], dtype=object)
    n_genes = np.array([len(g) for g in genes])
    singles = sorted({g[0] for g in genes if len(g) == 1})
    reference = None

    def pick(items):
        items = sorted(items)
        n = max(1, round(fraction * len(items))) if items else 0
        return set(np.asarray(items, dtype=object)[rng.choice(len(items), n, replace=False)]) if n else set()

    if protocol == "combo_seen2":
        held = pick({c for c, g in zip(canon, genes, strict=True) if len(g) > 1 and set(g) <= set(singles)})
        test = np.isin(canon, list(held))
        train = ~test
    elif protocol in ("combo_seen1", "combo_seen0", "unseen_single"):
        out = pick(singles)
        touches = np.array([bool(set(g) & out) for g in genes])
        seen = np.array([sum(x not in out for x in g) for g in genes])
        if protocol == "unseen_single":
            test = touches & (n_genes == 1)
        else:
            test = touches & (n_genes > 1) & (seen == (1 if protocol == "combo_seen1" else 0))
        train = ~touches
        held = set(canon[test])
    elif protocol == "unseen_context":
        if context_key is None or context_key not in adata.obs:
            raise ValueError(
                f"Protocol 'unseen_context' needs `context_key`, a column of adata.obs; got {context_key!r}."
            )
        context = adata.obs[context_key].astype(str).to_numpy()
        values = sorted(set(context[n_genes == 0]) & set(context[n_genes > 0]))  # contexts with controls and screens
        held = {values[rng.integers(len(values))]} if values else set()
        inside = np.isin(context, list(held))
        test, train = inside & (n_genes > 0), ~inside
        reference = inside & (n_genes == 0)
    else:  # unseen_dose
        if dose_key is None or dose_key not in adata.obs:
            raise ValueError(f"Protocol 'unseen_dose' needs `dose_key`, a column of adata.obs; got {dose_key!r}.")
        dose = adata.obs[dose_key].astype(str).to_numpy()
        level = np.array([np.mean([float(v) for v in d.split(delimiter)]) for d in dose])
        held, test = set(), np.zeros(len(raw), bool)
        for label in sorted(set(canon[n_genes > 0])):
            rows = canon == label
            levels = np.unique(level[rows])
            if len(levels) >= 3:
                chosen = levels[1 + rng.integers(len(levels) - 2)]
                test |= rows & (level == chosen)
                held.add(f"{label}@{chosen:g}")
        train = ~test
    if not test.any():
        raise ValueError(f"Split {protocol!r} (seed {seed}) has no test cells in adata.obs[{perturbation_key!r}].")
    return PerturbationSplit(
        protocol, seed, train, test, train if reference is None else reference, tuple(sorted(held))
    )
