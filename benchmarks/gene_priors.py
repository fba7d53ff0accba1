"""Gene priors for unseen genes: BioJEPA with and without GO features on Norman single genes held out in K562.

Every Norman 2019 single gene of the PerturBench devel file (18 genes) is held out, leave-one-gene-out style: the genes
are shuffled by the seed and split into ``--folds`` folds; a fold removes every Norman cell whose perturbation contains
one of its genes (singles and doubles) and the rest of the file trains (the McFaline glioma lines included, as in
``benchmarks/perturbation.py``'s ``norman_unseen_singles``). Per fold, BioJEPA is trained twice on the same cells:
without features (``--gene-features none``) and with ``perturbation_features=bj.data.go_features(genes)`` for the 31
perturbed genes of the file (``go``); the baselines are fitted once.

The held-out genes fall in two groups, reported as separate splits:

- ``unseen_with_token``: TMSB4X (the one measured perturbed gene) and the 9 genes also knocked down in the McFaline
  lines (their learned tokens come from CRISPRi there). BioJEPA can predict them without features.
- ``unseen_go_only``: the 8 other genes. Without features BioJEPA has no token for them; with GO features it predicts
  from the features alone where a gene has a non-zero GO row (genes with a zero row are left out of the table, so
  that no gene is predicted from the feature projection's bias alone).

Scores (:func:`biojepa.metrics.evaluate`) are averaged over the genes that the BioJEPA variants of the split predicted
(the baselines are scored on the same genes; Linear, which needs a measured gene, only where it can), then mean ± sd
over seeds. ``--first-folds`` runs only the first folds of each seed's split (to bound the run time).

Run ``python benchmarks/gene_priors.py --seeds 0 1 2 --epochs 50 --out benchmarks/results/gene_priors.md``.
"""

from __future__ import annotations

import argparse
import datetime
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

import biojepa as bj

sys.path.insert(0, str(Path(__file__).parent))
import perturbation as P
from _common import cpu_model, quiet

SPLITS = {"with": "unseen_with_token", "without": "unseen_go_only"}
REPORT = ["pearson_delta_top20", "l2_top1000", "pearson_delta", "mse_top20", "discrimination"]


def norman_genes(full) -> tuple[list[str], list[str]]:
    """Norman single genes with cells in the file, and every perturbed gene of the file (Norman and McFaline)."""
    norman = full.obs.loc[(full.obs["dataset"] == "norman19").to_numpy(), P.KEY]
    singles = sorted({c for c in norman.unique() if c != P.CONTROL and "+" not in c})
    perturbed = sorted({g for c in full.obs[P.KEY].unique() for g in P._genes(c)})
    return singles, perturbed


def gene_priors(seed: int, epochs: int, variants: list[str], folds: int, first_folds: int | None) -> list[pd.DataFrame]:
    """Scores of every method on the held-out Norman singles of one seed (``first_folds`` of ``folds`` folds)."""
    full = bj.datasets.perturbench_devel()
    setup = {"categorical_covariate_keys": [P.COV], "perturbation_type_key": "perturbation_type"}
    singles, perturbed = norman_genes(full)
    mcf = set(full.obs.loc[(full.obs["dataset"] == "mcfaline23").to_numpy(), P.KEY]) - {P.CONTROL}
    has_token = {g for g in singles if g in full.var_names or g in mcf}
    go = bj.data.go_features(perturbed)
    features = {"none": None, "go": go[go.abs().sum(axis=1) > 0]}  # a zero row is no prior: not predicted from it
    is_norman = (full.obs["dataset"] == "norman19").to_numpy()
    order = list(np.random.default_rng(seed).permutation(singles))
    results = []
    for i, fold in enumerate(np.array_split(order, folds)[:first_folds]):
        drop = is_norman & np.array([bool(P._genes(c) & set(fold)) for c in full.obs[P.KEY]])
        reqs = [(SPLITS["with" if g in has_token else "without"], g, "k562") for g in fold]
        for variant in variants:
            P.MODEL_KWARGS.clear()
            if features[variant] is not None:
                P.MODEL_KWARGS["perturbation_features"] = features[variant]
            start = time.time()
            res, _ = P._fit_predict(full[~drop].copy(), full, reqs, seed, epochs, setup)
            logging.getLogger("bench").info("seed %d fold %d %s: %.0f s", seed, i, variant, time.time() - start)
            res = pd.concat(res, ignore_index=True).assign(fold=i)
            res.loc[res["method"] == "BioJEPA", "method"] = f"BioJEPA ({variant})"
            if variant != variants[0]:
                res = res[res["method"].str.startswith("BioJEPA")]
            results.append(res)
    P.MODEL_KWARGS.clear()
    return results


