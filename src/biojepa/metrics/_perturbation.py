r"""Perturbation-prediction quality: array-level metrics and :func:`evaluate` on AnnData.

Notation: for a perturbation :math:`p`, :math:`\hat\mu_p` is the predicted mean expression, :math:`\mu_p` the
observed mean and :math:`\mu_c` the control mean (all on the same scale, e.g. log-normalized), and deltas are
:math:`\hat\Delta_p = \hat\mu_p - \mu_c`, :math:`\Delta_p = \mu_p - \mu_c`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse
from scipy.spatial.distance import cdist

from ..data import get_matrix
from ..perturbation import PERTURBATION_COLUMN, condition_frame, group_codes, parse_perturbation, pseudobulk

_DISTANCES = {"l1": "cityblock", "manhattan": "cityblock", "l2": "euclidean", "euclidean": "euclidean"}


def _vec(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).ravel()


def _index(genes, n_genes: int) -> np.ndarray:
    """Gene indices from indices or a boolean mask (all genes for ``None``)."""
    if genes is None:
        return np.arange(n_genes)
    genes = np.asarray(genes)
    if genes.dtype == bool:
        if genes.size != n_genes:
            raise ValueError(f"Boolean gene mask has length {genes.size}, expected {n_genes}.")
        return np.flatnonzero(genes)
    return genes.astype(int).ravel()


def _delta(x: np.ndarray, ctrl: np.ndarray) -> np.ndarray:
    """``x - ctrl`` with float32 round-off (``|d| <= 1e-6 * max(1, |ctrl|)``) set to exactly 0."""
    d = x - ctrl
    d[np.abs(d) <= 1e-6 * np.maximum(1.0, np.abs(ctrl))] = 0.0
    return d


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / denom) if denom > 0 else float("nan")


def pearson_delta(pred_mean, true_mean, ctrl_mean, genes=None) -> float:
    r"""Pearson correlation of predicted and observed changes versus control.

    :math:`r\big(\hat\mu_p - \mu_c,\ \mu_p - \mu_c\big)` over ``genes``. Higher is better (1 = perfect).
    ``nan`` when either delta is constant over the genes (e.g. the zero delta of a no-change prediction).
    Differences within float32 round-off of the control (:math:`|\Delta| \le 10^{-6}\max(1, |\mu_c|)`) count
    as 0 here and in :func:`direction_error`, so a float32 copy of the control mean has a zero delta.

    Parameters
    ----------
    pred_mean, true_mean, ctrl_mean
        Predicted, observed and control mean expression, one value per gene.
    genes
        Gene indices or a boolean mask; all genes if ``None``.

    Examples
    --------
    >>> from biojepa.metrics import pearson_delta
    >>> round(pearson_delta([1.0, 2.0, 4.0], [1.0, 3.0, 5.0], [0.0, 0.0, 0.0]), 4)  # 6 / sqrt(42 / 9 * 8)
    0.982
    """
    pred, true, ctrl = _vec(pred_mean), _vec(true_mean), _vec(ctrl_mean)
    idx = _index(genes, pred.size)
    if idx.size < 2:
        raise ValueError(f"pearson_delta needs at least 2 genes, got {idx.size}.")
    return _pearson(_delta(pred[idx], ctrl[idx]), _delta(true[idx], ctrl[idx]))


def _mean_var(X) -> tuple[np.ndarray, np.ndarray, int]:
    """Per-gene mean and unbiased variance of a dense or sparse cells × genes matrix."""
    n = X.shape[0]
    if sparse.issparse(X):
        mean = np.asarray(X.mean(0), dtype=np.float64).ravel()
        sq = np.asarray(X.multiply(X).mean(0), dtype=np.float64).ravel()
    else:
        X = np.asarray(X, dtype=np.float64)
        mean, sq = X.mean(0), (X**2).mean(0)
    var = np.maximum(sq - mean**2, 0.0) * (n / max(n - 1, 1))
    return mean, var, n


def top_de_genes(X_pert, X_ctrl, n: int = 20, method: str = "abs_diff") -> np.ndarray:
    r"""Indices of the top-``n`` differentially expressed genes of perturbed versus control cells.

    Genes are ranked, largest first (ties by gene order), by

    - ``method="abs_diff"``: the absolute difference of means :math:`|\bar x_{p,g} - \bar x_{c,g}|`;
    - ``method="t-test"``: the absolute Welch t statistic
      :math:`|\bar x_{p,g} - \bar x_{c,g}| / \sqrt{s_{p,g}^2 / n_p + s_{c,g}^2 / n_c}` (unbiased variances;
      a gene with zero variance in both groups and a non-zero difference ranks first).

    Parameters
    ----------
    X_pert, X_ctrl
        Cells × genes expression (dense or sparse) of the perturbed and the control cells.
    n
        Number of genes (capped at the number of genes).
    method
        ``"abs_diff"`` or ``"t-test"``.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import top_de_genes
    >>> top_de_genes(np.array([[1.0, 5.0, 0.0], [1.0, 7.0, 2.0]]), np.array([[1.0, 1.0, 0.0]]), n=2).tolist()
    [1, 2]
    """
    mean_p, var_p, n_p = _mean_var(X_pert)
    mean_c, var_c, n_c = _mean_var(X_ctrl)
    diff = np.abs(mean_p - mean_c)
    if method == "abs_diff":
        score = diff
    elif method == "t-test":
        se = np.sqrt(var_p / n_p + var_c / n_c)
        score = np.where(se > 0, diff / np.where(se > 0, se, 1.0), np.where(diff > 0, np.inf, 0.0))
    else:
        raise ValueError(f"Unknown DE method {method!r}; use 'abs_diff' or 't-test'.")
    return np.argsort(-score, kind="stable")[: min(n, score.size)]


def mse_top_de(pred_mean, true_mean, de_idx) -> float:
    r"""Mean squared error over the DE genes: :math:`\frac{1}{|D|}\sum_{g \in D}(\hat\mu_{p,g} - \mu_{p,g})^2`.

    Lower is better (0 = perfect).

    Examples
    --------
    >>> from biojepa.metrics import mse_top_de
    >>> mse_top_de([1.0, 2.0, 3.0], [1.0, 4.0, 4.0], [1, 2])  # (4 + 1) / 2
    2.5
    """
    idx = np.asarray(de_idx, dtype=int)
    return float(np.mean((_vec(pred_mean)[idx] - _vec(true_mean)[idx]) ** 2))


def direction_error(pred_mean, true_mean, ctrl_mean, de_idx) -> float:
    r"""Fraction of the DE genes whose predicted change has the wrong sign.

    :math:`\frac{1}{|D|}\sum_{g \in D} [\mathrm{sign}(\hat\Delta_{p,g}) \ne \mathrm{sign}(\Delta_{p,g})]` with
    :math:`\mathrm{sign}(0) = 0`, so a zero predicted change of a changed gene counts as wrong. Lower is better
    (0 = perfect).

    Examples
    --------
    >>> from biojepa.metrics import direction_error
    >>> direction_error([1.0, -1.0, 0.0], [2.0, 1.0, 3.0], [0.0, 0.0, 0.0], [0, 1, 2])  # 2 of 3 wrong
    0.6666666666666666
    """
    idx = np.asarray(de_idx, dtype=int)
    ctrl = _vec(ctrl_mean)[idx]
    return float(np.mean(np.sign(_delta(_vec(pred_mean)[idx], ctrl)) != np.sign(_delta(_vec(true_mean)[idx], ctrl))))


def top_expressed_genes(X_all, n: int = 1000) -> np.ndarray:
    """Indices of the ``n`` genes with the highest mean expression over the rows of ``X_all``, highest first.

    ``X_all`` is a cells × genes matrix (dense or sparse) or already a vector of per-gene means.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import top_expressed_genes
    >>> top_expressed_genes(np.array([[0.0, 3.0, 1.0], [0.0, 1.0, 2.0]]), n=2).tolist()
    [1, 2]
    """
    mean = _mean_var(X_all)[0] if np.ndim(X_all) == 2 else _vec(X_all)
    return np.argsort(-mean, kind="stable")[: min(n, mean.size)]


def l2_top_expressed(pred_mean, true_mean, expressed_idx) -> float:
    r"""Euclidean distance of predicted and observed means over the most expressed genes.

    :math:`\lVert \hat\mu_{p,E} - \mu_{p,E} \rVert_2`, ``E`` usually the 1,000 genes from
    :func:`top_expressed_genes`. Lower is better (0 = perfect).

    Examples
    --------
    >>> from biojepa.metrics import l2_top_expressed
    >>> l2_top_expressed([0.0, 3.0, 9.0], [4.0, 0.0, 0.0], [0, 1])
    5.0
    """
    idx = np.asarray(expressed_idx, dtype=int)
    return float(np.linalg.norm(_vec(pred_mean)[idx] - _vec(true_mean)[idx]))


def discrimination_score(
    pred_means: Mapping[str, np.ndarray],
    true_means: Mapping[str, np.ndarray],
    metric: str = "l1",
    exclude: Mapping[str, Sequence[int]] | None = None,
) -> dict[str, float]:
    r"""Perturbation discrimination score (PDS): normalized rank of the true perturbation. Lower is better.

    Follows cell-eval's ``discrimination_score`` (``cell_eval/metrics/_anndata.py``, Arc Institute): for each
    predicted perturbation :math:`p`, the distances :math:`d(\hat v_p, v_q)` from its prediction to the
    observed vector of every perturbation :math:`q` in ``true_means`` are sorted ascending and

    .. math:: \mathrm{PDS}_p = \frac{\#\{q : d(\hat v_p, v_q) < d(\hat v_p, v_p)\}}{N},

    :math:`N` being the number of perturbations in ``true_means``. 0 is best (the true perturbation is the
    nearest); the worst value is :math:`(N-1)/N`. cell-eval reports :math:`1 - \mathrm{PDS}_p` (higher is
    better there); ties here count in favour of :math:`p`. cell-eval compares deltas versus control; with
    one shared control, means and deltas give the same distances for ``"l1"`` and ``"l2"``.

    Parameters
    ----------
    pred_means
        Predicted vector (mean or delta) per perturbation label; every label must be in ``true_means``.
    true_means
        Observed vector per perturbation label: the candidates.
    metric
        ``"l1"`` (cell-eval's default) or ``"l2"``.
    exclude
        Gene indices to leave out when scoring a label (cell-eval leaves out the perturbed target gene).

    Returns
    -------
    PDS per label of ``pred_means``.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import discrimination_score
    >>> true = {"A": np.array([0.0, 0.0]), "B": np.array([1.0, 0.0]), "C": np.array([5.0, 5.0])}
    >>> discrimination_score({"A": np.array([0.9, 0.0]), "C": np.array([5.0, 4.0])}, true)  # A: B is nearer
    {'A': 0.3333333333333333, 'C': 0.0}
    """
    if metric not in _DISTANCES:
        raise ValueError(f"Unknown metric {metric!r}; use 'l1' or 'l2'.")
    labels = list(true_means)
    truth = np.vstack([_vec(true_means[q]) for q in labels])  # (N, G)
    scores = {}
    for p, vec in pred_means.items():
        if p not in true_means:
            raise KeyError(f"Perturbation {p!r} has no observed vector in `true_means`; known: {labels[:10]}.")
        keep = np.ones(truth.shape[1], dtype=bool)
        if exclude is not None and p in exclude:
            keep[np.asarray(exclude[p], dtype=int)] = False
        dist = cdist(_vec(vec)[keep][None, :], truth[:, keep], metric=_DISTANCES[metric]).ravel()  # (N,)
        scores[p] = float(np.sum(dist < dist[labels.index(p)]) / len(labels))
    return scores


def _mean_pairwise_distance(A: np.ndarray, B: np.ndarray, chunk_elements: int = 4_000_000) -> float:
    """Mean Euclidean distance over all pairs of rows of ``A`` and ``B``, computed in row chunks."""
    step = max(1, chunk_elements // max(B.shape[0], 1))
    total = sum(cdist(A[i : i + step], B).sum() for i in range(0, A.shape[0], step))
    return float(total / (A.shape[0] * B.shape[0]))


def energy_distance(X, Y) -> float:
    r"""Energy distance between two samples of cells (rows), Euclidean.

    .. math:: E = 2\,\mathbb{E}\lVert X - Y\rVert - \mathbb{E}\lVert X - X'\rVert - \mathbb{E}\lVert Y - Y'\rVert,

    each expectation the mean over all pairs of rows (including a row with itself, as in cell-eval's
    ``edistance``, so :math:`E \ge 0`), computed exactly in :math:`O(nm)` distance evaluations in chunks.
    Lower is better (0 for identical samples). For a point prediction, pass it as a one-row ``Y``:
    :math:`\mathbb{E}\lVert Y - Y'\rVert = 0` and ``E`` measures how far the point is from the cells
    beyond their own spread.

    Examples
    --------
    >>> import numpy as np
    >>> from biojepa.metrics import energy_distance
    >>> energy_distance(np.array([[0.0], [1.0]]), np.array([[3.0]]))  # 2 * 2.5 - 0.5 - 0
    4.5
    """
    X = X.toarray() if sparse.issparse(X) else np.asarray(X, dtype=np.float64)
    Y = Y.toarray() if sparse.issparse(Y) else np.asarray(Y, dtype=np.float64)
    X, Y = np.atleast_2d(X).astype(np.float64), np.atleast_2d(Y).astype(np.float64)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X and Y have different numbers of genes: {X.shape[1]} and {Y.shape[1]}.")
    return 2 * _mean_pairwise_distance(X, Y) - _mean_pairwise_distance(X, X) - _mean_pairwise_distance(Y, Y)


def evaluate(
    pred: AnnData,
    adata: AnnData,
    perturbation_key: str,
    control_value: str,
    covariate_keys: Sequence[str] | None = None,
    layer: str | None = None,
    n_de: int = 20,
    n_expressed: int = 1000,
    delimiter: str = "+",
    de_method: str = "abs_diff",
    metric: str = "l1",
) -> pd.DataFrame:
    """Score predicted perturbation means (e.g. from ``predict_perturbation``) against observed cells.

    Each row of ``pred`` (``X``: predicted mean expression; ``obs``: perturbation label and covariates) is
    compared with the cells of ``adata`` with the same perturbation (labels are parsed, so ``"B+A"`` matches
    ``"A+B"``) and covariate values, and with the control cells of that covariate group. The top-``n_de`` DE
    genes come from the observed cells (:func:`top_de_genes` with ``de_method``), the top-``n_expressed``
    genes from all cells of the group (:func:`top_expressed_genes`). ``adata`` is not modified.

    Parameters
    ----------
    pred
        Predictions: one row per (perturbation, covariate group), ``X`` the predicted mean expression on the
        scale of ``adata``; genes are matched to ``adata.var_names`` by name.
    adata
        Observed cells, control cells included (the full data set, not only the held-out perturbations).
    perturbation_key, control_value, covariate_keys, delimiter
        Columns of ``pred.obs`` and ``adata.obs`` and label conventions, as in ``setup_anndata``.
    layer
        Layer of ``adata`` holding the expression; ``None`` for ``adata.X``.
    n_de, n_expressed
        Numbers of top DE and top expressed genes.
    de_method, metric
        DE ranking (see :func:`top_de_genes`) and distance of the discrimination score.

    Returns
    -------
    One row per row of ``pred`` (same index) with the perturbation and covariate columns, ``n_cells``
    (observed cells), and: ``pearson_delta`` (all genes), ``pearson_delta_top{n_de}``, ``mse_top{n_de}``,
    ``direction_error_top{n_de}``, ``l2_top{n_expressed}`` (see the functions of the same names),
    ``discrimination`` (:func:`discrimination_score` of the predicted delta among the observed deltas of every
    perturbation of the group, the perturbed genes left out; lower is better) and ``energy_distance``
    (:func:`energy_distance` between the observed cells and the predicted mean as a one-row sample: the energy
    distance of a point prediction). With the defaults the columns are ``pearson_delta_top20``,
    ``mse_top20``, ``direction_error_top20`` and ``l2_top1000``.

    Raises
    ------
    KeyError
        For a key missing from ``pred.obs`` or ``adata.obs``, or a predicted perturbation (in its covariate
        group) without cells in ``adata``.
    ValueError
        For genes of ``pred`` missing from ``adata``, a control row in ``pred``, or a group without controls.

    Examples
    --------
    >>> import anndata as ad, numpy as np, pandas as pd
    >>> from biojepa.metrics import evaluate
    >>> adata = ad.AnnData(np.array([[1.0, 1.0, 1.0], [1.0, 1.2, 1.0], [3.0, 1.0, 0.0], [3.2, 1.2, 0.2]]),
    ...                    obs=pd.DataFrame({"condition": ["control", "control", "A", "A"]}, index=list("abcd")))
    >>> pred = ad.AnnData(np.array([[3.1, 1.1, 0.1]]), obs=pd.DataFrame({"condition": ["A"]}, index=["p"]))
    >>> evaluate(pred, adata, "condition", "control", n_de=2)[["pearson_delta", "mse_top2"]].round(3)
       pearson_delta  mse_top2
    p            1.0       0.0
    """
    covariate_keys = list(covariate_keys or [])
    for name, obj in (("pred", pred), ("adata", adata)):
        for key in [perturbation_key, *covariate_keys]:
            if key not in obj.obs.columns:
                raise KeyError(f"Key {key!r} not found in {name}.obs; available columns: {list(obj.obs.columns)}.")
    missing = pred.var_names.difference(adata.var_names)
    if len(missing):
        raise ValueError(f"{len(missing)} genes of pred are not in adata.var_names, e.g. {list(missing[:5])}.")
    if pred.n_vars < adata.n_vars:
        raise ValueError(
            f"pred covers {pred.n_vars} of adata's {adata.n_vars} genes; metrics over a subset are not comparable "
            "with full predictions. Predict every gene, or score the subset explicitly with "
            "`evaluate(pred, adata[:, pred.var_names], ...)`."
        )
    X = get_matrix(adata, layer)
    cols = adata.var_names.get_indexer(pred.var_names)
    if not np.array_equal(cols, np.arange(adata.n_vars)):
        X = X[:, cols]
    keys = condition_frame(adata.obs, perturbation_key, control_value, covariate_keys, delimiter)
    groups, means, n_cells = pseudobulk(X, keys)
    codes = group_codes(keys)
    cov_of = [tuple(row) for row in groups[covariate_keys].to_numpy(dtype=object)]
    index = {(cov, label): i for i, (cov, label) in enumerate(zip(cov_of, groups[PERTURBATION_COLUMN], strict=True))}
    pred_keys = condition_frame(pred.obs, perturbation_key, control_value, covariate_keys, delimiter)
    P = pred.X.toarray() if sparse.issparse(pred.X) else np.asarray(pred.X, dtype=np.float64)
    bad = ~np.isfinite(P).all(axis=1)
    if bad.any():
        raise ValueError(
            f"pred.X has NaN or infinite values in {int(bad.sum())} rows (e.g. {list(pred.obs_names[bad][:5])}); "
            "fix or drop those predictions before scoring them."
        )

    cache: dict[tuple, tuple] = {}
    rows = []
    for r, (label, *cov) in enumerate(pred_keys.itertuples(index=False, name=None)):
        cov, raw = tuple(cov), pred.obs[perturbation_key].iloc[r]
        where = f" with covariates {dict(zip(covariate_keys, cov, strict=True))}" if covariate_keys else ""
        if label == control_value:
            raise ValueError(f"pred row {pred.obs_names[r]!r} is the control {raw!r}; evaluate perturbations only.")
        if (cov, label) not in index:
            raise KeyError(f"Perturbation {raw!r}{where} has no cells in adata.obs[{perturbation_key!r}].")
        if (cov, control_value) not in index:
            raise ValueError(f"No {control_value!r} cells{where} in adata; deltas cannot be computed.")
        if cov not in cache:
            members = [j for j, c in enumerate(cov_of) if c == cov]
            c = index[(cov, control_value)]
            expressed = top_expressed_genes(n_cells[members] @ means[members] / n_cells[members].sum(), n_expressed)
            deltas = {groups[PERTURBATION_COLUMN][j]: means[j] - means[c] for j in members if j != c}
            cache[cov] = (X[codes == c], means[c], expressed, deltas)
        X_ctrl, ctrl, expressed, deltas = cache[cov]
        i = index[(cov, label)]
        true, pred_mean, X_pert = means[i], P[r].astype(np.float64), X[codes == i]
        de = top_de_genes(X_pert, X_ctrl, n_de, de_method)
        target = pred.var_names.get_indexer(list(parse_perturbation(label, control_value, delimiter).genes))
        pds = discrimination_score({label: pred_mean - ctrl}, deltas, metric, exclude={label: target[target >= 0]})
        rows.append(
            {
                perturbation_key: raw,
                **dict(zip(covariate_keys, cov, strict=True)),
                "n_cells": int(n_cells[i]),
                "pearson_delta": pearson_delta(pred_mean, true, ctrl),
                f"pearson_delta_top{n_de}": pearson_delta(pred_mean, true, ctrl, de),
                f"mse_top{n_de}": mse_top_de(pred_mean, true, de),
                f"direction_error_top{n_de}": direction_error(pred_mean, true, ctrl, de),
                f"l2_top{n_expressed}": l2_top_expressed(pred_mean, true, expressed),
                "discrimination": pds[label],
                "energy_distance": energy_distance(X_pert, pred_mean[None, :]),
            }
        )
    return pd.DataFrame(rows, index=pred.obs_names.copy())
