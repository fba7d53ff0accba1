"""Sanity statistics of the simulated dose screen (``simulate_dose_screen.py``): measured and noise-free.

"Measured" numbers use mean log1p(CP10k) of the counts per condition; "deterministic" ones log1p of the noise-free
steady states in ``uns["steady_state"]``. A change is the difference to the same line's control.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

MOVED = 0.1  # |change| of log1p above which a gene counts as moved (deterministic)
RISE = 0.05  # rise in deterministic rms change between adjacent doses that the measured change should show


def _keys(condition, dose, line) -> np.ndarray:
    return np.array([f"{c}|{d}|{li}" for c, d, li in zip(condition, dose, line, strict=True)], dtype=object)


def _measured_means(adata) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Mean log1p(CP10k) per condition key ``"condition|dose|line"``: of all its cells, its first and second half.

    The halves (in ``obs`` order, i.e. by sergio-rs trajectory) have independent noise, so the mean over genes of
    ``contrast(first half) * contrast(second half)`` estimates the mean squared contrast without the noise's bias.
    """
    X = sp.csr_matrix(adata.X, dtype=np.float64)
    lib = np.asarray(X.sum(axis=1)).ravel()
    norm = sp.diags(1e4 / np.maximum(lib, 1.0)) @ X
    norm.data = np.log1p(norm.data)
    obs = adata.obs
    keys = _keys(obs["condition"].astype(str), obs["dose"].astype(str), obs["cell_line"].astype(str))
    uniq, codes = np.unique(keys, return_inverse=True)
    position = pd.Series(codes).groupby(codes).cumcount().to_numpy()
    second = position >= np.bincount(codes)[codes] // 2
    out = []
    for rows in (np.ones(codes.size, bool), ~second, second):
        c = codes[rows]
        onehot = sp.csr_matrix((np.ones(c.size), (c, np.flatnonzero(rows))), shape=(uniq.size, codes.size))
        sums = np.asarray((onehot @ norm).todense()) / np.maximum(np.bincount(c, minlength=uniq.size), 1)[:, None]
        out.append(dict(zip(uniq, sums, strict=True)))
    return tuple(out)


def _rms(contrast, halves) -> float:
    """Noise-debiased root mean square over genes of a linear contrast of condition means (see ``_measured_means``)."""
    return float(np.sqrt(max(float(np.mean(contrast(halves[0]) * contrast(halves[1]))), 0.0)))


