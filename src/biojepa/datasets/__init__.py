"""Small real data sets for development, tests, tutorials and benchmarks.

The files are looked for in the ``data_dir`` argument if given, else in the directory named by the
``BIOJEPA_DATA_DIR`` environment variable, else in ``../shared/data`` relative to the project root or to the
working directory and its ancestors. Every file's SHA-256 checksum is verified on each load. A file that is
missing locally but has a public URL (the PerturBench devel set) is downloaded to ``BIOJEPA_CACHE_DIR``
(default ``~/.cache/biojepa``) and verified there. Every loader reads its file afresh and returns a new object.

Loaders: :func:`perturbench_devel`, :func:`norman2019_perturbench`, :func:`norman2019_gears_tiny`,
:func:`norman2019_gi_tables`, :func:`sergio_knockout_sim`, :func:`kang2018_ifnb`, :func:`hsmm_myoblast_timecourse`,
:func:`flu_h3n2_challenge`, :func:`guo2010_mouse_embryo`, :func:`ecciteseq_mimitou2019` and
:func:`multiome_pbmc_toy`; :func:`data_path` gives the verified path of any registered file.
"""

from ._load import data_path
from ._loaders import (
    ecciteseq_mimitou2019,
    flu_h3n2_challenge,
    guo2010_mouse_embryo,
    hsmm_myoblast_timecourse,
    kang2018_ifnb,
    multiome_pbmc_toy,
    norman2019_gears_tiny,
    norman2019_gi_tables,
    norman2019_perturbench,
    perturbench_devel,
    sergio_knockout_sim,
)

__all__ = [
    "data_path",
    "ecciteseq_mimitou2019",
    "flu_h3n2_challenge",
    "guo2010_mouse_embryo",
    "hsmm_myoblast_timecourse",
    "kang2018_ifnb",
    "multiome_pbmc_toy",
    "norman2019_gears_tiny",
    "norman2019_gi_tables",
    "norman2019_perturbench",
    "perturbench_devel",
    "sergio_knockout_sim",
]
