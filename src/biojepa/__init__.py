"""biojepa: Joint Embedding Predictive Architecture for single-cell data."""

from importlib.metadata import PackageNotFoundError, version

from . import baselines, datasets, metrics, pl, tl, tune
from .model import BioJEPA

try:
    __version__ = version("biojepa")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "unknown"

__all__ = ["BioJEPA", "__version__", "baselines", "datasets", "metrics", "pl", "tl", "tune"]
