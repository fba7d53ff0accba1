"""Command line, seeding, timing and peak memory shared by the runners (imported inside the peers' environments)."""

from __future__ import annotations

import argparse
import os
import random
import resource
import time

import numpy as np


def parse_args(description: str, default_epochs: int) -> argparse.Namespace:
    """``--input``, ``--output``, ``--seed``, ``--epochs`` (the epoch budget), ``--threads``; threads set at once."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", required=True, help="the peer's input .h5ad written by the adapter")
    parser.add_argument("--output", required=True, help="prediction .h5ad to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=default_epochs)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    return args


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and (if installed) torch."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002  (peers draw from the legacy global generator)
    try:
        import torch

        torch.manual_seed(seed)
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    except ImportError:
        pass


class Timer:
    """Context manager measuring wall-clock seconds of training."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.start


def cost(seconds: float, epochs: float, n_cells: int) -> dict:
    """Training cost: seconds, epochs run, training cells, cells/s (cells x epochs / s) and peak RSS in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB; on Linux kept across exec from the parent
    try:  # VmHWM: this process image's own peak (reset at exec)
        with open("/proc/self/status") as f:
            peak = next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        pass
    return {"train_seconds": seconds, "epochs": epochs, "n_train_cells": n_cells,
            "cells_per_s": n_cells * epochs / max(seconds, 1e-9), "peak_rss_mib": peak}  # fmt: skip