def common_genes(results: pd.DataFrame) -> pd.DataFrame:
    """Rows of the genes that every BioJEPA variant run on a split predicted (per seed); other rows dropped."""
    keep = []
    for (_, _), part in results.groupby(["split", "seed"]):
        ours = part[part["method"].str.startswith("BioJEPA")]
        sets = [set(g["label"]) for _, g in ours.groupby("method")]
        shared = set.intersection(*sets) if sets else set()
        keep.append(part[part["label"].isin(shared)])
    return pd.concat(keep, ignore_index=True)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean over genes per (split, method, seed), then mean ± sd over seeds; ``n``: genes per seed (mean)."""
    per_seed = results.groupby(["split", "method", "seed"])[REPORT].mean()
    counts = results.groupby(["split", "method", "seed"]).size().groupby(["split", "method"]).mean()
    mean, sd = per_seed.groupby(["split", "method"]).mean(), per_seed.groupby(["split", "method"]).std()
    table = mean.map(lambda v: f"{v:.3f}") + " ± " + sd.map(lambda v: f"{v:.3f}")
    table = table.where(mean.notna(), "n/a")
    table.insert(0, "n", counts.round(1))
    return table


def coverage(perturbed: list[str], var_names, features: pd.DataFrame) -> str:
    """How many perturbed genes without an expression column have a GO annotation, and a non-zero feature row."""
    table = pd.read_csv(bj.datasets.data_path("gene_priors/go_human_orghseg_3.16.tsv.gz"), sep="\t", dtype=str)
    bp = set(table.loc[(table["ontology"] == "BP") & (table["evidence"] != "ND"), "symbol"])
    unmeasured = [g for g in perturbed if g not in set(var_names)]
    annotated = [g for g in unmeasured if g in bp]
    nonzero = [g for g in unmeasured if np.abs(features.loc[g].to_numpy()).sum() > 0]
    return (
        f"{len(unmeasured)} perturbed genes have no expression column; {len(annotated)} have a GO BP annotation "
        f"(without: {sorted(set(unmeasured) - set(annotated))}); {len(nonzero)} get a non-zero GO feature row "
        f"(zero: {sorted(set(unmeasured) - set(nonzero))})."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(P.SEEDS))
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--gene-features", nargs="+", choices=["none", "go"], default=["none", "go"])
    parser.add_argument("--folds", type=int, default=2, help="folds the 18 Norman single genes are split into")
    parser.add_argument("--first-folds", type=int, default=None, help="run only this many folds per seed")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, default=None, help="write a markdown report here (rows: same name .csv)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    quiet()
    logging.getLogger("bench").setLevel(logging.INFO)
    logging.basicConfig(format="%(message)s")
    start = time.time()
    results = []
    for seed in args.seeds:
        results += gene_priors(seed, args.epochs, args.gene_features, args.folds, args.first_folds)
    results = pd.concat(results, ignore_index=True)
    full = bj.datasets.perturbench_devel()
    _, perturbed = norman_genes(full)
    lines = [
        f"Command: `python benchmarks/gene_priors.py {' '.join(sys.argv[1:])}`",
        f"Date: {datetime.date.today()}; machine: {cpu_model()}, {args.threads} torch thread(s); seeds {args.seeds}; "
        f"{args.epochs} epochs; {args.folds} folds, {args.first_folds or args.folds} run per seed; "
        f"total {time.time() - start:.0f} s.",
        "",
        coverage(perturbed, full.var_names, bj.data.go_features(perturbed)),
        "",
        "Genes every BioJEPA variant of the split predicted:",
        "",
        summarize(common_genes(results)).to_markdown(),
        "",
        "Every gene a method could predict:",
        "",
        summarize(results).to_markdown(),
    ]
    report = "\n".join(lines)
    print(report)
    if args.out is not None:
        args.out.write_text(report + "\n")
        results.to_csv(args.out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
