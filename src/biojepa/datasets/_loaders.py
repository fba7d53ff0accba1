"""Public loaders, one per registered data file; each call reads the file afresh."""

import warnings
from pathlib import PurePosixPath

import anndata as ad
import mudata as md
import pandas as pd

from . import _registry as reg
from ._load import PathLike, data_path

#: Values accepted by the ``subset`` argument of :func:`perturbench_devel`.
PERTURBENCH_SUBSETS = ("norman19", "mcfaline23")


def _h5ad(name: str, data_dir: PathLike | None) -> ad.AnnData:
    return ad.read_h5ad(data_path(name, data_dir))


def _h5mu(name: str, data_dir: PathLike | None) -> md.MuData:
    path = data_path(name, data_dir)
    with warnings.catch_warnings():  # the checksummed files' older on-disk layout is known and harmless
        warnings.filterwarnings("ignore", category=ad.OldFormatWarning)
        warnings.filterwarnings("ignore", message="The HDF5 file was not created by muon/mudata")
        warnings.filterwarnings("ignore", category=FutureWarning, message=r"From 0\.4 \.update\(\)")
        return md.read_h5mu(path)


def perturbench_devel(data_dir: PathLike | None = None, subset: str | None = None) -> ad.AnnData:
    """PerturBench devel set: Norman 2019 K562 CRISPRa and McFaline-Figueroa 2023 glioma CRISPRi.

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).
    subset
        ``None`` for the whole file, or ``"norman19"`` / ``"mcfaline23"`` to keep that ``obs["dataset"]``.

    Returns
    -------
    AnnData, 5,961 × 500 HVGs when ``subset`` is ``None``; log1p-normalized ``X``.

    Examples
    --------
    >>> import biojepa as bj
    >>> adata = bj.datasets.perturbench_devel(subset="norman19")  # doctest: +SKIP
    """
    if subset is not None and subset not in PERTURBENCH_SUBSETS:
        allowed = ", ".join(map(repr, (None, *PERTURBENCH_SUBSETS)))
        raise ValueError(f"Unknown subset {subset!r}; allowed values: {allowed}.")
    adata = _h5ad(reg.PERTURBENCH_DEVEL, data_dir)
    if subset is None:
        return adata
    return adata[(adata.obs["dataset"] == subset).to_numpy()].copy()


def norman2019_perturbench(data_dir: PathLike | None = None) -> ad.AnnData:
    """Norman et al. 2019 K562 CRISPRa cells of the PerturBench devel set.

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    AnnData, 3,375 × 500: same as ``perturbench_devel(subset="norman19")``.

    Examples
    --------
    >>> import biojepa as bj
    >>> adata = bj.datasets.norman2019_perturbench()  # doctest: +SKIP
    """
    return perturbench_devel(data_dir, subset="norman19")


def norman2019_gears_tiny(data_dir: PathLike | None = None) -> ad.AnnData:
    """50 Norman 2019 cells in GEARS format (``obs["condition"]`` like ``"MEIS1+ctrl"``); a format fixture.

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    AnnData, 50 × 50, log-normalized ``X`` and raw ``layers["counts"]``.

    Examples
    --------
    >>> import biojepa as bj
    >>> adata = bj.datasets.norman2019_gears_tiny()  # doctest: +SKIP
    """
    return _h5ad(reg.NORMAN_GEARS_TINY, data_dir)


def norman2019_gi_tables(data_dir: PathLike | None = None) -> dict[str, pd.DataFrame]:
    """Norman et al. 2019 genetic-interaction tables, indexed by gene (or double ``A_B``).

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    Dict keyed by table name: ``perturbseq_single_phenotype_table``, ``processed_perturbseq_emap`` (104 × 104),
    ``processed_perturbseq_fitnesses`` (104 × 104) and ``regr_fits_final`` (per double ``A_B``).

    Examples
    --------
    >>> import biojepa as bj
    >>> tables = bj.datasets.norman2019_gi_tables()  # doctest: +SKIP
    """
    return {PurePosixPath(name).stem: pd.read_csv(data_path(name, data_dir), index_col=0) for name in reg.GI_TABLES}


