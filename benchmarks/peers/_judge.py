"""Both judges: :func:`biojepa.metrics.evaluate` and Arc Institute's cell-eval (in its own environment).

cell-eval scores cell-level AnnData pairs. A method's point prediction becomes a pair per cell type: ``real`` = the
cell type's training-set control cells and the observed cells of the predicted perturbations, ``pred`` = the same
control cells and one row per perturbation holding the predicted mean (cell-eval's pseudobulk of one row is that
row). The split-half ceiling's pair is cell-level on both sides (``pred``: the first half of the cells).

Shared metrics and how they are matched (:func:`our_side`, computed with :mod:`biojepa.metrics` on the same pairs):

- ``pearson_delta`` (all genes): identical definitions; equal to ``evaluate``'s ``pearson_delta`` too;
- ``mse`` (all genes, of the means): :func:`biojepa.metrics.mse_top_de` over every gene;
- discrimination: cell-eval reports ``1 - rank / N`` over the perturbations *of the pair* and leaves out a gene
  only when the perturbation label equals its name (singles); :func:`biojepa.metrics.discrimination_score` with the
  same candidates and exclusions gives ``rank / N``. ``evaluate``'s PDS in the tables ranks among *every* observed
  perturbation of the cell type (training ones included) and leaves out every perturbed gene (doubles too).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
from _adapter import CONTROL, COV, KEY

import biojepa as bj

METRICS = ["pearson_delta", "pearson_delta_top20", "mse_top20", "direction_error_top20", "l2_top1000",
           "discrimination", "energy_distance"]  # fmt: skip


def score(pred: ad.AnnData, observed: ad.AnnData, split_of: dict, **tags) -> pd.DataFrame:
    """:func:`biojepa.metrics.evaluate` of ``pred`` against ``observed``, with each row's split and ``tags``."""
    scores = bj.metrics.evaluate(pred, observed, KEY, CONTROL, [COV])
    split = [split_of[(c, t)] for c, t in zip(pred.obs[KEY], pred.obs[COV], strict=True)]
    return scores.assign(split=split, **tags).reset_index(drop=True)


def write_pairs(pred: ad.AnnData, observed: ad.AnnData, folder: Path, tag: str, pred_cells=None) -> list[dict]:
    """cell-eval pairs (one per cell type) of a prediction; ``pred_cells`` replaces the point rows by cells."""
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    for cell_type, rows in pred.obs.groupby(COV):
        labels = list(rows[KEY])
        in_type = (observed.obs[COV] == cell_type).to_numpy()
        ctrl = observed[in_type & (observed.obs[KEY] == CONTROL).to_numpy()]
        real = observed[in_type & observed.obs[KEY].isin(labels).to_numpy()]
        if pred_cells is None:
            point = pred[rows.index]
            point = ad.AnnData(np.asarray(point.X, dtype=np.float32), obs=point.obs[[KEY]].copy(),
                               var=pd.DataFrame(index=pred.var_names))  # fmt: skip
        else:
            point = pred_cells[(pred_cells.obs[COV] == cell_type).to_numpy()]
        files = {}
        for side, parts in (("real", [ctrl, real]), ("pred", [ctrl, point])):
            cells = ad.concat([ad.AnnData(np.asarray(p.X, dtype=np.float32), obs=p.obs[[KEY]].astype(str))
                               for p in parts], index_unique="-")  # fmt: skip
            cells.var_names = observed.var_names
            files[side] = str(folder / f"{tag}_{cell_type}_{side}.h5ad")
            cells.write_h5ad(files[side])
        items.append({"id": f"{tag}|{cell_type}", **files})
    return items


def run_celleval(items: list[dict], python: Path, folder: Path) -> pd.DataFrame:
    """Score every pair with cell-eval in its environment; one row per (pair id, perturbation)."""
    manifest, out = folder / "celleval_manifest.json", folder / "celleval_scores.csv"
    manifest.write_text(json.dumps(items))
    script = Path(__file__).with_name("run_celleval.py")
    proc = subprocess.run([str(python), str(script), "--manifest", str(manifest), "--output", str(out)],
                          capture_output=True, text=True)  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"cell-eval failed:\n{proc.stderr[-3000:]}")
    return pd.read_csv(out)


def our_side(items: list[dict]) -> pd.DataFrame:
    """The shared metrics computed with :mod:`biojepa.metrics` on the same pairs, cell-eval's conventions."""
    rows = []
    for item in items:
        sides = {s: ad.read_h5ad(item[s]) for s in ("real", "pred")}
        means = {}
        for s, a in sides.items():
            labels = a.obs[KEY].astype(str).to_numpy()
            means[s] = {c: np.asarray(a.X[labels == c], dtype=np.float64).mean(0) for c in np.unique(labels)}
        genes = list(sides["real"].var_names)
        ctrl_r, ctrl_p = means["real"][CONTROL], means["pred"][CONTROL]
        perts = [c for c in means["real"] if c != CONTROL]
        true_d = {c: means["real"][c] - ctrl_r for c in perts}
        exclude = {c: [genes.index(c)] for c in perts if c in genes}
        for metric in ("l1", "l2"):
            pred_d = {c: means["pred"][c] - ctrl_p for c in perts}
            pds = bj.metrics.discrimination_score(pred_d, true_d, metric, exclude=exclude)
            for c in perts:
                rows.append({"id": item["id"], KEY: c, "metric": metric, "pds": pds[c]})
        every = np.arange(len(genes))
        for c in perts:
            pred_c, real_c = means["pred"][c], means["real"][c]
            rows.append({"id": item["id"], KEY: c, "metric": "pearson_mse",
                         "pearson_delta": bj.metrics.pearson_delta(pred_c, real_c, ctrl_r),
                         "mse": bj.metrics.mse_top_de(pred_c, real_c, every)})  # fmt: skip
    df = pd.DataFrame(rows)
    base = df[df.metric == "pearson_mse"][["id", KEY, "pearson_delta", "mse"]]
    for metric in ("l1", "l2"):
        part = df[df.metric == metric][["id", KEY, "pds"]].rename(columns={"pds": f"discrimination_{metric}"})
        base = base.merge(part, on=["id", KEY])
    return base


def agreement(ours: pd.DataFrame, theirs: pd.DataFrame) -> pd.DataFrame:
    """Per pair and perturbation: both judges' shared metrics (cell-eval's PDS turned into ``rank / N``)."""
    merged = ours.merge(theirs, on=["id", KEY], how="outer")
    for metric in ("l1", "l2"):
        merged[f"ce_discrimination_{metric}"] = 1 - merged[f"ce_discrimination_{metric}"]
    return merged
