"""Simulated chemical compound x dose screen with a known network and known targets (sergio-rs), for benchmarks.

What it generates
-----------------
A deterministic (fixed seeds) screen of compounds at several doses, alone and in pairs, in several cell lines, plus a
disease state to screen against, on the random gene regulatory network (GRN) of ``simulate_screen.py`` and with its
machinery: deterministic steady states with half-responses fixed at the control network's, passed to sergio-rs as
per-condition interaction strengths so that effects propagate downstream, SERGIO noise around them and sergio-rs'
technical noise (read that module's docstring first). Defaults: 1,000 genes (100 regulators), 40 compounds at 5
doses, 15 pairs at 1-2 dose pairs each, 3 cell lines, 40 cells per condition, 200 control and 100 disease cells per
line (672 conditions, 27,540 cells at seed 0).

Compounds. Each has 1-3 target regulators (1/2/3 with probability 0.5/0.35/0.15; picked with probability
proportional to their number of targets), a direction per target (inhibition with probability 0.8), a potency
``EC50`` (log-uniform in 0.1-10 µM) and a Hill slope ``n ~ U(1, 2)``. At dose ``d`` the fraction of the maximal
effect is ``h(d) = d^n / (d^n + EC50^n)``, and a target's whole production (basal rate plus incoming Hill terms) is
multiplied by ``1 - e h(d)`` for inhibition (``e ~ U(0.85, 0.95)``) or ``1 + a h(d)`` for activation
(``a ~ U(2, 3)``); the factors of several compounds (or targets) multiply. Doses are 0.01, 0.1, 1, 10 and 100 µM.

Cell lines. The same network with a log-normal factor (sd 0.5) per line on every master regulator's production;
half-responses stay those of the unscaled network, so the lines differ in control expression downstream too.

Disease. In the ``"disease"`` condition of every line, three non-master regulators (picked with probability
proportional to their number of targets) have their production multiplied by 3. A compound *reverses* the disease
when the cosine between its effect at the top dose and minus the disease shift (log1p of the deterministic steady
states minus control, averaged over lines) is at least 0.3; the disease regulators are redrawn until 4-8 compounds
reverse it. ``disease_rescue`` is the fraction of the shift undone along its own direction when diseased cells get
the compound at the top dose.

Combinations. Among all compound pairs, half are drawn from the ``2 x n/2`` most non-additive ones (interaction score
``sum |both - a - b + control|`` on log1p of the first line's steady states) and half uniformly from the rest. The
first dose pair puts each member at the grid dose nearest its EC50; half of the pairs get a second, one grid step
higher for each member. Every member is also measured alone at every dose.

Features. A fingerprint-like table per compound (see ``_dose_design.compound_feature_table``): 256 bits, of which
each target gene sets 4 bits hashed from its name and 2 from its name and direction (plus 2 shared by every
inhibitor or activator), each lost with probability 0.1, plus 12 random bits; and two real descriptors, one
strongly (r ~ -0.9) and one weakly correlated with log10 EC50.

Output
------
An ``.h5ad`` file: ``X`` integer counts (float32 CSR); ``layers["clean_expression"]`` the noise-free sergio-rs
expression (``--no-clean-layer`` leaves it out). ``obs``: ``condition`` (``"control"``, ``"disease"``, ``"cmp07"``,
``"cmp03+cmp11"``), ``dose`` (µM as a string: ``"0"`` for control and disease, ``"0.1"``, ``"1+10"`` in the order of
the names), ``cell_line``, ``perturbation_type`` (``"chemical"``; ``"disease"`` for disease cells), ``n_compounds``
(0, 1, 2). ``var`` as in ``simulate_screen.py`` plus ``is_disease_regulator`` and ``n_compounds_targeting``.
``uns``: ``compounds`` (truth per compound: ``targets``, ``directions``, ``max_effects`` joined by ``;``,
``n_targets``, ``ec50``, ``hill``, ``in_combination``, ``disease_cosine``, ``disease_cosine_<line>``,
``disease_rescue``, ``reverses_disease``), ``compound_targets`` (one row per compound and target),
``compound_features`` (``index``, ``columns``, ``values``; :func:`compound_features` makes the DataFrame),
``combinations``, ``disease`` (``regulators``, ``factor``, ...), ``cell_lines`` (``name``, ``production_scale``),
``grn_edges``, ``steady_state`` (``condition``, ``dose``, ``cell_line``, ``mean``: deterministic steady state per
condition), ``conditions``, ``dose_response`` (per compound, line and dose: size of the change, measured and
deterministic, and fraction of genes moved), ``simulation`` and ``sanity_stats``.

Sanity statistics (printed, see ``_dose_screen_stats.py``): per compound and dose the fraction of genes moved; per
dose the mean change; monotonicity in dose; correlation of the changes of compounds sharing a target; the
reversers' changes against the disease shift; differences between the lines' controls; non-additivity of the
interacting vs random pairs. Measured sizes are noise-debiased (product of two independent halves of the cells).

The file goes to ``--out``, by default ``$BIOJEPA_CACHE_DIR`` (or ``~/.cache/biojepa``) /
``sergio_dose_screen_{n_genes}genes_seed{seed}.h5ad``, never into the repository; an existing file made with the same
parameters is reused (``--force`` regenerates it).

Run
---
``python benchmarks/simulate_dose_screen.py --seed 0`` (about 4 minutes on one core; 122 MiB file)
``python benchmarks/simulate_dose_screen.py --n-genes 300 --n-compounds 10 --n-combinations 4 --out /tmp/dose.h5ad``
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).parent))
import _dose_design as design
from _dose_screen_stats import dose_response, print_dose_table, print_stats, sanity_stats
from simulate_screen import (
    CONTROL,
    REGULATOR_FRACTION,
    TECHNICAL_NOISE,
    _parallel_map,
    _same,
    _seeds,
    _sergio,
    _simulate_condition,
    _stored_simulation,
    add_half_responses,
    random_grn,
    steady_state,
)

GENERATOR_VERSION = 1
DISEASE = "disease"
_REUSE_KEYS = (
    "generator_version",
    "n_genes",
    "n_compounds",
    "n_combinations",
    "n_lines",
    "cells_per_condition",
    "n_control",
    "n_disease",
    "seed",
    "clean_layer",
)


def compound_features(adata: ad.AnnData) -> pd.DataFrame:
    """The compound feature table (compounds x fingerprint bits and descriptors) of a simulated dose screen.

    Parameters
    ----------
    adata
        Output of :func:`simulate_dose_screen` (or the file it writes).

    Returns
    -------
    DataFrame indexed by compound name.
    """
    table = adata.uns["compound_features"]
    return pd.DataFrame(
        np.asarray(table["values"]),
        index=pd.Index(np.asarray(table["index"]).astype(str), name="compound"),
        columns=np.asarray(table["columns"]).astype(str),
    )


def _compound_table(targets: pd.DataFrame, names: np.ndarray, truth: pd.DataFrame, combos: pd.DataFrame):
    """Wide truth table, one row per compound."""
    kind = {-1: "inhibition", 1: "activation"}
    grouped = targets.groupby("compound", sort=True)
    table = pd.DataFrame(
        {
            "targets": grouped["target"].agg(lambda t: ";".join(names[t])),
            "directions": grouped["direction"].agg(lambda d: ";".join(kind[int(v)] for v in d)),
            "max_effects": grouped["max_effect"].agg(lambda e: ";".join(f"{v:.3f}" for v in e)),
            "n_targets": grouped.size(),
            "ec50": grouped["ec50"].first(),
            "hill": grouped["hill"].first(),
        }
    )
    table["in_combination"] = table.index.isin(pd.concat([combos["compound_a"], combos["compound_b"]]))
    table = table.join(truth)
    table.index.name = "compound"
    return table


def _conditions(compounds, combos: pd.DataFrame, lines: list[str], sizes: tuple[int, int, int]) -> list[tuple]:
    """``(line index, condition, dose label, {compound: dose}, disease?, n_cells)`` for every condition."""
    n_control, n_disease, n_cells = sizes
    out = []
    for li in range(len(lines)):
        out.append((li, CONTROL, "0", {}, False, n_control))
        out.append((li, DISEASE, "0", {}, True, n_disease))
        out.extend((li, c, f"{d:g}", {c: d}, False, n_cells) for c in compounds for d in design.DOSES)
        for row in combos.itertuples():
            out.append(
                (li, row.condition, row.dose, {row.compound_a: row.dose_a, row.compound_b: row.dose_b}, False, n_cells)
            )
    return out


def simulate_dose_screen(
    n_genes: int = 1000,
    n_compounds: int = 40,
    n_combinations: int = 15,
    n_lines: int = 3,
    cells_per_condition: int = 40,
    n_control: int = 200,
    n_disease: int = 100,
    seed: int = 0,
    clean_layer: bool = True,
    n_jobs: int = 1,
    verbose: bool = False,
) -> ad.AnnData:
    """Simulate a compound x dose screen (singles, pairs, cell lines, a disease state) on a random GRN.

    Parameters
    ----------
    n_genes
        Number of genes (``G0`` ...); a tenth of them are regulators.
    n_compounds
        Number of compounds (``cmp00`` ...), each measured alone at every dose in every line.
    n_combinations
        Number of compound pairs.
    n_lines
        Number of cell lines (``lineA`` ...).
    cells_per_condition
        Cells per compound (or pair) x dose x line.
    n_control, n_disease
        Control and disease cells per line.
    seed
        Seed of everything.
    clean_layer
        Store the noise-free expression in ``layers["clean_expression"]``.
    n_jobs
        Processes that simulate conditions in parallel.
    verbose
        Print progress.

    Returns
    -------
    AnnData with integer counts in ``X``; see the module docstring for the fields.
    """
    sergio_rs = _sergio()
    if min(n_genes, n_compounds, n_lines, cells_per_condition, n_control, n_disease) < 1 or n_combinations < 0:
        raise ValueError("Sizes must be positive (n_combinations >= 0).")
    start = time.perf_counter()
    n_regulators = min(n_genes // 2, max(10, round(REGULATOR_FRACTION * n_genes)))
    grn = add_half_responses(random_grn(n_genes, n_regulators, seed))
    names = np.array([f"G{i}" for i in range(n_genes)])
    line_names = [f"line{chr(65 + i)}" for i in range(n_lines)]
    targets = design.draw_compounds(grn, n_compounds, seed)
    compounds = sorted(targets["compound"].unique())
    lines = design.line_scales(grn, n_lines, seed)
    regulators, truth, draws = design.draw_disease(grn, targets, lines, seed)
    truth = truth.rename(columns={f"disease_cosine_line{i}": f"disease_cosine_{n}" for i, n in enumerate(line_names)})
    disease = np.ones(n_genes)
    disease[regulators] = design.DISEASE_FACTOR
    combos = design.draw_combinations(grn, targets, lines[0], n_combinations, seed)

    conditions = _conditions(compounds, combos, line_names, (n_control, n_disease, cells_per_condition))
    scales = [
        lines[li] * design.compound_scale(targets, n_genes, doses) * (disease if sick else 1.0)
        for li, _, _, doses, sick, _ in conditions
    ]
    tasks = [
        (grn, (), c[5], _seeds(seed, 15, i, n=3), s) for i, (c, s) in enumerate(zip(conditions, scales, strict=True))
    ]
    sizes = [c[5] for c in conditions]
    if verbose:
        print(
            f"network: {n_genes} genes, {grn['k'].size} interactions, {n_regulators} regulators; {n_compounds} "
            f"compounds, {len(combos)} pair doses, {n_lines} lines, {int(truth['reverses_disease'].sum())} reversers "
            f"({draws} disease draws); simulating {len(conditions)} conditions, {sum(sizes)} cells ...",
            flush=True,
        )
    blocks = _parallel_map(tasks, n_jobs) if n_jobs > 1 else [_simulate_condition(t) for t in tasks]
    clean = np.concatenate(blocks, axis=0)
    del blocks
    if verbose:
        print(f"  sergio-rs dynamics: {time.perf_counter() - start:.1f} s; adding technical noise ...", flush=True)
    counts = sergio_rs.add_technical_noise_custom(
        np.ascontiguousarray(clean.T, dtype=np.float64), **TECHNICAL_NOISE, seed=_seeds(seed, 16)[0]
    )
    X = sp.csr_matrix(counts.T.astype(np.float32))
    del counts

    cond_labels = [c[1] for c in conditions]
    dose_labels = [c[2] for c in conditions]
    line_labels = [line_names[c[0]] for c in conditions]
    n_compounds_col = [len(c[3]) for c in conditions]
    obs = pd.DataFrame(
        {
            "condition": pd.Categorical(np.repeat(cond_labels, sizes), categories=list(dict.fromkeys(cond_labels))),
            "dose": pd.Categorical(np.repeat(dose_labels, sizes)),
            "cell_line": pd.Categorical(np.repeat(line_labels, sizes), categories=line_names),
            "perturbation_type": pd.Categorical(
                np.repeat([DISEASE if c[4] else "chemical" for c in conditions], sizes)
            ),
            "n_compounds": np.repeat(n_compounds_col, sizes).astype(np.int64),
        },
        index=[f"cell{i}" for i in range(X.shape[0])],
    )
    var = pd.DataFrame(
        {
            "is_regulator": grn["is_regulator"],
            "is_master_regulator": grn["is_master"],
            "out_degree": np.bincount(grn["reg"], minlength=n_genes),
            "in_degree": np.bincount(grn["tar"], minlength=n_genes),
            "level": grn["level"],
            "is_disease_regulator": np.isin(np.arange(n_genes), regulators),
            "n_compounds_targeting": np.bincount(targets["target"], minlength=n_genes),
        },
        index=names,
    )
    compound_targets = targets.assign(target=names[targets["target"]])
    features = design.compound_feature_table(targets, names, seed)
    try:
        sergio_version = version("sergio-rs")
    except PackageNotFoundError:  # pragma: no cover
        sergio_version = "unknown"
    simulation = {
        "generator": "benchmarks/simulate_dose_screen.py",
        "generator_version": GENERATOR_VERSION,
        "n_genes": n_genes,
        "n_compounds": n_compounds,
        "n_combinations": n_combinations,
        "n_lines": n_lines,
        "cells_per_condition": cells_per_condition,
        "n_control": n_control,
        "n_disease": n_disease,
        "seed": seed,
        "clean_layer": bool(clean_layer),
        "sergio_rs_version": sergio_version,
        "n_regulators": n_regulators,
        "n_interactions": int(grn["k"].size),
        "doses": np.array(design.DOSES),
        "ec50_range": np.array(design.EC50_RANGE),
        "hill_range": np.array(design.HILL_RANGE),
        "p_inhibition": design.P_INHIBITION,
        "inhibition_range": np.array(design.INHIBITION_RANGE),
        "activation_range": np.array(design.ACTIVATION_RANGE),
        "line_sd": design.LINE_SD,
        "technical_noise": dict(TECHNICAL_NOISE),
        "network": "see benchmarks/simulate_screen.py (same generator, same seed convention)",
        "simulate_seconds": round(time.perf_counter() - start, 2),
    }
    adata = ad.AnnData(
        X=X,
        obs=obs,
        var=var,
        uns={
            "compounds": _compound_table(targets, names, truth, combos),
            "compound_targets": compound_targets,
            "compound_features": {
                "index": features.index.to_numpy().astype(str),
                "columns": features.columns.to_numpy().astype(str),
                "values": features.to_numpy(np.float32),
            },
            "combinations": combos,
            "disease": {
                "regulators": names[regulators],
                "factor": design.DISEASE_FACTOR,
                "reverser_cosine": design.REVERSER_COSINE,
                "reversers_range": np.array(design.REVERSERS_RANGE),
                "draws": draws,
            },
            "cell_lines": {"name": np.array(line_names), "production_scale": lines.astype(np.float32)},
            "grn_edges": pd.DataFrame(
                {"regulator": names[grn["reg"]], "target": names[grn["tar"]], "k": grn["k"], "h": grn["h"]}
            ),
            "steady_state": {
                "condition": np.array(cond_labels),
                "dose": np.array(dose_labels),
                "cell_line": np.array(line_labels),
                "mean": np.stack([steady_state(grn, (), s) for s in scales]).astype(np.float32),
            },
            "conditions": pd.DataFrame(
                {
                    "condition": cond_labels,
                    "dose": dose_labels,
                    "cell_line": line_labels,
                    "n_compounds": n_compounds_col,
                    "n_cells": sizes,
                }
            ),
            "simulation": simulation,
        },
    )
    if clean_layer:
        adata.layers["clean_expression"] = clean
    adata.uns["dose_response"] = dose_response(adata)
    adata.uns["sanity_stats"] = sanity_stats(adata)
    return adata


def default_out(n_genes: int, seed: int) -> Path:
    """``$BIOJEPA_CACHE_DIR`` (or ``~/.cache/biojepa``) / ``sergio_dose_screen_{n_genes}genes_seed{seed}.h5ad``."""
    from biojepa.datasets._load import cache_dir

    return cache_dir() / f"sergio_dose_screen_{n_genes}genes_seed{seed}.h5ad"


def main(argv: list[str] | None = None) -> Path:
    """Command line: generate (or reuse) the dose screen and print where it went, how long it took and sanity stats."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-genes", type=int, default=1000)
    parser.add_argument("--n-compounds", type=int, default=40)
    parser.add_argument("--n-combinations", type=int, default=15)
    parser.add_argument("--n-lines", type=int, default=3)
    parser.add_argument("--cells-per-condition", type=int, default=40)
    parser.add_argument("--n-control", type=int, default=200)
    parser.add_argument("--n-disease", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="output .h5ad (default: see module docstring)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the output exists")
    parser.add_argument("--no-clean-layer", action="store_true", help="leave out layers['clean_expression']")
    parser.add_argument("--n-jobs", type=int, default=1, help="processes simulating conditions in parallel")
    args = parser.parse_args(argv)

    out = (args.out or default_out(args.n_genes, args.seed)).expanduser().resolve()
    params = {key: getattr(args, key) for key in _REUSE_KEYS if hasattr(args, key)}
    params.update(generator_version=GENERATOR_VERSION, clean_layer=not args.no_clean_layer)
    if out.exists() and not args.force:
        stored = _stored_simulation(out)
        if stored is not None and all(_same(stored.get(key), params[key]) for key in _REUSE_KEYS):
            print(f"Reusing {out} (same parameters; --force to regenerate).")
            print_dose_table(_stored_uns(out, "dose_response"))
            print_stats(stored["_sanity_stats"])
            return out
        print(f"{out} exists with other parameters; regenerating.")

    start = time.perf_counter()
    kwargs = {key: params[key] for key in _REUSE_KEYS if key != "generator_version"}
    adata = simulate_dose_screen(**kwargs, n_jobs=args.n_jobs, verbose=True)
    t_sim = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    adata.write_h5ad(tmp, compression="gzip")
    os.replace(tmp, out)
    print(
        f"Wrote {out} ({out.stat().st_size / 2**20:.0f} MiB): {adata.n_obs} cells x {adata.n_vars} genes, "
        f"{len(adata.uns['conditions'])} conditions; simulated in {t_sim:.1f} s, "
        f"{time.perf_counter() - start:.1f} s in all."
    )
    print_dose_table(adata.uns["dose_response"])
    print_stats(adata.uns["sanity_stats"])
    return out


def _stored_uns(path: Path, key: str):
    """One ``uns`` element of an existing file, without reading the matrices."""
    import h5py

    with h5py.File(path, "r") as f:
        return (ad.io.read_elem if hasattr(ad, "io") else ad.experimental.read_elem)(f[f"uns/{key}"])


if __name__ == "__main__":
    main()