def _auroc(score: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a positive outranks a negative (ties count one half)."""
    pos, neg = score[positive], score[~positive]
    if not pos.size or not neg.size:
        return float("nan")
    return float(((pos[:, None] > neg[None]).sum() + 0.5 * (pos[:, None] == neg[None]).sum()) / (pos.size * neg.size))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def dose_response(adata, means: tuple | None = None) -> pd.DataFrame:
    """Per single compound x line x dose: size of the change, measured and deterministic, and genes moved.

    Parameters
    ----------
    adata
        Output of ``simulate_dose_screen``.
    means
        ``_measured_means(adata)``, if already computed.

    Returns
    -------
    DataFrame with ``compound``, ``cell_line``, ``dose``, ``mean_abs_delta`` (measured, noise included),
    ``rms_delta`` (measured, noise-debiased root mean square), ``mean_abs_delta_deterministic``,
    ``rms_delta_deterministic``, ``fraction_moved_deterministic``.
    """
    measured, *halves = _measured_means(adata) if means is None else means
    det = _deterministic(adata)
    rows = []
    table = adata.uns["conditions"]
    for cond, dose, line, n in table[["condition", "dose", "cell_line", "n_compounds"]].itertuples(index=False):
        if n != 1:
            continue
        key, ctrl = f"{cond}|{dose}|{line}", f"control|0|{line}"
        d_det = det[key] - det[ctrl]
        rows.append(
            (
                cond,
                line,
                float(dose),
                np.abs(measured[key] - measured[ctrl]).mean(),
                _rms(lambda m, key=key, ctrl=ctrl: m[key] - m[ctrl], halves),
                np.abs(d_det).mean(),
                np.sqrt(np.mean(d_det**2)),
                (np.abs(d_det) > MOVED).mean(),
            )
        )
    columns = ["compound", "cell_line", "dose", "mean_abs_delta", "rms_delta", "mean_abs_delta_deterministic"]
    return pd.DataFrame(rows, columns=[*columns, "rms_delta_deterministic", "fraction_moved_deterministic"])


def _deterministic(adata) -> dict[str, np.ndarray]:
    """log1p of the noise-free steady state per condition key."""
    ss = adata.uns["steady_state"]
    return dict(zip(_keys(ss["condition"], ss["dose"], ss["cell_line"]), np.log1p(ss["mean"]), strict=True))


def _monotone(dr: pd.DataFrame, rise: float = RISE) -> dict[str, float]:
    """Monotonicity in dose of the change's size, per compound x line."""
    stats = {}
    dr = dr.sort_values("dose")
    groups = dr.groupby(["compound", "cell_line"])
    det = groups["mean_abs_delta_deterministic"].apply(np.array)
    stats["fraction_monotone_in_dose_deterministic"] = float(np.mean([np.all(np.diff(s) >= 0) for s in det]))
    stats["fraction_strictly_increasing_deterministic"] = float(np.mean([np.all(np.diff(s) > 0) for s in det]))
    rms = groups["rms_delta"].apply(np.array)
    rms_det = groups["rms_delta_deterministic"].apply(np.array)
    steps = np.concatenate([np.diff(s) for s in rms_det])
    measured_steps = np.concatenate([np.diff(s) for s in rms])
    clear = steps >= rise
    stats[f"n_dose_steps_rms_rising_{rise:g}_deterministic"] = float(clear.sum())
    stats["fraction_of_those_rising_measured"] = float((measured_steps[clear] > 0).mean()) if clear.any() else np.nan
    stats["fraction_monotone_in_dose_measured_rms"] = float(np.mean([np.all(np.diff(s) >= 0) for s in rms]))
    ranks = [pd.Series(s).rank().to_numpy() for s in rms if np.ptp(s) > 0]
    stats["mean_spearman_dose_vs_measured_rms"] = float(
        np.mean([np.corrcoef(r, np.arange(r.size))[0, 1] for r in ranks]) if ranks else np.nan
    )
    return stats


def sanity_stats(adata) -> dict[str, float]:
    """Dose monotonicity, target overlap, disease reversal, line differences and combination interaction.

    Parameters
    ----------
    adata
        Output of ``simulate_dose_screen``; its ``uns["dose_response"]`` (:func:`dose_response`) is used if present.

    Returns
    -------
    Dict of the statistics (also stored in ``uns["sanity_stats"]``). ``rms`` numbers are noise-debiased root
    mean squares over genes (see ``_measured_means``); ``mean_abs`` numbers include the noise.
    """
    X = adata.X
    means = _measured_means(adata)
    halves = means[1:]
    det = _deterministic(adata)
    lines = list(adata.obs["cell_line"].cat.categories)
    top = f"{adata.uns['simulation']['doses'][-1]:g}"
    stats = {
        "fraction_nonzero": float(X.nnz / (X.shape[0] * X.shape[1])),
        "mean_library_size": float(X.sum() / X.shape[0]),
    }

    # dose response: per dose, and monotone in dose per compound x line
    dr = adata.uns["dose_response"] if "dose_response" in adata.uns else dose_response(adata, means)
    for dose, rows in dr.groupby("dose"):
        for col in ("mean_abs_delta", "rms_delta", "mean_abs_delta_deterministic", "rms_delta_deterministic"):
            stats[f"dose_{dose:g}_{col}"] = float(rows[col].mean())
        stats[f"dose_{dose:g}_fraction_genes_moved_deterministic"] = float(rows["fraction_moved_deterministic"].mean())
    stats.update(_monotone(dr))

    # compounds sharing a target (same / opposite direction) vs sharing none: correlation of top-dose changes
    targets = adata.uns["compound_targets"]
    sets = {c: set(zip(g["target"], g["direction"], strict=True)) for c, g in targets.groupby("compound")}
    names = sorted(sets)
    corr = {"same": [], "opposite": [], "none": []}
    for line in lines:
        ctrl = det[f"control|0|{line}"]
        delta = {c: det[f"{c}|{top}|{line}"] - ctrl for c in names}
        # measured: first half of one compound's cells vs second half of the other's (no shared noise)
        d_a = {c: halves[0][f"{c}|{top}|{line}"] - halves[0][f"control|0|{line}"] for c in names}
        d_b = {c: halves[1][f"{c}|{top}|{line}"] - halves[1][f"control|0|{line}"] for c in names}
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                shared = {t for t, _ in sets[a]} & {t for t, _ in sets[b]}
                same = {t for t, d in sets[a] if (t, d) in sets[b]}
                kind = "none" if not shared else ("same" if same == shared else "opposite" if not same else None)
                if kind:
                    corr[kind].append((np.corrcoef(d_a[a], d_b[b])[0, 1], np.corrcoef(delta[a], delta[b])[0, 1]))
    for kind, values in corr.items():
        v = np.array(values).reshape(-1, 2)
        stats[f"n_compound_pairs_sharing_target_{kind}"] = float(len(v) / len(lines))
        stats[f"top_dose_correlation_sharing_target_{kind}"] = float(v[:, 0].mean()) if len(v) else np.nan
        stats[f"top_dose_correlation_sharing_target_{kind}_deterministic"] = float(v[:, 1].mean()) if len(v) else np.nan

    # disease: size of the shift, and the reversers' changes against it
    table = adata.uns["compounds"]
    reverses = table["reverses_disease"].to_numpy(bool)
    stats["n_reversers"] = float(reverses.sum())
    cos = np.zeros((len(lines), len(table)))
    shift_rms = []
    for li, line in enumerate(lines):
        ctrl = f"control|0|{line}"
        shift_rms.append(_rms(lambda m, line=line, ctrl=ctrl: m[f"disease|0|{line}"] - m[ctrl], halves))
        # a compound's change from one half of the cells, the shift from the other half (no shared control noise)
        for m, o in (halves, halves[::-1]):
            shift = o[f"disease|0|{line}"] - o[ctrl]
            cos[li] += [_cos(m[f"{c}|{top}|{line}"] - m[ctrl], -shift) / 2 for c in table.index]
    cos = cos.mean(0)
    stats["disease_rms_delta"] = float(np.mean(shift_rms))
    for name, rows in (("reversers", reverses), ("others", ~reverses)):
        stats[f"disease_cosine_{name}_deterministic"] = float(table["disease_cosine"][rows].mean())
        stats[f"disease_cosine_{name}_measured"] = float(cos[rows].mean())
        stats[f"disease_rescue_{name}_deterministic"] = float(table["disease_rescue"][rows].mean())
    stats["reverser_auroc_of_measured_cosine"] = _auroc(cos, reverses)

    # cell lines: control expression differs between lines
    pairs = [(a, b) for i, a in enumerate(lines) for b in lines[i + 1 :]]
    if pairs:
        keys = [(f"control|0|{a}", f"control|0|{b}") for a, b in pairs]
        stats["line_control_rms_difference"] = float(
            np.mean([_rms(lambda m, k=k: m[k[0]] - m[k[1]], halves) for k in keys])
        )
        stats["line_control_rms_difference_deterministic"] = float(
            np.mean([np.sqrt(np.mean((det[a] - det[b]) ** 2)) for a, b in keys])
        )

    # combinations: non-additivity (both - a - b + control) per gene, interacting vs random picks
    combos = adata.uns["combinations"]
    for pick, rows in combos.groupby("interacting_pick"):
        name = "interacting" if pick else "random"
        meas, dets = [], []
        for row in rows.itertuples():
            for line in lines:
                k = (
                    f"{row.condition}|{row.dose}|{line}",
                    f"{row.compound_a}|{row.dose_a:g}|{line}",
                    f"{row.compound_b}|{row.dose_b:g}|{line}",
                    f"control|0|{line}",
                )
                meas.append(_rms(lambda m, k=k: m[k[0]] - m[k[1]] - m[k[2]] + m[k[3]], halves))
                dets.append(np.sqrt(np.mean((det[k[0]] - det[k[1]] - det[k[2]] + det[k[3]]) ** 2)))
        stats[f"combination_nonadditivity_rms_{name}"] = float(np.mean(meas))
        stats[f"combination_nonadditivity_rms_{name}_deterministic"] = float(np.mean(dets))
    return stats


def print_stats(stats: dict) -> None:
    """Print the statistics, one a line."""
    print("sanity statistics:")
    for key, value in stats.items():
        print(f"  {key:56s} {value:.4g}")


def print_dose_table(dr: pd.DataFrame) -> None:
    """Print, per compound and dose, the fraction of genes moved (deterministic) and the measured rms change."""
    table = dr.groupby(["compound", "dose"])[["fraction_moved_deterministic", "rms_delta"]].mean().unstack("dose")
    doses = table["rms_delta"].columns
    print(f"genes moved (|deterministic change| > {MOVED:g}) / measured rms change, mean over lines, per dose (µM):")
    print("  compound " + "".join(f"{d:>14g}" for d in doses))
    for compound, row in table.iterrows():
        cells = (f"{row[('fraction_moved_deterministic', d)]:6.1%} / {row[('rms_delta', d)]:.2f}" for d in doses)
        print(f"  {compound:8s} " + "".join(f"{c:>14s}" for c in cells))
