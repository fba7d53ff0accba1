"""Frozen registry of the data files known to :mod:`biojepa.datasets`.

Each entry records the file's path relative to the data directory, its SHA-256 checksum and, where the
very same file is publicly hosted, a URL to download it from. The checksums are copied from the
``SHA256SUMS`` file that ships with the data so the package does not depend on that file being present.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["GENE_PRIORS", "GI_TABLES", "GO_TABLE", "REGISTRY", "DataFile"]


@dataclass(frozen=True)
class DataFile:
    """A registered data file.

    Parameters
    ----------
    name
        Path of the file relative to the data directory (POSIX separators); also its registry key.
    sha256
        Expected SHA-256 hex digest of the file.
    url
        Public URL of the identical file, or ``None`` if it can only be read from a local data directory.
    """

    name: str
    sha256: str
    url: str | None = None


PERTURBENCH_DEVEL_URL = (
    "https://raw.githubusercontent.com/altoslabs/perturbench/d357dfae/src/perturbench/data/resources/devel.h5ad"
)

PERTURBENCH_DEVEL = "perturbench_devel_norman19_mcfaline23.h5ad"
NORMAN_GEARS_TINY = "norman2019_gears_format_tiny.h5ad"
SERGIO_KNOCKOUT = "sergio_rs_knockout_sim_500genes.h5ad"
KANG_IFNB = "kang2018_ifnb_pbmc_counts.h5ad"
HSMM_MYOBLAST = "hsmm_trapnell2014_myoblast_timecourse.h5ad"
FLU_H3N2 = "flu_h3n2_challenge_timecourse_bulk.h5ad"
GUO_EMBRYO = "guo2010_mouse_embryo_qpcr_timecourse.h5ad"
ECCITESEQ = "ecciteseq_mimitou2019_pbmc_rna_adt.h5mu"
MULTIOME_TOY = "multiome_pbmc_rna_atac_toy.h5mu"

#: The Norman et al. 2019 genetic-interaction tables, in a fixed order.
GI_TABLES: tuple[str, ...] = (
    "norman2019_gi_tables/perturbseq_single_phenotype_table.csv",
    "norman2019_gi_tables/processed_perturbseq_emap.csv",
    "norman2019_gi_tables/processed_perturbseq_fitnesses.csv",
    "norman2019_gi_tables/regr_fits_final.csv",
)

_ENTRIES = (
    DataFile(
        PERTURBENCH_DEVEL, "220998f5630c813228c8661c86dd52244b9ac87127511289af90e0d900d8429b", PERTURBENCH_DEVEL_URL
    ),
    DataFile(NORMAN_GEARS_TINY, "05e8cbf1916f8287c0b7fce8c3952727adfa097fa2d8177554cef6238cbff5c3"),
    DataFile(SERGIO_KNOCKOUT, "b39b0f68048b209bcb58a45aaa9432c8dba2269cc523297b1a0be59e83de1833"),
    DataFile(KANG_IFNB, "14fe6b3bea3e8cd6dd283da0f73049a14365b12cb7d428490188c594b4f36d12"),
    DataFile(HSMM_MYOBLAST, "d15a08b5bbaf5b8c4a6561a0eb1f62f90dcbf34bc3c952de2f7796eec7f46b5d"),
    DataFile(FLU_H3N2, "b40270de200147be7a0b22f21cb082cc78485fd5f5f98aa40ee0f3030ae79bf6"),
    DataFile(GUO_EMBRYO, "64d8e62e85c63b3b1a349c50e620992784b55d7f7bcf125f70411dff0b9fa9f4"),
    DataFile(ECCITESEQ, "307af2c9a7c56e8c6c3692c7cc7fb9e5d9d779da039783ac1f2d00ca088a6ba4"),
    DataFile(MULTIOME_TOY, "9f5c1943c1159e9fa494216993f00da26c138ba68d6afe37340774db739da93d"),
    DataFile(GI_TABLES[0], "d35589632fb10082d481f62b9b8c75e83d195c6d1fca03a71113f47c071cc8f9"),
    DataFile(GI_TABLES[1], "87f13d1cd7c055bff653474a1e1f74a6249933b5e49c980638d7fffcf7489f21"),
    DataFile(GI_TABLES[2], "2a236f57535405cfb201b68b51138d7aeb6424853d8e300d100192739a938a40"),
    DataFile(GI_TABLES[3], "664331b7374e1dd22dd42c8a7b3f97aecf01dfb034701818101574fca4441ff3"),
)

#: Read-only mapping from file name (relative path) to its :class:`DataFile` entry.
REGISTRY: Mapping[str, DataFile] = MappingProxyType({entry.name: entry for entry in _ENTRIES})

#: The human gene → GO term table (org.Hs.eg.db / GO.db 3.16) read by :func:`biojepa.data.go_features`.
GO_TABLE = "gene_priors/go_human_orghseg_3.16.tsv.gz"

#: Files of the ``gene_priors`` folder, whose checksums are recorded in that folder's ``README.md`` rather than in
#: ``SHA256SUMS`` (which must equal :data:`REGISTRY`); :func:`~biojepa.datasets.data_path` verifies them all the same.
GENE_PRIORS: Mapping[str, DataFile] = MappingProxyType(
    {
        GO_TABLE: DataFile(GO_TABLE, "c534c2986440c75bd569dc8e9957c572b686ae9f571dd8d98ede4670ab8d7a0b"),
    }
)
