"""Scale: seconds per epoch and peak memory on 100k and 1M cells, in RAM vs backed vs backed + block-shuffled, 1 vs 2
processes, BioJEPA vs SCVI at the same batch size.

What it does
------------
1. For each ``--n-cells`` (default 100,000 and 1,000,000), the parent writes ``n`` x 2,000 synthetic counts (float32
   CSR, about 5 % nonzero: negative-binomial counts from a low-rank log-mean, see :func:`chunk_counts`) to a
   ``raw.h5ad`` chunk by chunk, cells ordered by cell type (as files often are), then runs
   :func:`biojepa.data.write_shuffled_h5ad` on it in a worker (timed; peak RSS) to get ``shuffled.h5ad``.
2. For every repeat it runs each configuration in a fresh worker process, models interleaved so that machine noise
   hits them alike:

   - ``BioJEPA in RAM``: ``read_h5ad(path)``, scvi-tools' random minibatches;
   - ``BioJEPA backed``: ``read_h5ad(path, backed="r")``, random minibatches (scattered row reads);
   - ``BioJEPA backed+block``: backed, ``block_shuffle=True`` (one contiguous block per minibatch);
   - ``BioJEPA backed+block 2 procs``: the same under Lightning DDP, ``devices=2, strategy="ddp"`` on CPU (gloo),
     one thread per process, the batch size per process halved so that a step sees the same number of cells;
   - ``SCVI in RAM`` and ``SCVI backed``: :class:`scvi.model.SCVI` with its defaults, same data and batch size.

   Each worker registers the data, builds the model (timed as setup: BioJEPA computes gene statistics, an SVD and
   k-means on 10,000 cells) and trains ``--epochs`` epoch(s) with ``train_size=1.0`` and no validation. Seconds
   per epoch are timed by a Lightning callback (epoch start to end, rank 0); cells/s = cells / s per epoch. Peak
   RSS is the worker's ``ru_maxrss`` (for 2 processes: the sum over ranks).
3. It writes a markdown report and a CSV of every run.

Defaults: batch size 1024, 1 epoch, 3 repeats (seeds 0, 1, 2 of the model; the data are fixed), torch's default
threads (2 on this machine). About 1.5 hours on 2 cores.

Run
---
``python benchmarks/scale.py --out benchmarks/results/scale``
``python benchmarks/scale.py --n-cells 20000 --repeats 1 --out /tmp/scale`` (quick check)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, quiet, run_worker

N_GENES = 2000
GIB_PER_KIB = 1 / 1024**2
CONFIGS = {  # name: (model, backed, block, processes)
    "BioJEPA in RAM": ("BioJEPA", False, False, 1),
    "SCVI in RAM": ("SCVI", False, False, 1),
    "BioJEPA backed": ("BioJEPA", True, False, 1),
    "SCVI backed": ("SCVI", True, False, 1),
    "BioJEPA backed+block": ("BioJEPA", True, True, 1),
    "BioJEPA backed+block 2 procs": ("BioJEPA", True, True, 2),
}


# ----------------------------------------------------------------------------------------------- data
def chunk_counts(n: int, cell_type: int, params: dict, rng: np.random.Generator):
    """``n`` cells of one type: gamma-Poisson counts with ``log mu = base + factors @ loadings + library``."""
    import scipy.sparse as sp

    factors = params["centers"][cell_type] + 0.3 * rng.standard_normal((n, params["rank"]), dtype=np.float32)
    library = rng.normal(0.0, 0.35, (n, 1)).astype(np.float32)
    mu = np.exp(params["base"] + factors @ params["loadings"] + library)
    rate = rng.standard_gamma(params["theta"], size=(n, N_GENES), dtype=np.float32) * (mu / params["theta"])
    counts = rng.poisson(rate).astype(np.float32)
    counts[:, 0] += 1  # no empty cells
    return sp.csr_matrix(counts)


def write_raw(n_cells: int, path: Path, chunk: int = 20_000, n_types: int = 12) -> dict:
    """Write ``n_cells`` x 2,000 counts to ``path`` chunk by chunk, cells sorted by type; return stats."""
    import anndata as ad
    import h5py
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    rng = np.random.default_rng(0)
    rank = 10
    params = {
        "rank": rank,
        "base": rng.normal(-4.1, 1.3, N_GENES).astype(np.float32),
        "loadings": rng.normal(0.0, 0.3, (rank, N_GENES)).astype(np.float32),
        "centers": rng.normal(0.0, 1.0, (n_types, rank)).astype(np.float32),
        "theta": np.exp(rng.normal(0.5, 0.8, N_GENES)).astype(np.float32),
    }
    types = np.sort(rng.integers(0, n_types, n_cells))
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type{t}" for t in types])}, index=[f"c{i}" for i in range(n_cells)]
    )
    var = pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)])
    t0 = time.perf_counter()
    ad.AnnData(obs=obs, var=var).write_h5ad(path)
    nnz = 0
    with h5py.File(path, "a") as f:
        for start in range(0, n_cells, chunk):
            stop = min(start + chunk, n_cells)
            piece = []
            for t in np.unique(types[start:stop]):
                n = int(np.sum(types[start:stop] == t))
                piece.append(chunk_counts(n, int(t), params, rng))
            X = sp.vstack(piece, format="csr")
            nnz += X.nnz
            if start == 0:
                write_elem(f, "X", X)
            else:
                sparse_dataset(f["X"]).append(X)
    return {"write_s": time.perf_counter() - t0, "density": nnz / (n_cells * N_GENES), "nnz": nnz}


# ----------------------------------------------------------------------------------------------- worker side
def peak_rss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def shuffle_worker(args) -> dict:
    """Worker: write the row-shuffled copy."""
    from biojepa.data import write_shuffled_h5ad

    t0 = time.perf_counter()
    write_shuffled_h5ad(args.h5ad, args.output, seed=0, chunk_size=100_000, overwrite=True)
    return {"shuffle_s": time.perf_counter() - t0, "peak_rss_kib": peak_rss_kib()}


def train_worker(args) -> dict:
    """Worker: register, build and train one configuration; time each epoch."""
    import anndata as ad
    import scvi
    import torch
    from lightning.pytorch.callbacks import Callback

    import biojepa as bj

    model_name, backed, block, procs = CONFIGS[args.config]

    class EpochTimer(Callback):
        def __init__(self):
            self.times, self._t = [], 0.0

        def on_train_epoch_start(self, trainer, pl_module):
            self._t = time.perf_counter()

        def on_train_epoch_end(self, trainer, pl_module):
            self.times.append(time.perf_counter() - self._t)

    scvi.settings.seed = args.seed
    adata = ad.read_h5ad(args.h5ad, backed="r" if backed else None)
    t0 = time.perf_counter()
    cls = bj.BioJEPA if model_name == "BioJEPA" else scvi.model.SCVI
    cls.setup_anndata(adata)
    model = cls(adata)
    setup_s = time.perf_counter() - t0
    timer = EpochTimer()
    kwargs = {"max_epochs": args.epochs, "train_size": 1.0, "enable_progress_bar": False, "callbacks": [timer]}
    kwargs["batch_size"] = args.batch_size // procs
    if block:
        kwargs["block_shuffle"] = True
    if procs > 1:
        kwargs.update(accelerator="cpu", devices=procs, strategy="ddp")
    t0 = time.perf_counter()
    model.train(**kwargs)
    train_s = time.perf_counter() - t0
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return {
        "rank": rank,
        "setup_s": setup_s,
        "train_s": train_s,
        "epoch_s": timer.times,
        "n_cells": adata.n_obs,
        "threads": torch.get_num_threads(),
        "peak_rss_kib": peak_rss_kib(),
        "load_1m": os.getloadavg()[0],
    }


def worker_main(args) -> None:
    quiet()
    result = shuffle_worker(args) if args.shuffle else train_worker(args)
    suffix = f".rank{result.get('rank', 0)}" if not args.shuffle else ""
    Path(args.result + suffix).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------- parent side
def run_size(n_cells: int, args, workdir: Path) -> tuple[list[dict], dict]:
    raw, shuffled = workdir / f"raw_{n_cells}.h5ad", workdir / f"shuffled_{n_cells}.h5ad"
    data = write_raw(n_cells, raw)
    shuffle_args = ["--shuffle", "--h5ad", str(raw), "--output", str(shuffled)]
    data.update(run_worker(__file__, workdir / "shuffle.json", shuffle_args)[0])
    raw.unlink()
    data["file_gib"] = shuffled.stat().st_size / 1024**3
    print(
        f"{n_cells} cells: {100 * data['density']:.1f} % nonzero, written in {data['write_s']:.0f} s, shuffled in "
        f"{data['shuffle_s']:.0f} s (peak RSS {data['peak_rss_kib'] * GIB_PER_KIB:.2f} GiB)",
        flush=True,
    )
    rows = []
    for seed in args.seeds:
        for config in args.configs:
            extra = ["--h5ad", str(shuffled), "--config", config, "--seed", str(seed)]
            extra += ["--batch-size", str(args.batch_size), "--epochs", str(args.epochs)]
            ranks = run_worker(__file__, workdir / "train.json", extra)
            r0 = next(r for r in ranks if r["rank"] == 0)
            epoch_s = float(np.mean(r0["epoch_s"]))
            row = {
                "n_cells": n_cells,
                "config": config,
                "seed": seed,
                "s_per_epoch": epoch_s,
                "cells_per_s": n_cells / epoch_s,
                "setup_s": r0["setup_s"],
                "peak_rss_gib": sum(r["peak_rss_kib"] for r in ranks) * GIB_PER_KIB,
                "peak_rss_per_proc_gib": max(r["peak_rss_kib"] for r in ranks) * GIB_PER_KIB,
                "processes": len(ranks),
                "threads": r0["threads"],
                "load_1m": r0["load_1m"],
            }
            rows.append(row)
            print(
                f"  seed {seed} {config:<30} {epoch_s:7.1f} s/epoch {row['cells_per_s']:8.0f} cells/s  "
                f"setup {row['setup_s']:5.1f} s  peak RSS {row['peak_rss_gib']:.2f} GiB  load {row['load_1m']:.1f}",
                flush=True,
            )
    shuffled.unlink()
    return rows, data


def ms(values) -> str:
    values = np.asarray(values, dtype=float)
    sd = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.1f} ± {sd:.1f}" if values.mean() < 100 else f"{values.mean():.0f} ± {sd:.0f}"


def report(frame: pd.DataFrame, data: dict, args, load_start: float) -> str:
    cmd = shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
    lines = ["## Scale: 100k and 1M cells, backed and block-shuffled, 1 vs 2 processes", ""]
    lines += [f"Command: `{cmd}`", "", f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}", ""]
    lines += [f"- {k}: {v}" for k, v in machine_info().items()]
    lines += [f"- 1-min load average at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f}", ""]
    for n, d in data.items():
        lines.append(
            f"- {n:,} cells x {N_GENES} genes: {100 * d['density']:.1f} % nonzero, shuffled file "
            f"{d['file_gib']:.2f} GiB; `write_shuffled_h5ad` took {d['shuffle_s']:.0f} s at peak RSS "
            f"{d['peak_rss_kib'] * GIB_PER_KIB:.2f} GiB"
        )
    lines += [
        "",
        f"Batch size {args.batch_size} (per step; split over the processes), {args.epochs} epoch(s), seeds "
        f"{args.seeds}, mean ± sd over seeds. Peak RSS: max over seeds (sum over ranks for 2 processes).",
        "",
        "| cells | configuration | s / epoch | cells / s | setup (s) | peak RSS (GiB) "
        "| ratio to SCVI in RAM (cells/s) |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for n, group in frame.groupby("n_cells", sort=True):
        scvi_rate = group[group.config == "SCVI in RAM"].cells_per_s.mean()
        for config in args.configs:
            g = group[group.config == config]
            ratio = g.cells_per_s.mean() / scvi_rate if np.isfinite(scvi_rate) else float("nan")
            lines.append(
                f"| {n:,} | {config} | {ms(g.s_per_epoch)} | {ms(g.cells_per_s)} | {ms(g.setup_s)} "
                f"| {g.peak_rss_gib.max():.2f} | {ratio:.2f} |"
            )
    sizes = sorted(frame.n_cells.unique())
    if len(sizes) > 1:
        lines += [
            "",
            f"Growth of s/epoch from {sizes[0]:,} to {sizes[-1]:,} cells ({sizes[-1] / sizes[0]:.0f}x cells):",
            "",
        ]
        for config in args.configs:
            a = frame[(frame.n_cells == sizes[0]) & (frame.config == config)].s_per_epoch.mean()
            b = frame[(frame.n_cells == sizes[-1]) & (frame.config == config)].s_per_epoch.mean()
            lines.append(f"- {config}: {b / a:.1f}x")
    return "\n".join(lines) + "\n"


def parent_main(args) -> None:
    load_start = os.getloadavg()[0]
    rows, data = [], {}
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as d:
        for n in args.n_cells:
            r, data[n] = run_size(n, args, Path(d))
            rows += r
    frame = pd.DataFrame(rows)
    text = report(frame, data, args, load_start)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out + ".md").write_text(text)
        frame.to_csv(args.out + ".csv", index=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-cells", type=int, nargs="+", default=[100_000, 1_000_000])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--tmp-dir", default=None)
    p.add_argument("--out", default=None)
    # worker arguments
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shuffle", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--h5ad", help=argparse.SUPPRESS)
    p.add_argument("--output", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    worker_main(args) if args.worker else parent_main(args)


if __name__ == "__main__":
    main()
