"""Simulated Perturb-seq screen with a known gene regulatory network (sergio-rs), for the perturbation benchmark.

What it generates
-----------------
A deterministic (fixed seeds) single + double knockout screen on a random gene regulatory network (GRN), simulated
with the SERGIO stochastic differential equations of the Rust re-implementation ``sergio-rs`` (PyPI ``sergio-rs``,
GPL-3; ``pip install 'biojepa[bench]'``). The network is the ground truth for the benchmark's held-out doubles and
held-out singles. Defaults: 2,000 genes, 120 single and 120 double knockouts (every double's two members are also
among the singles, so an additive baseline is defined), 120 cells per knockout and 1,000 control cells
(29,800 cells in all).

Network. sergio-rs 0.2.3 has no GRN generator, so a random sparse DAG is drawn here: genes ``G0`` ... get a random
topological order; 10 % of them (at least 1.5 x ``n_singles``, at most half) are regulators, the first fifth of
which (in that order) are master regulators with no regulatory input; every other gene gets 1-4 regulators from
the regulators upstream of it, picked with heavy-tailed (Pareto) weights so that some regulators are hubs; every
regulator gets at least one target. Interactions are activating with probability 0.7, ``|k| ~ U(1, 5)``, Hill
coefficient 2; every gene also has a basal production rate (``U(2, 4)`` for master regulators, ``U(0.2, 1)``
otherwise), and each gene's basal rate and incoming ``k`` are multiplied by a per-gene log-normal scale (sd 0.5)
so that expression levels spread. Decay is 0.8 for all genes, as in SERGIO.

Knockouts. sergio-rs has ``GRN.ko_perturbation``, but it is not used: in 0.2.3 it re-draws the master regulators'
production rates (the non-knocked-out genes' levels change too; checked on a 6-gene network), and sergio-rs
ignores the ``h`` (half-response) argument of ``add_interaction``: it always sets ``h`` to the regulator's steady
state *in the simulated network*. With a knocked-out network that re-anchors every downstream Hill function at its
half-maximum, so a knockout would move only its direct targets' means and never propagate. Instead:

* Every gene's basal production is an interaction from one auxiliary, always-on master regulator (``SOURCE``, the
  only master regulator sergio-rs sees; its production rate is 200 so it fluctuates little). At steady state a
  sergio-rs Hill term equals ``|k| / 2``, so an interaction of strength ``2 b`` gives basal rate ``b``. ``SOURCE`` is
  dropped from the output.
* Half-responses are fixed at the control network's steady state (SERGIO's convention, ``h`` = regulator's
  steady-state level), for control and knockouts alike. For a set ``S`` of knocked-out genes, the deterministic
  steady state of the knocked-out network is computed here (genes in ``S`` at 0, others in topological order with
  the fixed ``h``), and each remaining interaction is given to sergio-rs with strength ``k' = sign(k) * 2 * f``,
  where ``f`` is its Hill term at that steady state: sergio-rs then reproduces the knocked-out steady state exactly
  (knockout effects propagate through the network, doubles interact through shared targets and saturation), and
  simulates the SERGIO noise around it.
* A knocked-out gene loses all of its interactions and its basal rate is 0, so its expression is exactly 0. Its
  targets lose its input: an activator contributes 0, a repressor its full ``|k|`` (the Hill term at regulator level
  0), which is moved into the target's basal rate. The set of genes and the master regulator stay the same, so the
  one random master-regulator profile is shared by every condition.

Design. The singles are regulators drawn with probability proportional to their number of targets. Half of the
doubles are drawn from the ``2 x n_doubles / 2`` pairs of singles with the largest genetic interaction
(:func:`interaction_score`: summed ``|double - single a - single b + control|`` over genes, on log1p of the
deterministic steady state), the other half uniformly from the remaining pairs: in a sparse network most random
pairs act on disjoint genes and are additive to within 1 %, so without this the doubles would test little beyond
the additive baseline. ``uns["conditions"]`` records each double's score and how it was picked.

Cells. Each condition is simulated as independent SERGIO trajectories (sergio-rs "cell types" with identical
parameters), each started at the steady state, run for 150 burn-in steps and sampled at 4 distinct random time
points within 100 further steps (``dt = 0.01``, ``noise_s = 1``); more trajectories with fewer cells each keep
cells of a condition from being near-copies of one another. Counts come from sergio-rs' technical-noise model
applied once to the whole screen (``add_technical_noise_custom``: outlier genes with ``outlier_mu = 1``, log-normal
library sizes with ``library_mu = 8`` and ``library_sigma = 0.3``, i.e. ~2,800 counts per cell, dropout with
``k = 8``, ``q = 45``, Poisson sampling).

Output
------
An ``.h5ad`` file: ``X`` integer counts (float32 CSR, integer-valued); ``layers["clean_expression"]`` the noise-free
sergio-rs expression (dense float32, ~240 MB in memory at the defaults; ``--no-clean-layer`` leaves it out);
``obs["perturbation"]`` ``"control"`` / ``"G12"`` / ``"G12+G40"`` (members sorted as strings and joined by ``+``,
like :func:`biojepa.perturbation.canonical_label`), ``obs["n_targets"]`` (0, 1 or 2 knocked-out genes);
``var_names`` ``G0`` ... with ``var["is_regulator"]``, ``var["is_master_regulator"]``, ``var["out_degree"]``,
``var["in_degree"]``, ``var["level"]`` (topological depth); ``uns["grn_edges"]`` the true network, a DataFrame
with ``regulator``, ``target``, ``k`` (signed strength: > 0 activation, < 0 repression) and ``h`` (half-response);
``uns["steady_state"]`` the deterministic steady state of every condition (``perturbation`` labels and a
``mean`` array, conditions x genes, before technical noise); ``uns["conditions"]`` one row per condition
(``n_targets``, ``n_cells``, ``interaction_score``, ``interacting_pick``); ``uns["simulation"]`` the parameters
and seed; ``uns["sanity_stats"]`` the numbers printed at the end.

The file goes to ``--out``, by default ``$BIOJEPA_CACHE_DIR`` (or ``~/.cache/biojepa``) /
``sergio_screen_{n_genes}genes_seed{seed}.h5ad``, never into the repository. An existing file made with the same
parameters is reused (``--force`` regenerates it). ``--n-jobs 2`` simulates conditions in two processes.

Sanity statistics (printed): fraction of nonzero counts, mean library size, and the mean ``|delta|`` of
log1p(CP10k) condition means vs control over the knocked-out genes' direct targets, their indirect descendants
and all other genes (direct targets should move most, unaffected genes least), the mean interaction score of the
two halves of the doubles, and the knocked-out genes' mean count in their own knockout cells vs in control cells.

Run
---
``python benchmarks/simulate_screen.py`` (defaults: ~4 min on one core, ~2.5 min with ``--n-jobs 2``; 254 MB file)
``python benchmarks/simulate_screen.py --n-genes 500 --n-singles 20 --n-doubles 20 --out /tmp/screen.h5ad``
"""

