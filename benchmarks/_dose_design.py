"""Design of the simulated dose screen: compounds, dose-response, cell lines, disease state, combinations, features.

Everything here is deterministic from a seed and works on the deterministic steady states of
``simulate_screen.steady_state``; ``simulate_dose_screen.py`` turns the design into cells.
"""

from __future__ import annotations

import hashlib
import warnings

import numpy as np
import pandas as pd
from simulate_screen import _seeds, steady_state

DOSES = (0.01, 0.1, 1.0, 10.0, 100.0)  # µM, log grid around the EC50 range
EC50_RANGE = (0.1, 10.0)  # µM, log-uniform
HILL_RANGE = (1.0, 2.0)
N_TARGETS_P = (0.5, 0.35, 0.15)  # probability of 1, 2, 3 targets
P_INHIBITION = 0.8
INHIBITION_RANGE = (0.85, 0.95)  # e: production x (1 - e h(d))
ACTIVATION_RANGE = (2.0, 3.0)  # a: production x (1 + a h(d))
LINE_SD = 0.5  # log-normal sd of a cell line's factor on each master regulator's production
DISEASE_N_REGULATORS = 3
DISEASE_FACTOR = 3.0
REVERSER_COSINE = 0.3  # a compound reverses the disease if cos(effect at top dose, -disease shift) >= this
REVERSERS_RANGE = (4, 8)  # the disease regulators are redrawn until the number of reversers is in this range
N_BITS = 256
BITS_PER_TARGET = 4
BITS_PER_DIRECTION = 2
BIT_DROP = 0.1  # each target / direction bit is lost with this probability
NOISE_BITS = 12  # random bits set per compound, independent of its targets


def hill_response(dose: float, ec50: np.ndarray, hill: np.ndarray) -> np.ndarray:
    """Fraction of the maximal effect at ``dose``: ``d^n / (d^n + EC50^n)``."""
    return dose**hill / (dose**hill + ec50**hill)


def draw_compounds(grn: dict[str, np.ndarray], n_compounds: int, seed: int) -> pd.DataFrame:
    """Compounds with 1-3 target regulators (picked with probability proportional to their number of targets).

    Parameters
    ----------
    grn
        Network from ``simulate_screen.random_grn``.
    n_compounds
        Number of compounds.
    seed
        Random seed.

    Returns
    -------
    One row per (compound, target): ``compound``, ``target`` (gene index), ``direction`` (-1 inhibition,
    +1 activation), ``max_effect`` (``e`` or ``a``), ``ec50``, ``hill``.
    """
    rng = np.random.default_rng(_seeds(seed, 10)[0])
    out_degree = np.bincount(grn["reg"], minlength=grn["basal"].size)
    candidates = np.flatnonzero(out_degree > 0)
    w = out_degree[candidates] / out_degree[candidates].sum()
    width = len(str(n_compounds - 1))
    rows = []
    for c in range(n_compounds):
        m = min(1 + rng.choice(len(N_TARGETS_P), p=N_TARGETS_P), candidates.size)
        ec50 = float(np.exp(rng.uniform(*np.log(EC50_RANGE))))
        hill = float(rng.uniform(*HILL_RANGE))
        for target in sorted(rng.choice(candidates, m, replace=False, p=w)):
            direction = -1 if rng.random() < P_INHIBITION else 1
            effect = rng.uniform(*(INHIBITION_RANGE if direction < 0 else ACTIVATION_RANGE))
            rows.append((f"cmp{c:0{width}d}", int(target), direction, float(effect), ec50, hill))
    return pd.DataFrame(rows, columns=["compound", "target", "direction", "max_effect", "ec50", "hill"])


def compound_scale(targets: pd.DataFrame, n_genes: int, doses: dict[str, float]) -> np.ndarray:
    """Per-gene production factor of compounds at doses (``{compound: dose}``; factors of several multiply)."""
    scale = np.ones(n_genes)
    rows = targets[targets["compound"].isin(list(doses))]
    dose = rows["compound"].map(doses).to_numpy(float)
    h = hill_response(dose, rows["ec50"].to_numpy(), rows["hill"].to_numpy())
    factor = np.where(rows["direction"] < 0, 1.0 - rows["max_effect"] * h, 1.0 + rows["max_effect"] * h)
    np.multiply.at(scale, rows["target"].to_numpy(), factor)
    return scale


def line_scales(grn: dict[str, np.ndarray], n_lines: int, seed: int) -> np.ndarray:
    """(n_lines, n_genes) production factors: log-normal per master regulator and line, 1 elsewhere."""
    rng = np.random.default_rng(_seeds(seed, 11)[0])
    scale = np.ones((n_lines, grn["basal"].size))
    masters = np.flatnonzero(grn["is_master"])
    scale[:, masters] = rng.lognormal(0.0, LINE_SD, (n_lines, masters.size))
    return scale


