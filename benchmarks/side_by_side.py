"""Peers side by side: BioJEPA, the baselines and the peers (GEARS, CPA, scGen, biolord, State, CellFlow) on the splits.

Every method trains on the same cells and predicts the same held-out (perturbation, cell type) requests of the
runs of ``benchmarks/peers/_splits.py``; peers run as subprocesses in their own virtual environments
(``benchmarks/peers/setup_<peer>.sh``, default ``/work/peer_envs/<peer>``), exchanging ``.h5ad`` files through the
one adapter ``benchmarks/peers/_adapter.py``. Predictions are scored by :func:`biojepa.metrics.evaluate` and by
cell-eval (``benchmarks/peers/_judge.py``); the split-half ceiling (mean of half of the observed cells) is scored
the same way. A peer that is not installed, fails or times out is recorded with its error and skipped.

Run (the peers at their default epoch counts take about an hour per seed on 2 cores; the page's numbers used the
reduced budgets and seeds listed in ``docs/benchmarks.md``, "Peers side by side")::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/side_by_side.py --seeds 0 1 2 \
        --out benchmarks/results/peers.md

Raw rows go next to ``--out`` (``peers.csv``: one row per method, seed and request; ``peers_cost.csv``,
``peers_judges.csv``, ``peers_failures.csv``); ``--append`` adds to existing rows (e.g. more seeds or methods) and
``--report-only`` rebuilds the report from them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import pandas as pd

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(0, str(HERE))
from _adapter import COV, KEY, from_peer, to_peer  # noqa: E402
from _common import cpu_model, quiet  # noqa: E402
from _judge import agreement, our_side, run_celleval, score, write_pairs  # noqa: E402
from _report import report  # noqa: E402
from _splits import half_split, perturbench_runs, sergio_run  # noqa: E402

from biojepa.baselines import Additive, Linear, NoChange, TrainMean  # noqa: E402

SEEDS = (0, 1, 2)
DATA = HERE.parent.parent / "shared" / "data"
# method -> (runner / environment name, epoch budget: the peer's documented default unless stated on the page)
METHODS = {
    "BioJEPA": ("biojepa", 50),
    "GEARS": ("gears", 20),
    "CPA": ("cpa", 100),
    "scGen": ("scgen", 100),
    "biolord": ("biolord", 200),
    "State": ("state", 20),
    "CellFlow": ("cellflow", 100),
}
BASELINES = {"NoChange": NoChange, "TrainMean": TrainMean, "Additive": Additive, "Linear": Linear}


def run_method(name, canon, folder, seed, epochs, args, gene2go) -> tuple[ad.AnnData | None, str | None]:
    """Write the method's input, run its runner in its environment, read its prediction back (or the error)."""
    peer = METHODS[name][0]
    python = Path(sys.executable) if peer == "biojepa" else args.peer_envs / peer / "bin" / "python"
    if not python.exists():
        return None, f"environment {python.parent.parent} not found (run benchmarks/peers/setup_{peer}.sh)"
    inp, out = folder / f"{peer}_input.h5ad", folder / f"{peer}_pred.h5ad"
    to_peer(canon, peer, seed, gene2go if peer in ("gears", "biolord") else None).write_h5ad(inp)
    env = dict(os.environ)
    if peer != "biojepa":
        env.pop("PYTHONPATH", None)  # peers never import our package
    cmd = [str(python), str(HERE / "peers" / f"run_{peer}.py"), "--input", str(inp), "--output", str(out),
           "--seed", str(seed), "--epochs", str(epochs), "--threads", str(args.threads)]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {args.timeout} s"
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-6:]
        return None, " | ".join(tail)[-1500:]
    return from_peer(ad.read_h5ad(out), peer, canon), None


def baseline_predictions(canon) -> dict[str, ad.AnnData]:
    """Every baseline fitted on the run's training cells, predicting each request it can."""
    out = {}
    for name, cls in BASELINES.items():
        model = cls().fit(canon, KEY, "control", [COV])
        parts = []
        for (label, cell_type), _ in canon.uns["requests"].groupby([KEY, COV], sort=False):
            try:
                parts.append(model.predict_perturbation(label, covariates={COV: cell_type}))
            except ValueError:  # e.g. Linear: a gene that is not measured has no embedding
                continue
        if parts:
            out[name] = ad.concat(parts)
    return out


