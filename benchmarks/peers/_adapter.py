"""One adapter between the benchmark's splits and every peer's input format, and back to our prediction AnnData.

The benchmark describes a training run by one *canonical* AnnData: the training cells (``X`` log-normalized
expression), ``obs["condition"]`` with our labels (``"control"``, ``"KLF1"``, ``"KLF1+MAP2K6"``),
``obs["cell_type"]`` (the covariate group; a single ``"all"`` when there is none), and ``uns["requests"]``, the
(label, cell type) pairs to predict. :func:`to_peer` turns it into the input of one peer (written as ``.h5ad`` and
read by that peer's runner in its own virtual environment):

- GEARS: ``obs["condition"]`` ``"A+ctrl"`` / ``"A+B"`` / ``"ctrl"``, ``var["gene_name"]``, sparse ``X``, and the
  gene-ontology annotation of the genes (``uns["gene2go"]``: gene, GO id pairs) from which the runner builds
  GEARS' ``gene2go_all.pkl`` (GEARS would otherwise download it);
- CPA: ``obs["condition"]`` ``"A"`` / ``"A+B"`` / ``"ctrl"``, ``obs["dose"]`` ``"1"`` / ``"1+1"`` (or the
  canonical doses, see below), ``obs["cell_type"]`` and ``obs["split"]`` (``"train"`` / ``"valid"``: a seeded 10 %
  of the training cells);
- scGen: ``obs["condition"]`` (the label, ``"ctrl"`` for control) and ``obs["cell_type"]``;
- biolord: ``obs["condition"]``, ``obs["cell_type"]``, ``obs["split"]`` as for CPA, and the gene-ontology
  annotation of the perturbed genes (``uns["gene2go"]``, as for GEARS), from which the runner builds biolord's
  perturbation attribute;
- BioJEPA and the peers without a special format get the canonical AnnData itself.

A dosed run (a compound screen) also carries ``obs["dose"]`` (``"10"``, ``"10+1"``; one per member, in the label's
order) and requests of (label, cell type, dose); only CPA reads doses, and its predictions come back per dose.

Every input carries ``uns["requests"]`` in the peer's own labels. A runner answers with a prediction ``.h5ad``:
one row per request, ``obs["condition"]`` (the peer's label) and ``obs["cell_type"]``, ``X`` the predicted mean
expression on the input scale, and ``uns["cost"]`` (training seconds, epochs, cells, peak memory).
:func:`from_peer` maps it back to our prediction layout (the layout of :mod:`biojepa.baselines`): ``obs``
``condition`` (our label) and ``cell_type``, ``X`` the predicted mean, ``layers["delta"]`` = ``X`` minus the
training control mean of the row's cell type.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
from scipy import sparse

KEY, CONTROL, COV, DOSE = "condition", "control", "cell_type", "dose"
PEER_CONTROL = {"gears": "ctrl", "cpa": "ctrl", "scgen": "ctrl", "biolord": "ctrl"}
DELIMITER = "+"


def genes_of(label: str) -> list[str]:
    """The genes of one of our labels (``"control"`` has none); runners and splits parse labels only through this."""
    return [] if label == CONTROL else str(label).split(DELIMITER)


def to_peer_label(label: str, peer: str) -> str:
    """Our label (``"control"``, ``"A"``, ``"A+B"``) in the convention of ``peer``.

    GEARS writes a single as ``"A+ctrl"`` and control as ``"ctrl"``; CPA, scGen and biolord keep ``"A"`` /
    ``"A+B"`` with control ``"ctrl"``; others use our labels.
    """
    if label == CONTROL:
        return PEER_CONTROL.get(peer, CONTROL)
    genes = genes_of(label)
    if peer == "gears" and len(genes) == 1:
        return f"{genes[0]}+ctrl"
    return DELIMITER.join(genes)


def from_peer_label(label: str, peer: str) -> str:
    """Inverse of :func:`to_peer_label`; also accepts GEARS' ``"ctrl+A"`` and its ``"A_B"`` prediction keys."""
    if label == PEER_CONTROL.get(peer, CONTROL):
        return CONTROL
    sep = "_" if peer == "gears" and DELIMITER not in label and "_" in label else DELIMITER
    genes = [g for g in label.split(sep) if g != "ctrl"]
    return DELIMITER.join(genes) if genes else CONTROL