def _log_ss(grn, scale: np.ndarray) -> np.ndarray:
    return np.log1p(steady_state(grn, (), scale))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else 0.0


def disease_truth(grn, targets: pd.DataFrame, lines: np.ndarray, disease: np.ndarray) -> pd.DataFrame:
    """Per compound: cosine of its top-dose effect with minus the disease shift, and the shift it undoes.

    Both are averaged over cell lines, on log1p of the deterministic steady states. ``disease_rescue`` is the
    fraction of the disease shift removed along its own direction when diseased cells get the compound at the top
    dose: ``1 - <treated - control, shift> / |shift|^2`` (1: shift undone, 0: no change, < 0: aggravated).
    """
    n = grn["basal"].size
    names = sorted(targets["compound"].unique())
    cos, rescue = np.zeros((len(lines), len(names))), np.zeros((len(lines), len(names)))
    for li, line in enumerate(lines):
        control = _log_ss(grn, line)
        shift = _log_ss(grn, line * disease) - control
        for ci, name in enumerate(names):
            drug = compound_scale(targets, n, {name: DOSES[-1]})
            cos[li, ci] = _cosine(_log_ss(grn, line * drug) - control, -shift)
            treated = _log_ss(grn, line * disease * drug) - control
            rescue[li, ci] = 1.0 - float(treated @ shift) / float(shift @ shift)
    table = pd.DataFrame({"disease_cosine": cos.mean(0), "disease_rescue": rescue.mean(0)}, index=names)
    for li in range(len(lines)):
        table[f"disease_cosine_line{li}"] = cos[li]
    return table


def draw_disease(grn, targets: pd.DataFrame, lines: np.ndarray, seed: int) -> tuple[np.ndarray, pd.DataFrame, int]:
    """Over-activated regulators whose disease some but not most compounds reverse.

    Draws ``DISEASE_N_REGULATORS`` non-master regulators (probability proportional to their number of targets)
    until the number of compounds with ``disease_cosine >= REVERSER_COSINE`` falls in ``REVERSERS_RANGE``.

    Returns
    -------
    The regulators (gene indices), the compounds' :func:`disease_truth` with a ``reverses_disease`` column, and
    the number of draws it took.
    """
    rng = np.random.default_rng(_seeds(seed, 12)[0])
    n = grn["basal"].size
    out_degree = np.bincount(grn["reg"], minlength=n)
    candidates = np.flatnonzero((out_degree > 1) & ~grn["is_master"])
    w = out_degree[candidates] / out_degree[candidates].sum()
    lo, hi = REVERSERS_RANGE
    best = None
    for attempt in range(1, 201):
        regulators = np.sort(rng.choice(candidates, DISEASE_N_REGULATORS, replace=False, p=w))
        disease = np.ones(n)
        disease[regulators] = DISEASE_FACTOR
        truth = disease_truth(grn, targets, lines, disease)
        count = int((truth["disease_cosine"] >= REVERSER_COSINE).sum())
        miss = max(lo - count, count - hi, 0)
        if best is None or miss < best[0]:
            best = (miss, regulators, truth, attempt)
        if miss == 0:
            break
    miss, regulators, truth, attempt = best
    if miss:
        warnings.warn(f"No disease draw gives {lo}-{hi} reversers; using one {miss} off.", stacklevel=2)
    truth["reverses_disease"] = truth["disease_cosine"] >= REVERSER_COSINE
    return regulators, truth, attempt


def nearest_dose(ec50: float) -> float:
    """The grid dose nearest ``ec50`` in log scale."""
    return DOSES[int(np.argmin(np.abs(np.log(DOSES) - np.log(ec50))))]