from __future__ import annotations

import argparse
import importlib
import math
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

GENERATOR_VERSION = 1
CONTROL = "control"

# Network
REGULATOR_FRACTION = 0.1  # fraction of genes that are regulators
MASTER_FRACTION = 0.2  # fraction of regulators that are master regulators
REGULATOR_SPAN = 0.6  # regulators sit in the first 60 % of the topological order
P_ACTIVATION = 0.7
K_RANGE = (1.0, 5.0)
BASAL_MASTER = (2.0, 4.0)
BASAL_OTHER = (0.2, 1.0)
GENE_SCALE_SD = 0.5
DECAY = 0.8
HILL_N = 2

# sergio-rs dynamics
SOURCE = "SOURCE"  # auxiliary always-on master regulator carrying every gene's basal production
SOURCE_RATE = 200.0
DT = 0.01
NOISE_S = 1.0
SAFETY_ITER = 150
CELLS_PER_TRAJECTORY = 4
DRAWS_PER_TRAJECTORY = 8  # time points drawn per trajectory (with replacement) to pick CELLS_PER_TRAJECTORY distinct
TRAJECTORY_SPAN = 100  # steps after burn-in that a trajectory's cells are drawn from

# sergio-rs technical noise (add_technical_noise_custom)
TECHNICAL_NOISE = {"outlier_mu": 1.0, "library_mu": 8.0, "library_sigma": 0.3, "dropout_k": 8.0, "dropout_q": 45.0}

# uns["simulation"] keys that must match for an existing file to be reused
_REUSE_KEYS = (
    "generator_version",
    "n_genes",
    "n_singles",
    "n_doubles",
    "cells_per_condition",
    "n_control",
    "seed",
    "clean_layer",
)


def _sergio():
    try:
        import sergio_rs
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "benchmarks/simulate_screen.py needs sergio-rs: pip install sergio-rs (or 'biojepa[bench]')."
        ) from err
    return sergio_rs


def _seeds(seed: int, *key: int, n: int = 1) -> list[int]:
    """``n`` independent 63-bit seeds derived from ``(seed, *key)``."""
    state = np.random.SeedSequence([seed, *key]).generate_state(n, dtype=np.uint64)
    return [int(s >> np.uint64(1)) for s in state]


# ---------------------------------------------------------------------------------------------------------------
# Network
# ---------------------------------------------------------------------------------------------------------------