def canonical(
    adata: ad.AnnData,
    train_mask: np.ndarray,
    requests: list[tuple[str, str]],
    covariate: str | None = COV,
    keep: tuple[str, ...] = ("perturbation_type",),
    dose: str | None = None,
) -> ad.AnnData:
    """The canonical training AnnData of one run: the cells of ``train_mask`` and the requests to predict.

    ``adata.obs`` must hold ``condition`` (our labels) and, if ``covariate`` is not ``None``, the covariate column
    (copied to ``cell_type``; without a covariate every cell gets ``"all"``). Columns of ``keep`` present in
    ``adata.obs`` are copied too. ``dose``: the column of doses (copied to ``dose``); the requests are then
    (label, cell type, dose) triples.
    """
    train = adata[np.asarray(train_mask, dtype=bool)]
    obs = pd.DataFrame(index=train.obs_names.copy())
    obs[KEY] = train.obs[KEY].astype(str).to_numpy()
    obs[COV] = train.obs[covariate].astype(str).to_numpy() if covariate is not None else "all"
    for col in keep:
        if col in train.obs:
            obs[col] = train.obs[col].astype(str).to_numpy()
    if dose is not None:
        obs[DOSE] = train.obs[dose].astype(str).to_numpy()
    X = train.X.toarray() if sparse.issparse(train.X) else np.asarray(train.X)
    out = ad.AnnData(X=np.asarray(X, dtype=np.float32), obs=obs, var=pd.DataFrame(index=train.var_names.copy()))
    out.uns["requests"] = pd.DataFrame(requests, columns=_request_columns(out)).astype(str)
    return out


def _request_columns(canon: ad.AnnData) -> list[str]:
    """Columns of a run's requests: label and cell type, and the dose in a dosed run."""
    return [KEY, COV, DOSE] if DOSE in canon.obs else [KEY, COV]