def draw_combinations(grn, targets: pd.DataFrame, line: np.ndarray, n_pairs: int, seed: int) -> pd.DataFrame:
    """Compound pairs, half of them among the most interacting, each at one or two dose pairs.

    A pair's first dose pair puts each member at the grid dose nearest its EC50; half of the pairs get a second
    one, each member a grid step higher. The interaction score is ``sum |both - a - b + control|``
    over genes on log1p of ``line``'s deterministic steady states at the first dose pair, as in
    ``simulate_screen.interaction_score``.

    Returns
    -------
    One row per (pair, dose pair): ``condition`` (``"cmpA+cmpB"``, sorted), ``dose`` (``"1+10"``, same order),
    ``compound_a``, ``compound_b``, ``dose_a``, ``dose_b``, ``interaction_score``, ``interacting_pick``.
    """
    rng = np.random.default_rng(_seeds(seed, 13)[0])
    n = grn["basal"].size
    ec50 = targets.groupby("compound")["ec50"].first()
    names = list(ec50.index)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    n_pairs = min(n_pairs, len(pairs))
    first = {c: nearest_dose(ec50[c]) for c in names}
    control = _log_ss(grn, line)
    single = {c: _log_ss(grn, line * compound_scale(targets, n, {c: first[c]})) - control for c in names}

    def score(a, b):
        both = _log_ss(grn, line * compound_scale(targets, n, {a: first[a], b: first[b]})) - control
        return float(np.abs(both - single[a] - single[b]).sum())

    scores = {p: score(*p) for p in pairs}
    n_interacting = n_pairs // 2
    ranked = sorted(pairs, key=lambda p: -scores[p])[: 2 * n_interacting]
    interacting = [ranked[i] for i in rng.choice(len(ranked), n_interacting, replace=False)]
    rest = sorted(set(pairs) - set(interacting))
    chosen = sorted(interacting + [rest[i] for i in rng.choice(len(rest), n_pairs - n_interacting, replace=False)])
    second = set(rng.choice(len(chosen), n_pairs // 2, replace=False).tolist())
    rows = []
    for i, (a, b) in enumerate(chosen):
        dose_pairs = [(first[a], first[b])]
        if i in second:
            step = [DOSES[min(DOSES.index(first[c]) + 1, len(DOSES) - 1)] for c in (a, b)]
            if tuple(step) != dose_pairs[0]:
                dose_pairs.append(tuple(step))
        for da, db in dose_pairs:
            rows.append((f"{a}+{b}", f"{da:g}+{db:g}", a, b, da, db, scores[(a, b)], (a, b) in interacting))
    columns = ["condition", "dose", "compound_a", "compound_b", "dose_a", "dose_b"]
    return pd.DataFrame(rows, columns=[*columns, "interaction_score", "interacting_pick"])


def _hashed_bits(key: str, n: int) -> list[int]:
    """``n`` bit positions from a deterministic hash of ``key`` (stable across runs and machines)."""
    digest = hashlib.sha256(key.encode()).digest()
    return [int.from_bytes(digest[4 * j : 4 * j + 4], "little") % N_BITS for j in range(n)]


def compound_feature_table(targets: pd.DataFrame, gene_names: np.ndarray, seed: int) -> pd.DataFrame:
    """Fingerprint-like features: hashed target and direction bits (some dropped), noise bits, two descriptors.

    Each target gene sets ``BITS_PER_TARGET`` bits hashed from its name, and ``BITS_PER_DIRECTION`` bits hashed
    from its name and direction; any inhibitor / activator target also sets the bits hashed from ``"inhibitor"`` /
    ``"activator"``. Each of these bits is lost with probability ``BIT_DROP``, and ``NOISE_BITS`` random bits are
    set. ``descriptor_0`` is ``-log10 EC50`` plus noise (sd 0.3), ``descriptor_1`` a weaker mix of log10 EC50 and
    Hill slope plus noise (sd 0.5).

    Returns
    -------
    Compounds x (``fp000`` ... ``fp255``, ``descriptor_0``, ``descriptor_1``), float32.
    """
    rng = np.random.default_rng(_seeds(seed, 14)[0])
    names = sorted(targets["compound"].unique())
    bits = np.zeros((len(names), N_BITS), np.float32)
    desc = np.zeros((len(names), 2), np.float32)
    for i, name in enumerate(names):
        rows = targets[targets["compound"] == name]
        on = set()
        for gene, direction in zip(gene_names[rows["target"]], rows["direction"], strict=True):
            kind = "inhibitor" if direction < 0 else "activator"
            on.update(_hashed_bits(f"target:{gene}", BITS_PER_TARGET))
            on.update(_hashed_bits(f"target:{gene}:{kind}", BITS_PER_DIRECTION))
            on.update(_hashed_bits(kind, BITS_PER_DIRECTION))
        kept = [b for b in sorted(on) if rng.random() >= BIT_DROP]
        bits[i, kept] = 1.0
        bits[i, rng.choice(N_BITS, NOISE_BITS, replace=False)] = 1.0
        log_ec50, hill = np.log10(rows["ec50"].iloc[0]), rows["hill"].iloc[0]
        desc[i] = (-log_ec50 + rng.normal(0, 0.3), 0.5 * log_ec50 + 0.5 * (hill - 1.5) + rng.normal(0, 0.5))
    columns = [f"fp{j:03d}" for j in range(N_BITS)] + ["descriptor_0", "descriptor_1"]
    return pd.DataFrame(np.c_[bits, desc], index=pd.Index(names, name="compound"), columns=columns)
