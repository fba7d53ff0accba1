"""Shared helpers of the benchmark scripts: synthetic counts, machine description, quiet logging."""

from __future__ import annotations

import json
import logging
import os
import platform
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp


def synthetic_counts(
    n_cells: int, n_genes: int = 2000, seed: int = 0, rank: int = 10, n_types: int = 12, chunk: int = 10_000
) -> sp.csr_matrix:
    """Negative-binomial counts (float32 CSR, ~9 % nonzero, ~300 counts per cell) from a low-rank log-mean.

    ``log mu = gene base + cell-type factors @ gene loadings + log library``; counts are drawn as a gamma-Poisson
    mixture with a per-gene dispersion. Generated in chunks of ``chunk`` cells to bound memory.
    """
    rng = np.random.default_rng(seed)
    base = rng.normal(-3.3, 1.3, n_genes).astype(np.float32)
    loadings = rng.normal(0.0, 0.3, (rank, n_genes)).astype(np.float32)
    centers = rng.normal(0.0, 1.0, (n_types, rank)).astype(np.float32)
    theta = np.exp(rng.normal(0.5, 0.8, n_genes)).astype(np.float32)
    blocks = []
    for start in range(0, n_cells, chunk):
        n = min(chunk, n_cells - start)
        factors = centers[rng.integers(0, n_types, n)] + 0.3 * rng.standard_normal((n, rank), dtype=np.float32)
        library = rng.normal(0.0, 0.35, (n, 1)).astype(np.float32)
        mu = np.exp(base + factors @ loadings + library)
        rate = rng.standard_gamma(theta, size=(n, n_genes), dtype=np.float32) * (mu / theta)
        blocks.append(sp.csr_matrix(rng.poisson(rate).astype(np.float32)))
    return sp.vstack(blocks, format="csr")


def cpu_model() -> str:
    """CPU model name from ``/proc/cpuinfo`` (falls back to :func:`platform.processor`)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, str]:
    """CPU, core count, Python and package versions."""
    import scvi
    import torch

    import biojepa

    return {
        "CPU": cpu_model(),
        "os.cpu_count()": str(os.cpu_count()),
        "torch.get_num_threads()": str(torch.get_num_threads()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "scvi-tools": scvi.__version__,
        "biojepa": biojepa.__version__,
    }


def quiet() -> None:
    """Silence Lightning / scvi-tools chatter and warnings."""
    warnings.filterwarnings("ignore")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "scvi", "biojepa"):
        logging.getLogger(name).setLevel(logging.ERROR)


def run_worker(script: str, result: Path, extra: list[str]) -> list[dict]:
    """Run ``script --worker --result RESULT *extra`` in a fresh interpreter; return (and delete) the JSON results.

    A worker writes ``RESULT``, or under DDP one ``RESULT.rank{r}`` per process; every such file is returned.
    """
    cmd = [sys.executable, os.path.abspath(script), "--worker", "--result", str(result), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {extra} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    files = sorted(result.parent.glob(result.name + "*"))
    out = [json.loads(f.read_text()) for f in files]
    for f in files:
        f.unlink()
    return out