def one_run(run, seed, args, gene2go, tables) -> None:
    """Train/predict every method on ``run``, score with both judges, append to ``tables``."""
    folder = Path(tempfile.mkdtemp(prefix=f"peers_{run.name}_{seed}_"))
    run.canon.write_h5ad(folder / "canonical.h5ad")
    preds = baseline_predictions(run.canon) if args.baselines else {}
    for name in args.methods:
        epochs = args.epochs.get(name, METHODS[name][1])
        start = time.time()
        pred, error = run_method(name, run.canon, folder, seed, epochs, args, gene2go)
        print(f"seed {seed} {run.name} {name}: {time.time() - start:.0f} s {error or ''}", flush=True)
        if error is not None:
            tables["failures"].append({"method": name, "run": run.name, "seed": seed, "error": error})
            continue
        if pred.uns["cost"]:
            tables["cost"].append({"method": name, "run": run.name, "seed": seed, "invocation": args.invocation,
                                   **pred.uns["cost"]})  # fmt: skip
        if pred.n_obs:
            preds[name] = pred
    ceiling, second_half, first_half = half_split(run, seed)
    tags = {"seed": seed, "run": run.name}
    for name, pred in preds.items():
        tables["scores"].append(score(pred, run.full, run.split_of, method=name, **tags))
    if args.baselines:
        tables["scores"].append(score(ceiling, second_half, run.split_of, method="Ceiling (split half)", **tags))
    if args.celleval is None:
        return
    items = []
    for name, pred in preds.items():
        items += write_pairs(pred, run.full, folder, f"{name}|{run.name}|{seed}")
    if args.baselines:
        items += write_pairs(ceiling, second_half, folder, f"Ceiling (split half)|{run.name}|{seed}", first_half)
    if not items:  # nothing answered (e.g. a peer that cannot predict any request of this run, baselines off)
        return
    try:
        merged = agreement(our_side(items), run_celleval(items, args.celleval, folder))
    except RuntimeError as err:
        tables["failures"].append({"method": "cell-eval", "run": run.name, "seed": seed, "error": str(err)[-1500:]})
        return
    merged[["method", "run", "seed", "cell_type"]] = merged["id"].str.split("|", expand=True)
    tables["judges"].append(merged.drop(columns="id"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--runs", nargs="+", default=None, help="subset of perturbench, norman_unseen_0/1, sergio")
    parser.add_argument("--epochs", type=json.loads, default={}, help="epoch budgets, e.g. '{\"GEARS\": 5}'")
    parser.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip baselines and ceiling")
    parser.add_argument("--peer-envs", type=Path, default=Path(os.environ.get("PEER_ENVS", "/work/peer_envs")))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per runner call")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "peers.md")
    parser.add_argument("--append", action="store_true", help="add to the raw rows already next to --out")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    celleval = args.peer_envs / "celleval" / "bin" / "python"
    args.celleval = celleval if celleval.exists() else None
    args.invocation = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")  # cost ratios only within one invocation
    args.out.parent.mkdir(parents=True, exist_ok=True)
    quiet()
    warnings.filterwarnings("ignore")
    files = {k: args.out.with_name(f"{args.out.stem}{s}.csv") for k, s in
             (("scores", ""), ("cost", "_cost"), ("judges", "_judges"), ("failures", "_failures"))}  # fmt: skip
    tables = {k: [] for k in files}
    if not args.report_only:
        start = time.time()
        gene2go = pd.read_csv(DATA / "gene_priors" / "go_human_orghseg_3.16.tsv.gz", sep="\t",
                              usecols=["symbol", "go_id"]).drop_duplicates()  # fmt: skip
        for seed in args.seeds:
            runs = perturbench_runs(DATA / "perturbench_devel_norman19_mcfaline23.h5ad", seed)
            runs.append(sergio_run(DATA / "sergio_rs_knockout_sim_500genes.h5ad", seed))
            for run in runs:
                if args.runs is None or run.name in args.runs:
                    one_run(run, seed, args, gene2go, tables)
        for key, path in files.items():
            rows = tables[key]
            frame = pd.concat(rows, ignore_index=True) if rows and isinstance(rows[0], pd.DataFrame) else None
            frame = pd.DataFrame(rows) if frame is None else frame
            if args.append and path.exists() and path.stat().st_size > 1:  # an empty table is written as "\n"
                frame = pd.concat([pd.read_csv(path), frame], ignore_index=True)
            frame.to_csv(path, index=False)
        print(f"total {time.time() - start:.0f} s")
    command = "python benchmarks/side_by_side.py " + " ".join(sys.argv[1:])
    header = [f"Command: `{command}`", f"Date: {datetime.date.today()}; machine: {cpu_model()}."]
    text = report({k: pd.read_csv(p) if p.exists() and p.stat().st_size > 1 else pd.DataFrame()
                   for k, p in files.items()}, header)  # fmt: skip
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
