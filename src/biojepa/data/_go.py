"""Gene features from Gene Ontology annotations: a reduced gene × GO-term matrix, one row per gene."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from sklearn.decomposition import TruncatedSVD
from sklearn.feature_extraction.text import TfidfTransformer

from ..datasets._load import data_path
from ..datasets._registry import GO_TABLE

__all__ = ["GO_ONTOLOGIES", "go_features"]

logger = logging.getLogger(__name__)

#: Values accepted by the ``ontology`` argument of :func:`go_features`.
GO_ONTOLOGIES = ("BP", "MF", "CC", "all")
_COLUMNS = ["symbol", "go_id", "evidence", "ontology"]


def _read_table(path: str | os.PathLike[str] | None) -> pd.DataFrame:
    """The GO table: the registered, checksum-verified file (``path`` ``None`` or a data directory) or a given file."""
    if path is None or Path(path).is_dir():
        path = data_path(GO_TABLE, data_dir=path)  # verifies the SHA-256; a clear error if it is missing
    elif not Path(path).is_file():
        raise FileNotFoundError(
            f"GO table {str(path)!r} not found. Pass path=None to use {GO_TABLE!r} of the data directory "
            "(BIOJEPA_DATA_DIR or ../shared/data), a directory holding it, or a file with the same columns."
        )
    table = pd.read_csv(path, sep="\t", dtype=str)
    missing = [c for c in _COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"GO table {str(path)!r} lacks the columns {missing}; it needs {_COLUMNS}.")
    return table[_COLUMNS]


def _names(values: Sequence[str], what: str) -> list[str]:
    if isinstance(values, str):
        raise TypeError(f"`{what}` must be a sequence of gene symbols, not the string {values!r}; wrap it in a list.")
    return list(dict.fromkeys(str(v) for v in values))


def _preview(names: Sequence[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def go_features(
    genes: Sequence[str],
    ontology: str = "BP",
    min_genes: int = 2,
    max_fraction: float = 0.5,
    n_components: int = 32,
    background: Sequence[str] | str | None = None,
    path: str | os.PathLike[str] | None = None,
) -> pd.DataFrame:
    """Dense gene features from direct Gene Ontology annotations (latent semantic analysis of gene × term).

    Builds the binary matrix of the genes (``genes`` and ``background``) against the GO terms of ``ontology``
    annotated to at least ``min_genes`` and at most ``max_fraction`` of them (``ND``, "no data", annotations are
    ignored), weights it by tf-idf with L2-normalized rows (:class:`~sklearn.feature_extraction.text.TfidfTransformer`)
    and reduces it to ``n_components`` columns with :class:`~sklearn.decomposition.TruncatedSVD` (seed 0). Genes
    sharing annotations get nearby rows. A gene without any kept annotation gets a row of zeros; such genes are
    reported in a warning (count and names), never dropped.

    The table is ``gene_priors/go_human_orghseg_3.16.tsv.gz`` of the data directory (org.Hs.eg.db and GO.db
    3.16: human symbols, direct annotations, not propagated to ancestor terms), found like the data sets of
    :mod:`biojepa.datasets` and verified against its SHA-256 on each call.

    Parameters
    ----------
    genes
        Gene symbols to return rows for (duplicates are dropped, order is kept).
    ontology
        ``"BP"`` (biological process), ``"MF"`` (molecular function), ``"CC"`` (cellular component) or ``"all"``.
    min_genes
        Keep terms annotated to at least this many of the genes (with ``background``).
    max_fraction
        Drop terms annotated to more than this fraction of the genes (with ``background``).
    n_components
        Number of columns; if fewer can be fitted (few genes or terms), the remaining columns are zero.
    background
        More gene symbols used only to choose the terms and fit the reduction (no rows are returned for them), or
        ``"all"`` for every gene annotated in ``ontology``; ``None``: ``genes`` alone. A broad background makes a
        gene's features independent of which other genes are asked for.
    path
        ``None`` to use the data directory (``BIOJEPA_DATA_DIR`` or ``../shared/data``), a directory holding
        ``gene_priors/go_human_orghseg_3.16.tsv.gz`` (both verified), or a tab-separated file with the columns
        ``symbol``, ``go_id``, ``evidence`` and ``ontology`` (read as is, not verified).

    Returns
    -------
    DataFrame indexed by gene (``genes`` order) with float columns ``GO_<ontology>_0`` ... ``GO_<ontology>_<k-1>``,
    ready for ``bj.BioJEPA(adata, perturbation_features=...)``.

    Raises
    ------
    ValueError
        If ``genes`` is empty, ``ontology`` is unknown, a numeric argument is out of range, or the table lacks a
        column.
    FileNotFoundError
        If the table is not found; the message lists where it was looked for and how to set ``BIOJEPA_DATA_DIR``.

    Examples
    --------
    >>> import biojepa as bj
    >>> genes = ["MAP2K3", "MAP2K6", "KLF1", "IER5L"]
    >>> features = bj.data.go_features(genes, n_components=8, background="all")  # IER5L: no BP annotation
    >>> features.shape, list(features.columns[:2])
    ((4, 8), ['GO_BP_0', 'GO_BP_1'])
    >>> float(features.loc["IER5L"].abs().sum())
    0.0
    """
    genes = _names(genes, "genes")
    if not genes:
        raise ValueError("`genes` is empty: pass at least one gene symbol.")
    if ontology not in GO_ONTOLOGIES:
        raise ValueError(f"Unknown ontology {ontology!r}; allowed values: {', '.join(map(repr, GO_ONTOLOGIES))}.")
    if int(min_genes) < 1:
        raise ValueError(f"`min_genes` must be a positive integer, got {min_genes!r}.")
    if not 0 < max_fraction <= 1:
        raise ValueError(f"`max_fraction` must be in (0, 1], got {max_fraction!r}.")
    if int(n_components) < 1:
        raise ValueError(f"`n_components` must be a positive integer, got {n_components!r}.")
    n_components = int(n_components)

    table = _read_table(path)
    table = table[table["evidence"] != "ND"]
    if ontology != "all":
        table = table[table["ontology"] == ontology]
    if isinstance(background, str):
        if background != "all":
            raise ValueError(f"`background` must be a sequence of gene symbols, 'all' or None, got {background!r}.")
        background = table["symbol"].unique().tolist()
    universe = list(dict.fromkeys([*genes, *_names(background or [], "background")]))

    # binary gene × term matrix of the universe, then the term filter
    table = table[table["symbol"].isin(set(universe))]
    rows = pd.Index(universe).get_indexer(table["symbol"])
    terms = pd.Categorical(table["go_id"])
    X = sparse.csr_matrix(
        (np.ones(len(rows)), (rows, terms.codes)), shape=(len(universe), len(terms.categories))
    )  # (n_universe, n_terms)
    X.data[:] = 1.0  # a (gene, term) pair listed twice counts once
    counts = np.asarray(X.sum(0)).ravel()
    keep = (counts >= int(min_genes)) & (counts <= max_fraction * len(universe))
    X = X[:, keep]

    out = np.zeros((len(genes), n_components))
    k = min(n_components, X.shape[1], len(universe))
    if k >= 1:
        weighted = TfidfTransformer(norm="l2").fit_transform(X)  # (n_universe, n_kept)
        if weighted.shape[1] == 1:  # TruncatedSVD needs two columns; a zero column changes nothing
            weighted = sparse.hstack([weighted, sparse.csr_matrix((len(universe), 1))]).tocsr()
        with np.errstate(invalid="ignore", divide="ignore"):  # sklearn's variance ratio of constant columns
            reduced = TruncatedSVD(n_components=k, random_state=0).fit_transform(weighted)  # (n_universe, k)
        out[:, :k] = reduced[: len(genes)]
        logger.info(
            "GO %s features: %d genes (%d asked for), %d of %d terms kept, %d components keeping %.0f %% of the "
            "weighted matrix's sum of squares",
            ontology, len(universe), len(genes), X.shape[1], keep.size, k,
            100 * (reduced**2).sum() / max(weighted.power(2).sum(), 1e-12),
        )  # fmt: skip
    if k < n_components:
        logger.warning(
            "GO %s features: only %d of %d components can be fitted from %d genes and %d kept terms; the other "
            "columns are zero. Pass a broader `background` (e.g. 'all') or lower `min_genes`.",
            ontology, max(k, 0), n_components, len(universe), X.shape[1],
        )  # fmt: skip

    annotated = set(table["symbol"])
    kept = np.asarray(X[: len(genes)].sum(1)).ravel() > 0
    unannotated = [g for g in genes if g not in annotated]
    filtered = [g for g, ok in zip(genes, kept, strict=True) if not ok and g in annotated]
    if unannotated or filtered:
        logger.warning(
            "GO %s features: %d of %d genes get a row of zeros: %d without any %s annotation in the table (%s), "
            "%d annotated only to terms outside min_genes=%d / max_fraction=%g (%s).",
            ontology, len(unannotated) + len(filtered), len(genes), len(unannotated), ontology,
            _preview(unannotated), len(filtered), int(min_genes), max_fraction, _preview(filtered),
        )  # fmt: skip
    columns = [f"GO_{ontology}_{i}" for i in range(n_components)]
    return pd.DataFrame(out, index=pd.Index(genes, name="gene"), columns=columns)