def random_grn(n_genes: int, n_regulators: int, seed: int) -> dict[str, np.ndarray]:
    """Random sparse DAG with master regulators, hub regulators, signed Hill interactions and basal rates.

    Parameters
    ----------
    n_genes
        Number of genes.
    n_regulators
        Number of regulators (genes with targets).
    seed
        Random seed.

    Returns
    -------
    Dict of arrays: ``reg``, ``tar`` (gene indices), ``k`` (signed strength) per interaction; ``basal``,
    ``is_regulator``, ``is_master``, ``level`` per gene. Interactions are sorted by target level.
    """
    rng = np.random.default_rng(_seeds(seed, 0)[0])
    order = rng.permutation(n_genes)  # order[p]: gene at topological position p
    n_master = max(2, round(MASTER_FRACTION * n_regulators))
    span = max(n_regulators, int(REGULATOR_SPAN * n_genes))
    reg_pos = np.r_[np.arange(n_master), np.sort(rng.choice(np.arange(n_master, span), n_regulators - n_master, False))]
    is_regulator = np.zeros(n_genes, bool)
    is_regulator[order[reg_pos]] = True
    is_master = np.zeros(n_genes, bool)
    is_master[order[:n_master]] = True
    weight = rng.pareto(1.2, n_regulators) + 1.0  # hubs

    regs, tars = [], []
    for p in range(n_master, n_genes):
        n_up = int(np.searchsorted(reg_pos, p))  # regulators upstream of position p
        m = min(n_up, 1 + min(rng.poisson(1.0), 3))
        w = weight[:n_up] / weight[:n_up].sum()
        regs.extend(order[reg_pos[rng.choice(n_up, m, replace=False, p=w)]])
        tars.extend([order[p]] * m)
    regs, tars = np.array(regs, dtype=np.int64), np.array(tars, dtype=np.int64)
    # every regulator gets at least one target (downstream of it)
    out_degree = np.bincount(regs, minlength=n_genes)
    extra_r, extra_t = [], []
    for p in reg_pos:
        gene = order[p]
        if out_degree[gene] == 0:
            extra_r.append(gene)
            extra_t.append(order[rng.integers(max(p + 1, n_master), n_genes)])
    regs, tars = np.r_[regs, extra_r].astype(np.int64), np.r_[tars, extra_t].astype(np.int64)

    sign = np.where(rng.random(regs.size) < P_ACTIVATION, 1.0, -1.0)
    k = sign * rng.uniform(*K_RANGE, regs.size)
    basal = np.where(is_master, rng.uniform(*BASAL_MASTER, n_genes), rng.uniform(*BASAL_OTHER, n_genes))
    scale = rng.lognormal(0.0, GENE_SCALE_SD, n_genes)
    basal *= scale
    k *= scale[tars]

    level = np.zeros(n_genes, dtype=np.int64)
    by_target = np.argsort(np.argsort(order)[tars], kind="stable")  # interactions in topological order of targets
    for r, t in zip(regs[by_target], tars[by_target], strict=True):
        level[t] = max(level[t], level[r] + 1)
    sort = np.lexsort((regs, tars, level[tars]))
    return {
        "reg": regs[sort],
        "tar": tars[sort],
        "k": k[sort],
        "basal": basal,
        "is_regulator": is_regulator,
        "is_master": is_master,
        "level": level,
    }


