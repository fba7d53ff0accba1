"""Streamed inference on 1M cells: embedding and perturbation prediction from a backed file vs from RAM.

The parent writes ``--n-cells`` x 2,000 synthetic counts as in ``scale.py`` (same generator), adds a perturbation
label per cell (50 % ``control``, the rest spread over the singles ``g0`` ... ``g9``; labels are random, so this
measures cost, not accuracy), and shuffles the rows with :func:`biojepa.data.write_shuffled_h5ad`. For each mode
(``backed``: ``read_h5ad(path, backed="r")`` and block-shuffled training; ``memory``: ``read_h5ad(path)``) and
seed, a fresh worker registers the data with the perturbation key, builds BioJEPA, trains 20 steps (batch size
1024; the weights do not matter for cost), then times

- ``get_latent_representation(batch_size=1024)`` over every cell (streamed minibatches), and
- ``predict_perturbation(["g0", "g1+g2"])``: the control group (about half of the cells) and the singles are
  encoded and averaged chunk by chunk.

Peak RSS is read after setup, after embedding and after prediction (``ru_maxrss`` of the worker).

Run ``python benchmarks/scale_inference.py --out benchmarks/results/scale_inference`` (about 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from _common import machine_info, quiet, run_worker
from scale import GIB_PER_KIB, peak_rss_kib, write_raw


def add_conditions(path: Path, seed: int = 0) -> None:
    """Replace the file's ``obs`` with one that also has a random ``condition`` per cell."""
    import anndata as ad
    import h5py
    from anndata.io import write_elem

    obs = ad.read_h5ad(path, backed="r").obs.copy()
    rng = np.random.default_rng(seed)
    singles = np.array([f"g{i}" for i in range(10)])
    labels = np.where(rng.random(len(obs)) < 0.5, "control", singles[rng.integers(0, 10, len(obs))])
    obs["condition"] = pd.Categorical(labels)
    with h5py.File(path, "a") as f:
        del f["obs"]
        write_elem(f, "obs", obs)


def worker(args) -> dict:
    import anndata as ad
    import scvi

    import biojepa as bj

    backed = args.mode == "backed"
    scvi.settings.seed = args.seed
    adata = ad.read_h5ad(args.h5ad, backed="r" if backed else None)
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
    model = bj.BioJEPA(adata)
    model.train(
        max_epochs=1,
        limit_train_batches=20,
        batch_size=1024,
        train_size=1.0,
        block_shuffle=backed,
        enable_progress_bar=False,
    )
    rss_setup = peak_rss_kib()
    t0 = time.perf_counter()
    z = model.get_latent_representation(batch_size=1024, progress_bar=False)
    latent_s = time.perf_counter() - t0
    rss_latent = peak_rss_kib()
    t0 = time.perf_counter()
    pred = model.predict_perturbation(["g0", "g1+g2"])
    predict_s = time.perf_counter() - t0
    return {
        "n_cells": adata.n_obs,
        "latent_s": latent_s,
        "latent_finite": bool(np.isfinite(z).all()),
        "predict_s": predict_s,
        "predict_finite": bool(np.isfinite(pred.X).all()),
        "rss_setup_kib": rss_setup,
        "rss_latent_kib": rss_latent,
        "peak_rss_kib": peak_rss_kib(),
        "load_1m": os.getloadavg()[0],
    }


def ms(values) -> str:
    values = np.asarray(values, dtype=float)
    return f"{values.mean():.1f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.1f}"


def parent(args) -> None:
    from biojepa.data import write_shuffled_h5ad

    load_start = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(dir=args.tmp_dir) as d:
        raw, shuffled = Path(d) / "raw.h5ad", Path(d) / "shuffled.h5ad"
        data = write_raw(args.n_cells, raw)
        add_conditions(raw)
        write_shuffled_h5ad(raw, shuffled, seed=0)
        raw.unlink()
        for seed in args.seeds:
            for mode in ("backed", "memory"):
                extra = ["--h5ad", str(shuffled), "--mode", mode, "--seed", str(seed)]
                r = run_worker(__file__, Path(d) / "r.json", extra)[0]
                rows.append({"mode": mode, "seed": seed, **r})
                print(
                    f"  seed {seed} {mode:<7} latent {r['latent_s']:6.1f} s  predict {r['predict_s']:6.1f} s  "
                    f"peak RSS {r['peak_rss_kib'] * GIB_PER_KIB:.2f} GiB  load {r['load_1m']:.1f}",
                    flush=True,
                )
    frame = pd.DataFrame(rows)
    cmd = shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
    lines = ["## Streamed inference", "", f"Command: `{cmd}`", ""]
    lines += [f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}", ""]
    lines += [f"- {k}: {v}" for k, v in machine_info().items()]
    lines += [f"- 1-min load average at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f}"]
    lines += [f"- {args.n_cells:,} cells x 2000 genes, {100 * data['density']:.1f} % nonzero; seeds {args.seeds}", ""]
    lines += [
        "| data | embed all cells (s) | cells / s | predict 2 perturbations (s) | peak RSS after setup / embedding / "
        "prediction (GiB) | all outputs finite |",
        "|---|---:|---:|---:|---|---|",
    ]
    for mode in ("backed", "memory"):
        g = frame[frame["mode"] == mode]
        rss = " / ".join(f"{g[k].max() * GIB_PER_KIB:.2f}" for k in ("rss_setup_kib", "rss_latent_kib", "peak_rss_kib"))
        finite = bool(g.latent_finite.all() and g.predict_finite.all())
        lines.append(
            f"| {mode} | {ms(g.latent_s)} | {ms(g.n_cells / g.latent_s)} | {ms(g.predict_s)} | {rss} | {finite} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out + ".md").write_text(text)
        frame.to_csv(args.out + ".csv", index=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-cells", type=int, default=1_000_000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tmp-dir", default=None)
    p.add_argument("--out", default=None)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--h5ad", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        quiet()
        Path(args.result).write_text(json.dumps(worker(args)))
    else:
        parent(args)


if __name__ == "__main__":
    main()
