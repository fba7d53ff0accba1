"""Markdown report of the side-by-side benchmark from its raw rows (scores, cost, judges, failures)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from _splits import SPLITS

COLUMNS = {"pearson_delta_top20": "Pearson Δ top-20 ↑", "l2_top1000": "L2 top-1000 ↓",
           "discrimination": "PDS ↓", "energy_distance": "energy distance ↓"}  # fmt: skip
ORDER = ["BioJEPA", "GEARS", "CPA", "scGen", "biolord", "State", "CellFlow",
         "Additive", "Linear", "TrainMean", "NoChange", "Ceiling (split half)"]  # fmt: skip


def _fmt(mean: float, sd: float) -> str:
    if np.isnan(mean):
        return "n/a"
    return f"{mean:.3f} ± {sd:.3f}" if not np.isnan(sd) else f"{mean:.3f}"


def split_tables(scores: pd.DataFrame) -> list[str]:
    """One table per split: mean over the held-out requests per seed, then mean ± sd over seeds."""
    lines = []
    n_requests = scores[scores.method == "Ceiling (split half)"].groupby(["split", "seed"]).size()
    for split in SPLITS:
        part = scores[scores.split == split]
        if part.empty:
            continue
        per_seed = part.groupby(["method", "seed"])[list(COLUMNS)].mean()
        mean, sd = per_seed.groupby("method").mean(), per_seed.groupby("method").std()
        answered = part.groupby(["method", "seed"]).size().groupby("method").mean()
        seeds = part.groupby("method")["seed"].nunique()
        total = int(n_requests.loc[split].mean()) if split in n_requests.index.get_level_values(0) else 0
        rows = []
        for method in [m for m in ORDER if m in mean.index]:
            row = {"method": method, "requests answered": f"{answered[method]:.0f} / {total}",
                   "seeds": int(seeds[method])}  # fmt: skip
            row |= {label: _fmt(mean.loc[method, c], sd.loc[method, c]) for c, label in COLUMNS.items()}
            rows.append(row)
        lines += [f"**{split}**", "", pd.DataFrame(rows).to_markdown(index=False), ""]
    return lines


def cost_table(cost: pd.DataFrame) -> list[str]:
    """Training cells/s and peak RSS per method and run, mean over seeds, with ratios to BioJEPA's same run/seed."""
    if cost.empty or "BioJEPA" not in set(cost.method) or "invocation" not in cost:
        return []
    shared = cost.groupby("invocation")["method"].nunique()
    cost = cost[cost.invocation.isin(shared[shared > 1].index)]  # only invocations where BioJEPA ran next to peers
    ref = cost[cost.method == "BioJEPA"].set_index(["run", "seed", "invocation"])
    cost = cost.join(ref[["cells_per_s", "peak_rss_mib"]], on=["run", "seed", "invocation"], rsuffix="_biojepa")
    cost = cost[cost["cells_per_s_biojepa"].notna()]
    cost["speed vs BioJEPA"] = cost["cells_per_s"] / cost["cells_per_s_biojepa"]
    cost["memory vs BioJEPA"] = cost["peak_rss_mib"] / cost["peak_rss_mib_biojepa"]
    cols = ["epochs", "train_seconds", "cells_per_s", "speed vs BioJEPA", "peak_rss_mib", "memory vs BioJEPA"]
    table = cost.groupby(["run", "method"])[cols].mean().round(2).reset_index()
    table["order"] = table["method"].map({m: i for i, m in enumerate(ORDER)})
    table = table.sort_values(["run", "order"]).drop(columns="order")
    table = table.rename(columns={"train_seconds": "train s", "cells_per_s": "cells/s", "peak_rss_mib": "peak RSS MiB"})
    return ["Training cost (mean over seeds; ratios to BioJEPA in the same run and seed):", "",
            table.to_markdown(index=False), ""]  # fmt: skip


def judges_table(judges: pd.DataFrame) -> list[str]:
    """Largest absolute difference between biojepa.metrics and cell-eval on each shared metric, per method."""
    if judges.empty:
        return ["cell-eval was not run.", ""]
    rows = []
    for method, part in judges.groupby("method"):
        row = {"method": method, "pairs": len(part)}
        for m in ("pearson_delta", "mse", "discrimination_l1", "discrimination_l2"):
            row[f"max |Δ| {m}"] = f"{np.nanmax(np.abs(part[m] - part[f'ce_{m}'])):.2e}"
        rows.append(row)
    return ["Second judge: largest |biojepa.metrics − cell-eval| over every (seed, request) on the shared metrics:",
            "", pd.DataFrame(rows).to_markdown(index=False), ""]  # fmt: skip


def report(frames: dict[str, pd.DataFrame], header: list[str]) -> str:
    """The whole markdown report."""
    lines = [*header, ""]
    if not frames["scores"].empty:
        lines += split_tables(frames["scores"])
    lines += cost_table(frames["cost"])
    lines += judges_table(frames["judges"])
    failures = frames["failures"]
    if not failures.empty:
        first = failures.groupby("method").first().reset_index()[["method", "run", "seed", "error"]]
        lines += ["Failures (first per method):", "", first.to_markdown(index=False), ""]
    return "\n".join(lines)