def add_half_responses(grn: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Set ``grn["h"]``: every interaction's half-response at its regulator's control steady state (SERGIO's rule).

    At that steady state every Hill term equals ``|k| / 2``, so it is ``(basal + sum of |k| / 2) / decay``.

    Parameters
    ----------
    grn
        Network from :func:`random_grn`; modified in place.

    Returns
    -------
    The same dict, for chaining.
    """
    n = grn["basal"].size
    x_control = (grn["basal"] + np.bincount(grn["tar"], np.abs(grn["k"]) / 2, minlength=n)) / DECAY
    grn["h"] = x_control[grn["reg"]]
    return grn


def _hill(x: np.ndarray, k: np.ndarray, h: np.ndarray) -> np.ndarray:
    """SERGIO Hill term: ``k x^n / (x^n + h^n)`` for activation, ``|k| h^n / (x^n + h^n)`` for repression."""
    xn, hn = x**HILL_N, h**HILL_N
    frac = np.divide(xn, xn + hn, out=np.zeros_like(xn), where=(xn + hn) > 0)
    return np.where(k > 0, k * frac, -k * (1.0 - frac))


def steady_state(grn: dict[str, np.ndarray], knocked_out=(), production_scale: np.ndarray | None = None) -> np.ndarray:
    """Deterministic steady state with half-responses fixed at the control network's (``grn["h"]``).

    Parameters
    ----------
    grn
        Network from :func:`random_grn` with ``h`` added.
    knocked_out
        Indices of knocked-out genes (held at 0).
    production_scale
        Optional per-gene factor (>= 0) on each gene's whole production (basal rate plus incoming Hill terms):
        a partial knockdown (< 1) or over-activation (> 1). ``None`` is a factor of 1 everywhere.

    Returns
    -------
    Steady-state expression of every gene.
    """
    n = grn["basal"].size
    ko = np.zeros(n, bool)
    ko[list(knocked_out)] = True
    x = np.zeros(n)
    tar_level = grn["level"][grn["tar"]]
    bounds = np.searchsorted(tar_level, np.arange(grn["level"].max() + 2))
    for lev in range(grn["level"].max() + 1):
        e = slice(bounds[lev], bounds[lev + 1])
        prod = grn["basal"].copy()
        prod += np.bincount(grn["tar"][e], _hill(x[grn["reg"][e]], grn["k"][e], grn["h"][e]), minlength=n)
        genes = (grn["level"] == lev) & ~ko
        if production_scale is not None:
            prod *= production_scale
        x[genes] = prod[genes] / DECAY
    return x


def _condition_network(
    grn: dict[str, np.ndarray], knocked_out, production_scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Effective basal rates and interaction strengths that make sergio-rs reproduce the knockout steady state.

    ``production_scale`` (optional, per gene) multiplies each gene's basal rate and incoming strengths, as in
    :func:`steady_state`. Returns ``basal`` (per gene), ``keep`` (mask of interactions passed to sergio-rs) and
    ``k_eff`` (their strength).
    """
    n = grn["basal"].size
    ko = np.zeros(n, bool)
    ko[list(knocked_out)] = True
    x = steady_state(grn, knocked_out, production_scale)
    f = _hill(x[grn["reg"]], grn["k"], grn["h"])
    basal = grn["basal"].copy()
    lost = ko[grn["reg"]] & ~ko[grn["tar"]]  # input from a knocked-out regulator: constant (0 or |k|)
    basal += np.bincount(grn["tar"][lost], f[lost], minlength=n)
    basal[ko] = 0.0
    keep = ~ko[grn["reg"]] & ~ko[grn["tar"]]
    if production_scale is not None:
        basal *= production_scale
        f = f * production_scale[grn["tar"]]
    return basal, keep, np.sign(grn["k"]) * 2.0 * f


def _simulate_condition(task: tuple) -> np.ndarray:
    """Clean sergio-rs expression (cells x genes, float32) of one condition.

    ``task`` is ``(grn, knocked_out, n_cells, seeds)`` or ``(grn, knocked_out, n_cells, seeds, production_scale)``.
    """
    grn, knocked_out, n_cells, seeds, *rest = task
    sergio_rs = _sergio()
    n = grn["basal"].size
    names = [f"G{i}" for i in range(n)]
    basal, keep, k_eff = _condition_network(grn, knocked_out, rest[0] if rest else None)
    net = sergio_rs.GRN()
    source = sergio_rs.Gene(name=SOURCE, decay=DECAY)
    for i in range(n):  # basal production first: fixes the gene order inside sergio-rs
        gene = sergio_rs.Gene(name=names[i], decay=DECAY)
        net.add_interaction(reg=source, tar=gene, k=float(2.0 * basal[i]), h=None, n=HILL_N)
    for r, t, k in zip(grn["reg"][keep], grn["tar"][keep], k_eff[keep], strict=True):
        net.add_interaction(
            reg=sergio_rs.Gene(name=names[r], decay=DECAY),
            tar=sergio_rs.Gene(name=names[t], decay=DECAY),
            k=float(k),
            h=None,
            n=HILL_N,
        )
    net.set_mrs()
    n_traj = math.ceil(n_cells / CELLS_PER_TRAJECTORY)
    profile = sergio_rs.MrProfile.from_random(
        net,
        num_cell_types=n_traj,
        low_range=(SOURCE_RATE, SOURCE_RATE + 1e-3),
        high_range=(SOURCE_RATE + 2e-3, SOURCE_RATE + 3e-3),
        seed=seeds[0],
    )
    sim = sergio_rs.Sim(
        net,
        num_cells=DRAWS_PER_TRAJECTORY,
        safety_iter=SAFETY_ITER,
        scale_iter=TRAJECTORY_SPAN // DRAWS_PER_TRAJECTORY,
        dt=DT,
        noise_s=NOISE_S,
        seed=seeds[1],
    )
    df = sim.simulate(profile)
    row = {name: i for i, name in enumerate(df["Genes"].to_list())}
    expr = df.drop("Genes").to_numpy()[[row[name] for name in names]]  # genes x (n_traj * draws), trajectory-major
    rng = np.random.default_rng(seeds[2])
    cells = []
    for t in range(n_traj):
        block = expr[:, t * DRAWS_PER_TRAJECTORY : (t + 1) * DRAWS_PER_TRAJECTORY]
        _, first = np.unique(block, axis=1, return_index=True)  # identical columns = same time point
        pick = rng.permutation(np.sort(first))[:CELLS_PER_TRAJECTORY]
        if pick.size < CELLS_PER_TRAJECTORY:  # pragma: no cover - needs 5+ collisions among 8 draws
            pick = np.r_[pick, rng.choice(DRAWS_PER_TRAJECTORY, CELLS_PER_TRAJECTORY - pick.size)]
        cells.append(block[:, np.sort(pick)])
    out = np.concatenate(cells, axis=1)[:, :n_cells].T.astype(np.float32)
    out[:, list(knocked_out)] = 0.0  # already 0 (no production); guards against round-off
    return out


def _parallel_map(tasks: list, n_jobs: int) -> list:
    """:func:`_simulate_condition` over ``tasks`` in ``n_jobs`` spawned processes, in order.

    Spawned, not forked: forking after sergio-rs (polars) has run in this process can deadlock the workers. The workers
    import this file as the module ``simulate_screen`` from its directory, whatever name it was loaded under here.
    """
    here = str(Path(__file__).resolve().parent)
    added = here not in sys.path
    if added:
        sys.path.insert(0, here)
    try:
        worker = importlib.import_module(Path(__file__).stem)._simulate_condition
        with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            return list(pool.map(worker, tasks, chunksize=4))
    finally:
        if added:
            sys.path.remove(here)


# ---------------------------------------------------------------------------------------------------------------
# Screen
# ---------------------------------------------------------------------------------------------------------------


def interaction_score(grn: dict[str, np.ndarray], a: int, b: int, log_ss: dict | None = None) -> float:
    """Non-additivity of the double knockout ``a + b``: ``sum |double - (single a + single b - control)|``.

    Over all genes but ``a`` and ``b``, on log1p of the deterministic steady state (no noise).

    Parameters
    ----------
    grn
        Network from :func:`random_grn` with ``h``.
    a, b
        Knocked-out genes.
    log_ss
        Cache of log1p steady states keyed by knockout tuple (``()`` = control); filled as needed.

    Returns
    -------
    The score (0 for an exactly additive pair).
    """
    log_ss = {} if log_ss is None else log_ss
    for ko in ((), (a,), (b,)):
        if ko not in log_ss:
            log_ss[ko] = np.log1p(steady_state(grn, ko))
    dev = np.abs(np.log1p(steady_state(grn, (a, b))) - log_ss[(a,)] - log_ss[(b,)] + log_ss[()])
    dev[[a, b]] = 0.0
    return float(dev.sum())


def _choose_knockouts(grn, n_singles: int, n_doubles: int, seed: int) -> tuple[list[int], list[tuple], dict]:
    """Singles among regulators (weighted by out-degree); doubles among singles, half of them interacting pairs.

    Returns the singles, the doubles (sorted) and every double's :func:`interaction_score` and whether it was picked
    as an interacting pair.
    """
    rng = np.random.default_rng(_seeds(seed, 1)[0])
    n = grn["basal"].size
    out_degree = np.bincount(grn["reg"], minlength=n)
    candidates = np.flatnonzero(out_degree > 0)
    if n_singles > candidates.size:
        raise ValueError(f"n_singles={n_singles} exceeds the {candidates.size} regulators of the network.")
    if n_doubles > n_singles * (n_singles - 1) // 2:
        raise ValueError(f"n_doubles={n_doubles} exceeds the {n_singles * (n_singles - 1) // 2} pairs of singles.")
    w = out_degree[candidates] / out_degree[candidates].sum()
    singles = sorted(int(g) for g in rng.choice(candidates, n_singles, replace=False, p=w))
    pairs = [(a, b) for i, a in enumerate(singles) for b in singles[i + 1 :]]
    log_ss: dict = {}
    score = {pair: interaction_score(grn, *pair, log_ss=log_ss) for pair in pairs}
    # half of the doubles: drawn from the 2 x n_interacting most non-additive pairs; the rest uniformly
    n_interacting = n_doubles // 2
    ranked = sorted((p for p in pairs if score[p] > 0), key=lambda p: -score[p])[: 2 * n_interacting]
    n_interacting = min(n_interacting, len(ranked))
    interacting = [ranked[i] for i in rng.choice(len(ranked), n_interacting, replace=False)] if n_interacting else []
    rest = sorted(set(pairs) - set(interacting))
    doubles = interacting + [rest[i] for i in rng.choice(len(rest), n_doubles - n_interacting, replace=False)]
    info = {pair: (score[pair], pair in set(interacting)) for pair in doubles}
    return singles, sorted(doubles), info


def _label(genes, names) -> str:
    return "+".join(sorted(names[g] for g in genes)) if len(genes) else CONTROL


def simulate_screen(
    n_genes: int = 2000,
    n_singles: int = 120,
    n_doubles: int = 120,
    cells_per_condition: int = 120,
    n_control: int = 1000,
    seed: int = 0,
    clean_layer: bool = True,
    n_jobs: int = 1,
    verbose: bool = False,
) -> ad.AnnData:
    """Simulate a single + double knockout Perturb-seq screen on a random GRN with sergio-rs.

    Parameters
    ----------
    n_genes
        Number of genes (``G0`` ... ``G{n_genes - 1}``).
    n_singles
        Number of single knockouts (regulators).
    n_doubles
        Number of double knockouts; both members of every double are among the singles.
    cells_per_condition
        Cells per knockout condition.
    n_control
        Control cells.
    seed
        Seed of everything (network, knockouts, dynamics, technical noise).
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
    if min(n_genes, n_singles, cells_per_condition, n_control) < 1 or n_doubles < 0:
        raise ValueError("n_genes, n_singles, cells_per_condition and n_control must be positive; n_doubles >= 0.")
    start = time.perf_counter()
    n_regulators = min(n_genes // 2, max(round(REGULATOR_FRACTION * n_genes), math.ceil(1.5 * n_singles)))
    if n_regulators < max(3, n_singles):
        raise ValueError(f"n_genes={n_genes} is too small for n_singles={n_singles}.")
    grn = random_grn(n_genes, n_regulators, seed)
    names = np.array([f"G{i}" for i in range(n_genes)])
    add_half_responses(grn)
    singles, doubles, double_info = _choose_knockouts(grn, n_singles, n_doubles, seed)

    conditions = [(), *((g,) for g in singles), *doubles]
    sizes = [n_control] + [cells_per_condition] * (len(conditions) - 1)
    tasks = [
        (grn, ko, size, _seeds(seed, 2, i, n=3)) for i, (ko, size) in enumerate(zip(conditions, sizes, strict=True))
    ]
    if verbose:
        print(
            f"network: {n_genes} genes, {grn['k'].size} interactions, {n_regulators} regulators "
            f"({int(grn['is_master'].sum())} master), depth {int(grn['level'].max())}; "
            f"simulating {len(conditions)} conditions, {sum(sizes)} cells ...",
            flush=True,
        )
    if n_jobs > 1:
        blocks = _parallel_map(tasks, n_jobs)
    else:
        blocks = [_simulate_condition(task) for task in tasks]
    clean = np.concatenate(blocks, axis=0)
    del blocks
    t_sim = time.perf_counter() - start
    if verbose:
        print(f"  sergio-rs dynamics: {t_sim:.1f} s; adding technical noise ...", flush=True)

    counts = sergio_rs.add_technical_noise_custom(
        np.ascontiguousarray(clean.T, dtype=np.float64), **TECHNICAL_NOISE, seed=_seeds(seed, 3)[0]
    )
    X = sp.csr_matrix(counts.T.astype(np.float32))
    del counts

    labels = [_label(ko, names) for ko in conditions]
    obs = pd.DataFrame(
        {
            "perturbation": pd.Categorical(np.repeat(labels, sizes), categories=labels),
            "n_targets": np.repeat([len(ko) for ko in conditions], sizes).astype(np.int64),
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
        },
        index=names,
    )
    edges = pd.DataFrame({"regulator": names[grn["reg"]], "target": names[grn["tar"]], "k": grn["k"], "h": grn["h"]})
    steady = np.stack([steady_state(grn, ko) for ko in conditions]).astype(np.float32)
    condition_table = pd.DataFrame(
        {
            "n_targets": [len(ko) for ko in conditions],
            "n_cells": sizes,
            "interaction_score": [double_info[ko][0] if len(ko) == 2 else np.nan for ko in conditions],
            "interacting_pick": [bool(double_info[ko][1]) if len(ko) == 2 else False for ko in conditions],
        },
        index=pd.Index(labels, name="perturbation"),
    )
    try:
        sergio_version = version("sergio-rs")
    except PackageNotFoundError:  # pragma: no cover
        sergio_version = "unknown"
    simulation = {
        "generator": "benchmarks/simulate_screen.py",
        "generator_version": GENERATOR_VERSION,
        "n_genes": n_genes,
        "n_singles": n_singles,
        "n_doubles": n_doubles,
        "cells_per_condition": cells_per_condition,
        "n_control": n_control,
        "seed": seed,
        "clean_layer": bool(clean_layer),
        "sergio_rs_version": sergio_version,
        "n_regulators": n_regulators,
        "n_master_regulators": int(grn["is_master"].sum()),
        "n_interactions": int(grn["k"].size),
        "p_activation": P_ACTIVATION,
        "k_range": np.array(K_RANGE),
        "basal_master": np.array(BASAL_MASTER),
        "basal_other": np.array(BASAL_OTHER),
        "gene_scale_sd": GENE_SCALE_SD,
        "decay": DECAY,
        "hill_n": HILL_N,
        "source_rate": SOURCE_RATE,
        "dt": DT,
        "noise_s": NOISE_S,
        "safety_iter": SAFETY_ITER,
        "cells_per_trajectory": CELLS_PER_TRAJECTORY,
        "trajectory_span": TRAJECTORY_SPAN,
        "technical_noise": dict(TECHNICAL_NOISE),
        "knockout": "gene's interactions removed and basal rate 0; its targets get its Hill term at level 0; "
        "half-responses fixed at the control steady state (see benchmarks/simulate_screen.py)",
        "simulate_seconds": round(time.perf_counter() - start, 2),
    }
    adata = ad.AnnData(
        X=X,
        obs=obs,
        var=var,
        uns={
            "grn_edges": edges,
            "steady_state": {"perturbation": np.array(labels), "mean": steady},
            "conditions": condition_table,
            "simulation": simulation,
        },
    )
    if clean_layer:
        adata.layers["clean_expression"] = clean
    adata.uns["sanity_stats"] = sanity_stats(adata)
    return adata


# ---------------------------------------------------------------------------------------------------------------
# Sanity statistics
# ---------------------------------------------------------------------------------------------------------------


def _condition_means(adata: ad.AnnData) -> pd.DataFrame:
    """Mean log1p(CP10k) per condition (conditions x genes)."""
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    lib = np.asarray(X.sum(axis=1)).ravel()
    norm = sp.diags(1e4 / np.maximum(lib, 1.0)) @ X
    norm.data = np.log1p(norm.data)
    codes = adata.obs["perturbation"].cat.codes.to_numpy()
    cats = adata.obs["perturbation"].cat.categories
    onehot = sp.csr_matrix((np.ones(codes.size), (codes, np.arange(codes.size))), shape=(len(cats), codes.size))
    sums = np.asarray((onehot @ norm).todense())
    return pd.DataFrame(sums / np.bincount(codes, minlength=len(cats))[:, None], index=cats, columns=adata.var_names)


def sanity_stats(adata: ad.AnnData) -> dict[str, float]:
    """Sparsity, library size and mean ``|delta|`` vs control of direct targets / descendants / other genes.

    Parameters
    ----------
    adata
        Output of :func:`simulate_screen`.

    Returns
    -------
    Dict of the statistics (also stored in ``uns["sanity_stats"]``).
    """
    X = adata.X
    names = adata.var_names
    index = {g: i for i, g in enumerate(names)}
    edges = adata.uns["grn_edges"]
    reg = np.array([index[g] for g in edges["regulator"]])
    tar = np.array([index[g] for g in edges["target"]])
    children = [[] for _ in names]
    for r, t in zip(reg, tar, strict=True):
        children[r].append(t)

    def descendants(genes) -> set[int]:
        seen, stack = set(), [c for g in genes for c in children[g]]
        while stack:
            g = stack.pop()
            if g not in seen:
                seen.add(g)
                stack.extend(children[g])
        return seen

    means = _condition_means(adata)
    delta = (means - means.loc[CONTROL]).abs()
    rows = {"single": [], "double": []}
    for label in means.index:
        if label == CONTROL:
            continue
        ko = [index[g] for g in label.split("+")]
        direct = {c for g in ko for c in children[g]} - set(ko)
        indirect = descendants(ko) - direct - set(ko)
        other = set(range(len(names))) - direct - indirect - set(ko)
        d = delta.loc[label].to_numpy()
        rows["single" if len(ko) == 1 else "double"].append(
            [d[sorted(s)].mean() if s else np.nan for s in (direct, indirect, other)]
        )
    stats = {
        "fraction_nonzero": float(X.nnz / (X.shape[0] * X.shape[1])),
        "mean_library_size": float(X.sum() / X.shape[0]),
    }
    for kind, values in rows.items():
        if values:
            v = np.nanmean(np.array(values, dtype=float), axis=0)
            stats.update(
                {
                    f"{kind}_mean_abs_delta_direct_targets": float(v[0]),
                    f"{kind}_mean_abs_delta_indirect_descendants": float(v[1]),
                    f"{kind}_mean_abs_delta_other_genes": float(v[2]),
                }
            )
    table = adata.uns.get("conditions")
    if table is not None and (table["n_targets"] == 2).any():
        doubles = table[table["n_targets"] == 2]
        picked = doubles["interacting_pick"].astype(bool)
        for name, rows in (("interacting", doubles[picked]), ("random", doubles[~picked])):
            if len(rows):
                stats[f"double_interaction_score_{name}_picks"] = float(rows["interaction_score"].mean())
    ko_cells = adata.obs["n_targets"].to_numpy() == 1
    if ko_cells.any():
        own = np.array([index[g] for g in adata.obs["perturbation"][ko_cells].astype(str)])
        ctrl = adata.obs["perturbation"].to_numpy() == CONTROL
        ctrl_mean = np.asarray(X[ctrl].mean(axis=0)).ravel()
        own_counts = np.asarray(X[np.flatnonzero(ko_cells), own]).ravel()
        stats["knocked_out_gene_mean_count_in_ko_cells"] = float(own_counts.mean())
        stats["knocked_out_gene_mean_count_in_control"] = float(ctrl_mean[np.unique(own)].mean())
    return stats


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------


def default_out(n_genes: int, seed: int) -> Path:
    """``$BIOJEPA_CACHE_DIR`` (or ``~/.cache/biojepa``) / ``sergio_screen_{n_genes}genes_seed{seed}.h5ad``."""
    from biojepa.datasets._load import cache_dir  # imported here: spawned workers need no biojepa

    return cache_dir() / f"sergio_screen_{n_genes}genes_seed{seed}.h5ad"


def _stored_simulation(path: Path) -> dict | None:
    """``uns["simulation"]`` (and ``uns["sanity_stats"]``) of an existing file, without reading the matrices."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            read_elem = ad.io.read_elem if hasattr(ad, "io") else ad.experimental.read_elem
            sim = read_elem(f["uns/simulation"])
            sim["_sanity_stats"] = read_elem(f["uns/sanity_stats"]) if "uns/sanity_stats" in f else {}
            return sim
    except (OSError, KeyError):
        return None


def _print_stats(stats: dict) -> None:
    print("sanity statistics:")
    for key, value in stats.items():
        print(f"  {key:48s} {value:.4g}")


def main(argv: list[str] | None = None) -> Path:
    """Command line: generate (or reuse) the screen and print where it went, how long it took and sanity stats."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-genes", type=int, default=2000)
    parser.add_argument("--n-singles", type=int, default=120)
    parser.add_argument("--n-doubles", type=int, default=120)
    parser.add_argument("--cells-per-condition", type=int, default=120)
    parser.add_argument("--n-control", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="output .h5ad (default: see module docstring)")
    parser.add_argument("--force", action="store_true", help="regenerate even if the output exists")
    parser.add_argument("--no-clean-layer", action="store_true", help="leave out layers['clean_expression']")
    parser.add_argument("--n-jobs", type=int, default=1, help="processes simulating conditions in parallel")
    args = parser.parse_args(argv)

    out = (args.out or default_out(args.n_genes, args.seed)).expanduser().resolve()
    params = {
        "generator_version": GENERATOR_VERSION,
        "n_genes": args.n_genes,
        "n_singles": args.n_singles,
        "n_doubles": args.n_doubles,
        "cells_per_condition": args.cells_per_condition,
        "n_control": args.n_control,
        "seed": args.seed,
        "clean_layer": not args.no_clean_layer,
    }
    if out.exists() and not args.force:
        stored = _stored_simulation(out)
        if stored is not None and all(_same(stored.get(key), params[key]) for key in _REUSE_KEYS):
            print(f"Reusing {out} (same parameters; --force to regenerate).")
            _print_stats(stored["_sanity_stats"])
            return out
        print(f"{out} exists with other parameters; regenerating.")

    start = time.perf_counter()
    adata = simulate_screen(
        args.n_genes,
        args.n_singles,
        args.n_doubles,
        args.cells_per_condition,
        args.n_control,
        args.seed,
        clean_layer=not args.no_clean_layer,
        n_jobs=args.n_jobs,
        verbose=True,
    )
    t_sim = time.perf_counter() - start
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    adata.write_h5ad(tmp, compression="gzip")
    os.replace(tmp, out)
    total = time.perf_counter() - start
    print(
        f"Wrote {out} ({out.stat().st_size / 2**20:.0f} MiB): {adata.n_obs} cells x {adata.n_vars} genes, "
        f"{adata.obs['perturbation'].nunique()} conditions; simulated in {t_sim:.1f} s, {total:.1f} s in all."
    )
    _print_stats(adata.uns["sanity_stats"])
    return out


def _same(a, b) -> bool:
    try:
        return bool(np.all(np.asarray(a) == np.asarray(b)))
    except (TypeError, ValueError):  # pragma: no cover
        return False


if __name__ == "__main__":
    main()
