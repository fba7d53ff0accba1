"""Training throughput and peak memory of BioJEPA vs scVI on synthetic counts.

What it measures
----------------
The parent generates ``--n-cells`` x 2,000 synthetic negative-binomial counts (float32 CSR, ~9 % nonzero; see
``_common.synthetic_counts``) once, writes them to a temporary ``.h5ad`` and, for every repeat, batch size and
model (in the order BioJEPA, SCVI, BioJEPA, SCVI, ... so machine noise hits both), starts a fresh worker process
that reads the file into RAM, registers it, builds the model (timed separately as "setup") and times
``model.train(max_epochs=--epochs, train_size=1.0)`` (no validation, no progress bar). Throughput is
``n_cells * epochs / train wall time``. Peak RSS is ``ru_maxrss`` of the worker; "training overhead" is that
peak minus the worker's resident memory right after loading the data (it includes model construction, whose own
peak is reported as "peak RSS after setup"). Defaults: 100,000 cells, 1 epoch,
batch sizes 128 and 1024, 3 repeats (about 15 min on 2 cores).

Threads are left at torch's default (one per core) unless ``--threads N`` is given. On a machine shared with
other CPU jobs, torch's intra-op thread pool oversubscribes the cores and small batches slow down many-fold
(each operator waits for a descheduled thread); the 1-min load average is printed per run for that reason, and
``--threads 1`` gives numbers that are far less sensitive to other jobs.

``--profile`` instead runs one BioJEPA epoch at batch size 1024 in a worker: it times one pass over the data
loader alone, one epoch with Lightning's simple profiler (time per training hook) and one epoch under
``torch.profiler`` (top 15 operators by self CPU time).

Run
---
``python benchmarks/speed.py --out docs/_speed.md``
``python benchmarks/speed.py --n-cells 5000 --repeats 1`` (quick check)
``python benchmarks/speed.py --profile --n-cells 20000``
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

from _common import machine_info, quiet, run_worker, synthetic_counts

MODELS = ("BioJEPA", "SCVI")
N_GENES = 2000
GIB_PER_KIB = 1 / 1024**2


# ----------------------------------------------------------------------------------------------- worker side


def peak_rss_kib() -> int:
    """Peak resident memory of this process so far (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def current_rss_kib() -> int:
    """Current resident memory of this process (KiB), from ``/proc/self/status``."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return peak_rss_kib()


def build_model(name: str, path: str, biojepa_kwargs: dict | None = None):
    """Read the h5ad into RAM, register it and build the model; return ``(model, adata, times, rss)``."""
    import anndata
    import scvi

    import biojepa as bj

    scvi.settings.seed = 0
    t0 = time.perf_counter()
    adata = anndata.read_h5ad(path)
    load_s = time.perf_counter() - t0
    rss_loaded = current_rss_kib()
    cls = bj.BioJEPA if name == "BioJEPA" else scvi.model.SCVI
    t0 = time.perf_counter()
    cls.setup_anndata(adata)
    model = cls(adata, **(biojepa_kwargs or {})) if name == "BioJEPA" else cls(adata)
    setup_s = time.perf_counter() - t0
    return model, adata, {"load_s": load_s, "setup_s": setup_s}, rss_loaded


def train_kwargs(batch_size: int, epochs: int) -> dict:
    """Keyword arguments of ``model.train`` shared by both models."""
    return {"max_epochs": epochs, "batch_size": batch_size, "train_size": 1.0, "enable_progress_bar": False}


def run_timing(args) -> dict:
    """Worker: build one model, time ``train`` and read peak RSS."""
    import torch

    model, adata, times, rss_loaded = build_model(args.model, args.h5ad, args.biojepa_kwargs)
    peak_setup = peak_rss_kib()
    t0 = time.perf_counter()
    model.train(**train_kwargs(args.batch_size, args.epochs))
    train_s = time.perf_counter() - t0
    peak = peak_rss_kib()
    load_1m = os.getloadavg()[0]
    return {
        **times,
        "train_s": train_s,
        "cells_per_s": adata.n_obs * args.epochs / train_s,
        "rss_loaded_kib": rss_loaded,
        "peak_setup_kib": peak_setup,
        "peak_rss_kib": peak,
        "overhead_kib": peak - rss_loaded,
        "threads": torch.get_num_threads(),
        "load_1m": load_1m,
    }


def time_loader(model, adata, batch_size: int) -> float:
    """Seconds for one shuffled pass over the model's data loader, with no model work."""
    t0 = time.perf_counter()
    for _ in model._make_data_loader(adata=adata, batch_size=batch_size, shuffle=True):
        pass
    return time.perf_counter() - t0


def hook_table(durations: dict, train_s: float, n_rows: int = 10) -> str:
    """Markdown table of Lightning simple-profiler actions by total time."""
    rows = sorted(((sum(d), len(d), k) for k, d in durations.items()), reverse=True)[:n_rows]
    lines = ["| Lightning action (nested) | calls | total (s) | % of train() |", "|---|---:|---:|---:|"]
    lines += [f"| `{k}` | {n} | {t:.2f} | {100 * t / train_s:.1f} |" for t, n, k in rows]
    return "\n".join(lines)


def run_profile(args) -> dict:
    """Worker: data-loader pass, one epoch with Lightning's simple profiler, one epoch under torch.profiler."""
    import torch
    from lightning.pytorch.profilers import SimpleProfiler
    from torch.profiler import ProfilerActivity, profile

    model, adata, times, _ = build_model("BioJEPA", args.h5ad, args.biojepa_kwargs)
    loader_s = time_loader(model, adata, args.batch_size)
    t0 = time.perf_counter()
    model.train(**train_kwargs(args.batch_size, 1), profiler=SimpleProfiler())
    train_s = time.perf_counter() - t0
    hooks = hook_table(model.trainer.profiler.recorded_durations, train_s)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        model.train(**train_kwargs(args.batch_size, 1))
    events = prof.key_averages()
    total_self = sum(e.self_cpu_time_total for e in events)
    top = sorted(events, key=lambda e: e.self_cpu_time_total, reverse=True)[:15]
    ops = ["| op | calls | self CPU (s) | % of self CPU |", "|---|---:|---:|---:|"]
    for e in top:
        t = e.self_cpu_time_total
        ops.append(f"| `{e.key}` | {e.count} | {t / 1e6:.2f} | {100 * t / total_self:.1f} |")
    return {
        **times,
        "n_cells": adata.n_obs,
        "loader_s": loader_s,
        "train_s": train_s,
        "hooks": hooks,
        "ops": "\n".join(ops),
        "threads": torch.get_num_threads(),
    }


def worker_main(args) -> None:
    """Entry point of a worker process: write the result as JSON to ``args.result``."""
    quiet()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run_profile(args) if args.profile else run_timing(args)
    Path(args.result).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------- parent side


def spawn(h5ad: Path, model: str, batch_size: int, args) -> dict:
    """Run one worker in a fresh interpreter and return its JSON result."""
    result = h5ad.with_suffix(f".{model}.{batch_size}.json")
    extra = ["--h5ad", str(h5ad), "--model", model, "--batch-size", str(batch_size), "--epochs", str(args.epochs)]
    extra += ["--profile"] if args.profile else []
    extra += ["--threads", str(args.threads)] if args.threads else []
    extra += ["--biojepa-kwargs", json.dumps(args.biojepa_kwargs)] if args.biojepa_kwargs else []
    return run_worker(__file__, result, extra)[0]


def write_data(n_cells: int, directory: str) -> Path:
    """Generate the synthetic counts and write them to ``directory/data.h5ad``."""
    import anndata

    t0 = time.perf_counter()
    X = synthetic_counts(n_cells, N_GENES, seed=0)
    gen_s = time.perf_counter() - t0
    path = Path(directory) / "data.h5ad"
    anndata.AnnData(X).write_h5ad(path)
    density = X.nnz / (X.shape[0] * X.shape[1])
    print(f"data: {X.shape[0]} x {X.shape[1]} CSR float32, {100 * density:.1f} % nonzero, generated in {gen_s:.1f} s")
    return path


def progress_line(r: dict) -> str:
    """One line per finished worker."""
    return (
        f"{r['cells_per_s']:8.0f} cells/s  train {r['train_s']:6.1f} s  setup {r['setup_s']:5.1f} s  "
        f"peak RSS {r['peak_rss_kib'] * GIB_PER_KIB:.2f} GiB  threads {r['threads']}  load {r['load_1m']:.1f}"
    )


def run_benchmark(path: Path, args) -> dict:
    """All timing runs, alternating the models; returns ``{(model, batch_size): [results]}``."""
    results = {(m, bs): [] for m in MODELS for bs in args.batch_sizes}
    for rep in range(args.repeats):
        for bs in args.batch_sizes:
            for model in MODELS:
                r = spawn(path, model, bs, args)
                results[model, bs].append(r)
                print(f"  repeat {rep + 1}/{args.repeats} bs={bs:<5} {model:<8}{progress_line(r)}", flush=True)
    return results


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.mean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def fmt(values: list[float], digits: int = 0) -> str:
    """``mean ± sd``."""
    m, s = mean_sd(values)
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def gib(results: list[dict], key: str) -> str:
    """Maximum of ``key`` (KiB) over repeats, in GiB."""
    return f"{max(r[key] for r in results) * GIB_PER_KIB:.2f}"


def throughput_table(results: dict, batch_sizes: list[int]) -> str:
    """The main markdown table: throughput, ratio and peak RSS per batch size."""
    lines = [
        "| batch size | BioJEPA cells/s (mean ± sd) | SCVI cells/s (mean ± sd) | ratio BioJEPA/SCVI "
        "| BioJEPA peak RSS (GiB) | SCVI peak RSS (GiB) |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for bs in batch_sizes:
        b, s = results["BioJEPA", bs], results["SCVI", bs]
        ratio = mean_sd([r["cells_per_s"] for r in b])[0] / mean_sd([r["cells_per_s"] for r in s])[0]
        lines.append(
            f"| {bs} | {fmt([r['cells_per_s'] for r in b])} | {fmt([r['cells_per_s'] for r in s])} | {ratio:.2f} "
            f"| {gib(b, 'peak_rss_kib')} | {gib(s, 'peak_rss_kib')} |"
        )
    return "\n".join(lines)


def detail_table(results: dict, batch_sizes: list[int]) -> str:
    """Setup times and the memory split (after load vs training overhead) per model and batch size."""
    lines = [
        "| model | batch size | read h5ad (s) | setup + init (s) | RSS after load (GiB) | peak RSS after setup (GiB) "
        "| training overhead (GiB) | 1-min load avg at end |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for model in MODELS:
        for bs in batch_sizes:
            rs = results[model, bs]
            lines.append(
                f"| {model} | {bs} | {fmt([r['load_s'] for r in rs], 1)} | {fmt([r['setup_s'] for r in rs], 1)} "
                f"| {gib(rs, 'rss_loaded_kib')} | {gib(rs, 'peak_setup_kib')} | {gib(rs, 'overhead_kib')} "
                f"| {fmt([r['load_1m'] for r in rs], 1)} |"
            )
    return "\n".join(lines)


def header(args, load_start: float) -> str:
    """Markdown section header: command, date, machine, what was run."""
    cmd = shlex.join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
    lines = ["## Training speed: BioJEPA vs SCVI", "", f"Command: `{cmd}`", ""]
    lines += [f"Date: {datetime.datetime.now().isoformat(timespec='seconds')}", ""]
    info = machine_info()
    if args.threads:
        info["torch.get_num_threads()"] = f"{args.threads} (set by --threads)"
    if args.biojepa_kwargs:
        info["BioJEPA arguments"] = json.dumps(args.biojepa_kwargs)
    lines += [f"- {k}: {v}" for k, v in info.items()]
    lines.append(f"- 1-min load average at start / end: {load_start:.1f} / {os.getloadavg()[0]:.1f}")
    data = f"Data: {args.n_cells} cells x {N_GENES} genes synthetic NB counts (CSR float32)"
    if args.profile:
        lines += ["", f"{data}.", "", ""]
        return "\n".join(lines)
    lines += [
        "",
        f"{data}; {args.epochs} epoch(s), train_size=1.0, {args.repeats} repeat(s) per cell of the table, each run "
        "in a fresh process, models alternated. Throughput = cells x epochs / wall time of `train()`; "
        "peak RSS = max over repeats.",
        "",
        "",
    ]
    return "\n".join(lines)


def profile_report(r: dict, batch_size: int) -> str:
    """Markdown of a profile worker's result."""
    frac = r["loader_s"] / r["train_s"]
    return "\n".join(
        [
            f"### BioJEPA profile: {r['n_cells']} cells, batch size {batch_size}, 1 epoch, {r['threads']} threads",
            "",
            f"- setup + init: {r['setup_s']:.1f} s",
            f"- `train()` wall time (Lightning simple profiler only): {r['train_s']:.1f} s "
            f"({r['n_cells'] / r['train_s']:.0f} cells/s)",
            f"- one data-loader pass alone: {r['loader_s']:.1f} s = {100 * frac:.1f} % of `train()`; "
            f"the remaining {100 * (1 - frac):.1f} % is the training step (forward, backward, optimizer, EMA, "
            "logging) and Lightning overhead",
            "",
            r["hooks"],
            "",
            "Top 15 operators by self CPU time (one epoch under `torch.profiler`):",
            "",
            r["ops"],
            "",
        ]
    )


def parent_main(args) -> None:
    """Generate data, run the workers, print (and optionally write) the markdown report."""
    quiet()
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="biojepa_speed_") as tmp:
        path = write_data(args.n_cells, tmp)
        if args.profile:
            body = profile_report(spawn(path, "BioJEPA", 1024, args), 1024)
        else:
            results = run_benchmark(path, args)
            body = throughput_table(results, args.batch_sizes) + "\n\n" + detail_table(results, args.batch_sizes)
    report = header(args, load_start) + body + "\n"
    print("\n" + report)
    if args.out:
        Path(args.out).write_text(report)
        print(f"written to {args.out}")


def parse_args(argv=None) -> argparse.Namespace:
    """Command-line flags (``--worker``, ``--h5ad``, ``--model``, ``--batch-size``, ``--result`` are internal)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-cells", type=int, default=100_000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--profile", action="store_true", help="profile one BioJEPA epoch at batch size 1024 instead")
    p.add_argument("--out", help="also write the markdown report to this path")
    p.add_argument("--threads", type=int, help="torch.set_num_threads in the workers (default: leave torch's default)")
    example = '{"readout_weight": 200, "readout_likelihood": "nb"}'
    p.add_argument("--biojepa-kwargs", type=json.loads, default=None, help=f"BioJEPA model arguments, e.g. '{example}'")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--h5ad", help=argparse.SUPPRESS)
    p.add_argument("--model", choices=MODELS, help=argparse.SUPPRESS)
    p.add_argument("--batch-size", type=int, default=1024, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


if __name__ == "__main__":
    ARGS = parse_args()
    if ARGS.worker:
        worker_main(ARGS)
    else:
        parent_main(ARGS)