def sergio_knockout_sim(data_dir: PathLike | None = None) -> ad.AnnData:
    """Simulated Perturb-seq with a known gene regulatory network (sergio-rs): single and double knockouts.

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    AnnData, 6,200 × 500 integer counts; true network in ``uns["grn_edges"]``.

    Examples
    --------
    >>> import biojepa as bj
    >>> adata = bj.datasets.sergio_knockout_sim()  # doctest: +SKIP
    """
    return _h5ad(reg.SERGIO_KNOCKOUT, data_dir)


def kang2018_ifnb(data_dir: PathLike | None = None) -> ad.AnnData:
    """Kang et al. 2018 PBMCs, control vs IFN-β stimulated (``obs["group_id"]``), 4 samples, 5 cell types.

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    AnnData, 1,556 × 1,267 raw UMI counts; ``layers["logcounts"]``.

    Examples
    --------
    >>> import biojepa as bj
    >>> adata = bj.datasets.kang2018_ifnb()  # doctest: +SKIP
    """
    return _h5ad(reg.KANG_IFNB, data_dir)


def hsmm_myoblast_timecourse(data_dir: PathLike | None = None) -> ad.AnnData:
    """Trapnell et al. 2014 human skeletal myoblast differentiation time course (``obs["time_hours"]``).

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    AnnData, 271 × 47,192 FPKM (Ensembl ids; symbols in ``var["gene_short_name"]``).

    Examples
    --------
    >>> import biojepa as bj
    >>> adata = bj.datasets.hsmm_myoblast_timecourse()  # doctest: +SKIP
    """
    return _h5ad(reg.HSMM_MYOBLAST, data_dir)


def flu_h3n2_challenge(data_dir: PathLike | None = None) -> ad.AnnData:
    """Bulk blood microarray time series of 17 subjects after H3N2 challenge (``obs["Subject"]``, ``"time_hours"``).

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    AnnData, 252 × 4,147 log2 expression.

    Examples
    --------
    >>> import biojepa as bj
    >>> adata = bj.datasets.flu_h3n2_challenge()  # doctest: +SKIP
    """
    return _h5ad(reg.FLU_H3N2, data_dir)


def guo2010_mouse_embryo(data_dir: PathLike | None = None) -> ad.AnnData:
    """Guo et al. 2010 single-cell qPCR of early mouse embryos, 2- to 64-cell stage (``obs["cell_stage"]``).

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    AnnData, 428 × 48 normalized qPCR values.

    Examples
    --------
    >>> import biojepa as bj
    >>> adata = bj.datasets.guo2010_mouse_embryo()  # doctest: +SKIP
    """
    return _h5ad(reg.GUO_EMBRYO, data_dir)


def ecciteseq_mimitou2019(data_dir: PathLike | None = None) -> md.MuData:
    """Mimitou et al. 2019 ECCITE-seq PBMCs with RNA, surface protein (ADT) and hashtag (HTO) counts.

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    MuData, 500 cells; modalities ``rna`` (19,521 genes), ``adt`` (49) and ``hto`` (4), raw counts.

    Examples
    --------
    >>> import biojepa as bj
    >>> mdata = bj.datasets.ecciteseq_mimitou2019()  # doctest: +SKIP
    """
    return _h5mu(reg.ECCITESEQ, data_dir)


def multiome_pbmc_toy(data_dir: PathLike | None = None) -> md.MuData:
    """Toy 10x multiome PBMCs (RNA + ATAC); for smoke tests only.

    Parameters
    ----------
    data_dir
        Directory holding the data files; overrides ``BIOJEPA_DATA_DIR`` (see :func:`data_path`).

    Returns
    -------
    MuData, 1,000 cells; modalities ``rna`` (45 genes) and ``atac`` (174 peaks), raw counts.

    Examples
    --------
    >>> import biojepa as bj
    >>> mdata = bj.datasets.multiome_pbmc_toy()  # doctest: +SKIP
    """
    return _h5mu(reg.MULTIOME_TOY, data_dir)