def _validation_split(n: int, seed: int, fraction: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    split = np.full(n, "train", dtype=object)
    split[rng.choice(n, max(1, int(round(fraction * n))), replace=False)] = "valid"
    return split


def to_peer(canon: ad.AnnData, peer: str, seed: int = 0, gene2go: pd.DataFrame | None = None) -> ad.AnnData:
    """Input AnnData of ``peer`` for the canonical run ``canon`` (see the module docstring for each format).

    Parameters
    ----------
    canon
        Output of :func:`canonical`.
    peer
        ``"gears"``, ``"cpa"``, ``"scgen"``, ``"biolord"``; anything else gets a copy of ``canon``.
    seed
        Seed of the validation cells (CPA, biolord).
    gene2go
        GEARS and biolord: ``symbol``, ``go_id`` pairs; genes without any get a GO term of their own (no neighbours).
    """
    out = canon.copy()
    labels = canon.obs[KEY].astype(str)
    out.obs[KEY] = [to_peer_label(c, peer) for c in labels]
    requests = canon.uns["requests"].copy()
    requests[KEY] = [to_peer_label(c, peer) for c in requests[KEY]]
    out.uns["requests"] = requests
    out.uns["peer"] = peer
    perturbed = {g for c in list(labels) + list(canon.uns["requests"][KEY]) for g in genes_of(c)}
    if peer == "gears":
        out.X = sparse.csr_matrix(out.X)
        out.var["gene_name"] = out.var_names.astype(str)
        out.uns["gene2go"] = _gene_ontology(sorted(set(out.var_names) | perturbed), gene2go)
    elif peer in ("cpa", "biolord"):
        out.obs["split"] = _validation_split(out.n_obs, seed)
        out = ad.concat([out, _counterfactuals(canon, peer)], merge="same", uns_merge="first")
        unit = [DELIMITER.join(["1"] * max(1, len(from_peer_label(c, peer).split(DELIMITER)))) for c in out.obs[KEY]]
        if DOSE in canon.obs:  # the run's doses; control cells get the unit dose, as without doses
            ctrl = (out.obs[KEY] == to_peer_label(CONTROL, peer)).to_numpy()
            out.obs[DOSE] = np.where(ctrl, unit, out.obs[DOSE].astype(str).to_numpy())
        else:
            out.obs[DOSE] = unit
        if peer == "biolord":
            out.uns["gene2go"] = _gene_ontology(sorted(perturbed), gene2go)
    return out


def _gene_ontology(genes: list[str], gene2go: pd.DataFrame | None) -> pd.DataFrame:
    """``symbol``, ``go_id`` pairs of ``genes``; a gene without any gets a GO term of its own (no GO neighbours)."""
    pairs = gene2go[gene2go["symbol"].isin(genes)][["symbol", "go_id"]] if gene2go is not None else None
    have = set(pairs["symbol"]) if pairs is not None else set()
    own = pd.DataFrame({"symbol": [g for g in genes if g not in have]})
    own["go_id"] = "own:" + own["symbol"]
    return pd.concat([pairs, own] if pairs is not None else [own], ignore_index=True).astype(str)


def _counterfactuals(canon: ad.AnnData, peer: str) -> ad.AnnData:
    """Control cells of each request's cell type, relabelled with the request (``split="ood"``, never trained on).

    CPA and biolord predict a counterfactual from a cell's own expression and the perturbation it is labelled
    with; these cells are registered with the training data so that a combination of seen genes gets its
    perturbation encoding. Requests with a gene never perturbed in training are left out: their embedding would
    be untrained, so these peers cannot predict them.
    """
    trained = {g for c in canon.obs[KEY] for g in genes_of(str(c))}
    is_ctrl = (canon.obs[KEY] == CONTROL).to_numpy()
    parts = []
    for request in canon.uns["requests"].to_dict("records"):
        label, cell_type = request[KEY], request[COV]
        if not set(genes_of(label)) <= trained:
            continue
        cells = canon[is_ctrl & (canon.obs[COV] == cell_type).to_numpy()].copy()
        cells.obs[KEY] = to_peer_label(label, peer)
        cells.obs["split"] = "ood"
        tag = label if DOSE not in request else f"{label}@{request[DOSE]}"
        if DOSE in request:
            cells.obs[DOSE] = request[DOSE]
        cells.obs_names = [f"{n}-{tag}" for n in cells.obs_names]
        parts.append(cells)
    if not parts:
        return canon[:0].copy()
    return ad.concat(parts)


def control_means(canon: ad.AnnData) -> dict[str, np.ndarray]:
    """Training control mean expression of each cell type of ``canon``."""
    X = np.asarray(canon.X.toarray() if sparse.issparse(canon.X) else canon.X, dtype=np.float64)
    is_ctrl = (canon.obs[KEY] == CONTROL).to_numpy()
    return {t: X[is_ctrl & (canon.obs[COV] == t).to_numpy()].mean(0) for t in pd.unique(canon.obs[COV][is_ctrl])}


def write_prediction(path, labels, cell_types, X, var_names, cost: dict, doses=None) -> None:
    """Write a runner's prediction file (used inside the peers' environments, so anndata/numpy only).

    ``doses``: one dose string per row, for a dosed run.
    """
    obs = pd.DataFrame({KEY: list(map(str, labels)), COV: list(map(str, cell_types))})
    obs.index = [f"{c}_{t}" for c, t in zip(obs[KEY], obs[COV], strict=True)]
    if doses is not None:
        obs[DOSE] = list(map(str, doses))
        obs.index = [f"{i}@{d}" for i, d in zip(obs.index, obs[DOSE], strict=True)]
    pred = ad.AnnData(np.asarray(X, dtype=np.float32), obs=obs, var=pd.DataFrame(index=list(var_names)))
    pred.uns["cost"] = {k: float(v) for k, v in cost.items()}
    pred.write_h5ad(path)


def from_peer(pred: ad.AnnData, peer: str, canon: ad.AnnData) -> ad.AnnData:
    """A runner's prediction in our prediction layout, genes in the order of ``canon``.

    Rows whose label cannot be mapped back to a request of ``canon`` raise a ``KeyError``; rows with
    non-finite predictions are dropped (a peer that fails on one perturbation does not poison the others).
    """
    labels = [from_peer_label(str(c), peer) for c in pred.obs[KEY]]
    columns = _request_columns(canon)
    wanted = set(canon.uns["requests"][columns].astype(str).itertuples(index=False, name=None))
    types = pred.obs[COV].astype(str).tolist()
    keys = list(zip(labels, types, *([pred.obs[DOSE].astype(str)] if DOSE in columns else []), strict=True))
    unknown = [k for k in keys if k not in wanted]
    if unknown:
        raise KeyError(f"{peer} predicted {unknown[:3]}, which were not requested; requests: {sorted(wanted)[:5]}.")
    X = pred[:, canon.var_names].X
    X = np.asarray(X.toarray() if sparse.issparse(X) else X, dtype=np.float64)
    ok = np.isfinite(X).all(1)
    ctrl = control_means(canon)
    obs = pd.DataFrame(keys, columns=columns).loc[ok].reset_index(drop=True)
    obs.index = ["_".join(k) if len(k) == 2 else f"{k[0]}_{k[1]}@{k[2]}" for k in obs.itertuples(index=False)]
    X = X[ok]
    delta = X - np.vstack([ctrl[t] for t in obs[COV]]) if len(obs) else X
    out = ad.AnnData(X=X.astype(np.float32), obs=obs, var=pd.DataFrame(index=canon.var_names.copy()))
    out.layers["delta"] = delta.astype(np.float32)
    out.uns["method"] = peer
    out.uns["cost"] = dict(pred.uns.get("cost", {}))
    return out
