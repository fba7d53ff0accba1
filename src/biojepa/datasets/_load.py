"""Locate and verify the registered data files; download the public ones through :mod:`pooch`."""

import logging
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

import pooch

from . import _registry
from ._registry import DataFile

__all__ = ["CACHE_DIR_ENV", "DATA_DIR_ENV", "PathLike", "cache_dir", "data_path", "search_dirs", "sha256sum"]

logger = logging.getLogger(__name__)

#: Environment variable naming the directory that holds the data files.
DATA_DIR_ENV = "BIOJEPA_DATA_DIR"
#: Environment variable naming the directory downloads are cached in.
CACHE_DIR_ENV = "BIOJEPA_CACHE_DIR"

PathLike = str | os.PathLike[str]


def sha256sum(path: PathLike) -> str:
    """SHA-256 hex digest of a file (:func:`pooch.file_hash`)."""
    return pooch.file_hash(str(path), alg="sha256")


def _shared_data(root: Path) -> Path:
    """``<root>/../shared/data``."""
    return root.parent / "shared" / "data"


def search_dirs(data_dir: PathLike | None = None) -> list[Path]:
    """Directories searched for the data files, in order.

    An explicit ``data_dir`` wins; otherwise the ``BIOJEPA_DATA_DIR`` environment variable; otherwise
    ``../shared/data`` relative to the project root (the first ancestor of this module holding a
    ``pyproject.toml``) and relative to the current working directory and each of its ancestors.
    """
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return [Path(env).expanduser()]
    here = Path(__file__).resolve()
    project_roots = [parent for parent in here.parents if (parent / "pyproject.toml").is_file()][:1]
    cwd = Path.cwd().resolve()
    dirs = [_shared_data(root) for root in [*project_roots, cwd, *cwd.parents]]
    return list(dict.fromkeys(dirs))


def cache_dir() -> Path:
    """Directory downloads are cached in: ``BIOJEPA_CACHE_DIR`` or ``~/.cache/biojepa``."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "biojepa"


def _check(path: Path, entry: DataFile, advice: str) -> None:
    """Raise a :class:`ValueError` if ``path`` does not have the registered checksum."""
    actual = sha256sum(path)
    if actual != entry.sha256:
        raise ValueError(
            f"Checksum mismatch for data file {entry.name!r} ({path}): expected SHA-256 {entry.sha256}, "
            f"got {actual}. {advice}"
        )


def _copy_file(url: str, output_file, pooch_obj) -> None:
    """:mod:`pooch` downloader for ``file://`` URLs (a mirror on a shared file system)."""
    shutil.copyfile(url2pathname(urlparse(url).path), output_file)


def _downloader(url: str):
    return _copy_file if urlparse(url).scheme == "file" else None  # None: pooch picks HTTP, FTP or DOI


def data_path(name: str, data_dir: PathLike | None = None) -> Path:
    """Verified local path of a registered data file.

    The file is looked for in ``data_dir`` if given, else in ``$BIOJEPA_DATA_DIR`` if set, else in
    ``../shared/data`` relative to the project root and to the working directory and its ancestors. Its
    SHA-256 checksum is verified on every call. If it is missing locally but has a public URL, it is
    downloaded with :func:`pooch.retrieve` to the cache directory (``$BIOJEPA_CACHE_DIR`` or ``~/.cache/biojepa``),
    which verifies it and keeps it only if the checksum matches.

    Parameters
    ----------
    name
        File name as in the registry, e.g. ``"kang2018_ifnb_pbmc_counts.h5ad"`` or
        ``"norman2019_gi_tables/regr_fits_final.csv"``; also the gene-prior tables of ``gene_priors/``
        (``"gene_priors/go_human_orghseg_3.16.tsv.gz"``).
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` and the default locations.

    Returns
    -------
    Path to a local copy of the file whose checksum matches the registry.

    Raises
    ------
    ValueError
        If ``name`` is not registered, or the file found or downloaded fails its checksum.
    FileNotFoundError
        If the file is not found locally and cannot be downloaded.

    Examples
    --------
    >>> import biojepa as bj
    >>> path = bj.datasets.data_path("kang2018_ifnb_pbmc_counts.h5ad")  # doctest: +SKIP
    """
    entry = _registry.REGISTRY.get(name) or _registry.GENE_PRIORS.get(name)
    if entry is None:
        known = sorted([*_registry.REGISTRY, *_registry.GENE_PRIORS])
        raise ValueError(f"Unknown data file {name!r}; registered files: {', '.join(known)}.")
    searched = search_dirs(data_dir)
    for directory in searched:
        path = directory / entry.name
        if path.is_file():
            advice = (
                "The local copy is corrupted or a different version: replace it with an intact copy, or point "
                f"data_dir= or {DATA_DIR_ENV} at a directory holding one."
            )
            _check(path, entry, advice)
            logger.info("Loading data file %r from %s", entry.name, path)
            return path
    missing = (
        f"Data file {entry.name!r} not found; searched: {', '.join(str(d / entry.name) for d in searched)}. "
        f"Set the {DATA_DIR_ENV} environment variable (or pass data_dir=) to the directory holding it."
    )
    if entry.url is None:
        raise FileNotFoundError(f"{missing} It has no public download URL.")
    cached = cache_dir() / entry.name
    logger.info("Fetching data file %r from %s into %s (verified against its SHA-256)", entry.name, entry.url, cached)
    try:
        path = pooch.retrieve(
            entry.url,
            known_hash=f"sha256:{entry.sha256}",
            fname=cached.name,
            path=cached.parent,
            downloader=_downloader(entry.url),
        )
    except ValueError as err:  # pooch's hash mismatch: nothing is kept
        raise ValueError(
            f"Checksum mismatch for data file {entry.name!r} downloaded from {entry.url}: expected SHA-256 "
            f"{entry.sha256}. The file is not the registered version and was discarded; fix the URL in "
            f"biojepa.datasets._registry or provide the file locally via {DATA_DIR_ENV}. ({err})"
        ) from err
    except OSError as err:  # includes requests' connection and HTTP errors
        raise FileNotFoundError(f"{missing} Downloading it from {entry.url} failed: {err}") from err
    logger.info("Loading data file %r from %s", entry.name, path)
    return Path(path)
