"""The perturbation benchmark's splits as training runs that every method (BioJEPA, baselines, peers) gets alike.

Each run is one training set and the held-out (perturbation, cell type) requests it answers, in the canonical
format of :mod:`_adapter`. Runs per seed:

- ``perturbench``: the PerturBench devel file without the 5 Norman doubles whose singles are seen
  (``norman_doubles``) and without 9 McFaline knockouts, each held out in one of the 3 glioma lines
  (``mcfaline_cross_line``; the assignment shuffled by the seed), exactly as in ``benchmarks/perturbation.py``;
- ``norman_unseen_0`` / ``norman_unseen_1``: leave-one-gene-out singles in K562 (``norman_unseen_singles``), the
  10 genes with a token after removal split into 2 seeded folds, every Norman cell with a fold gene removed, as in
  ``benchmarks/perturbation.py``;
- ``sergio``: the shared 500-gene sergio-rs knockout screen (``sergio_rs_knockout_sim_500genes.h5ad``, 20 singles
  and 10 doubles, log1p of counts per 10,000): 4 seeded knocked-out genes removed with every condition containing
  them (``sergio_unseen_singles``) and 3 of the remaining doubles held out (``sergio_doubles``). The 2,000-gene
  screen of ``benchmarks/simulate_screen.py`` has the same design at a larger size; the shared 500-gene file keeps
  the peers' runs within this machine's time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _adapter import CONTROL, COV, KEY, canonical, genes_of

NORMAN_DOUBLES = ["KLF1+MAP2K6", "KLF1+TGFBR2", "MAP2K3+MAP2K6", "MAP2K3+SLC38A2", "MAPK1+TGFBR2"]
SPLITS = ["norman_doubles", "norman_unseen_singles", "mcfaline_cross_line", "sergio_doubles",
          "sergio_unseen_singles"]  # fmt: skip


@dataclass
class Run:
    """One training run: every observed cell (``full``, for scoring), the canonical input and each request's split."""

    name: str
    full: ad.AnnData
    canon: ad.AnnData
    split_of: dict[tuple[str, str], str]


def _run(name: str, full: ad.AnnData, drop: np.ndarray, requests: list[tuple[str, str, str]]) -> Run:
    canon = canonical(full, ~drop, [(c, t) for _, c, t in requests])
    return Run(name, full, canon, {(c, t): s for s, c, t in requests})


def perturbench_runs(path: Path, seed: int) -> list[Run]:
    """The Norman doubles + McFaline cross-line run and the two Norman leave-one-gene-out runs."""
    full = ad.read_h5ad(path)
    full.obs[KEY] = full.obs[KEY].astype(str)
    full.obs[COV] = full.obs[COV].astype(str)
    if hasattr(full.X, "toarray"):
        full.X = full.X.toarray()
    rng = np.random.default_rng(seed)
    mcf = full.obs[full.obs["dataset"] == "mcfaline23"]
    perts = sorted(set(mcf[KEY]) - {CONTROL})
    lines = sorted(set(mcf[COV]))
    held = {(p, lines[i // 3]) for i, p in enumerate(rng.permutation(perts))}
    is_norman = (full.obs["dataset"] == "norman19").to_numpy()
    drop = is_norman & full.obs[KEY].isin(NORMAN_DOUBLES).to_numpy()
    drop |= np.array([(c, t) in held for c, t in zip(full.obs[KEY], full.obs[COV], strict=True)])
    requests = [("norman_doubles", d, "k562") for d in NORMAN_DOUBLES]
    requests += [("mcfaline_cross_line", p, line) for p, line in sorted(held)]
    runs = [_run("perturbench", full, drop, requests)]

    measured = [g for g in {g for c in full.obs.loc[is_norman, KEY] for g in genes_of(c)} if g in full.var_names]
    logo = list(rng.permutation(sorted(set(measured) | set(perts))))
    for i, fold in enumerate((logo[: len(logo) // 2], logo[len(logo) // 2 :])):
        drop = is_norman & np.array([bool(set(genes_of(c)) & set(fold)) for c in full.obs[KEY]])
        runs.append(_run(f"norman_unseen_{i}", full, drop, [("norman_unseen_singles", g, "k562") for g in fold]))
    return runs


def sergio_run(path: Path, seed: int, n_held_genes: int = 4, n_held_doubles: int = 3) -> Run:
    """Held-out doubles and unseen knocked-out genes of the shared 500-gene simulated screen."""
    raw = ad.read_h5ad(path)
    X = raw.X.toarray() if hasattr(raw.X, "toarray") else np.asarray(raw.X)
    X = np.log1p(X / np.maximum(X.sum(1, keepdims=True), 1) * 1e4).astype(np.float32)
    obs = pd.DataFrame({KEY: raw.obs["perturbation"].astype(str).to_numpy(), COV: "all"}, index=raw.obs_names)
    full = ad.AnnData(X, obs=obs, var=pd.DataFrame(index=raw.var_names.copy()))
    rng = np.random.default_rng(seed)
    conds = sorted(set(full.obs[KEY]) - {CONTROL})
    singles = [c for c in conds if "+" not in c]
    held_genes = set(rng.choice(singles, n_held_genes, replace=False))
    doubles = [c for c in conds if "+" in c and not (set(genes_of(c)) & held_genes)]
    held_doubles = sorted(rng.choice(doubles, n_held_doubles, replace=False))
    drop = np.array([bool(set(genes_of(c)) & held_genes) or c in held_doubles for c in full.obs[KEY]])
    requests = [("sergio_doubles", d, "all") for d in held_doubles]
    requests += [("sergio_unseen_singles", g, "all") for g in sorted(held_genes)]
    return _run("sergio", full, drop, requests)


def half_split(run: Run, seed: int) -> tuple[ad.AnnData, ad.AnnData, ad.AnnData]:
    """Split-half ceiling of a run: the mean of a random half of each held-out perturbation's observed cells.

    Returns the prediction (one row per request, our layout without ``delta``), the observed data in which those
    halves are removed (so the ceiling is scored against the other half) and the removed halves' cells.
    """
    rng = np.random.default_rng(seed + 1000)
    full = run.full
    keep = np.ones(full.n_obs, dtype=bool)
    rows, obs = [], []
    for label, cell_type in run.split_of:
        idx = np.flatnonzero((full.obs[KEY] == label).to_numpy() & (full.obs[COV] == cell_type).to_numpy())
        first = rng.permutation(idx)[: len(idx) // 2]
        keep[first] = False
        rows.append(np.asarray(full.X[first], dtype=np.float64).mean(0))
        obs.append({KEY: label, COV: cell_type})
    obs = pd.DataFrame(obs)
    obs.index = [f"{c}_{t}" for c, t in zip(obs[KEY], obs[COV], strict=True)]
    pred = ad.AnnData(np.vstack(rows).astype(np.float32), obs=obs, var=pd.DataFrame(index=full.var_names.copy()))
    return pred, full[keep].copy(), full[~keep].copy()
