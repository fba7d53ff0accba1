"""Data checks and per-gene preprocessing shared by the model."""

from ._compounds import compound_features
from ._genes import (
    coexpression_modules,
    gene_loadings,
    gene_priors,
    gene_statistics,
    module_index_from_labels,
    normalize_expression,
    sample_rows,
)
from ._go import GO_ONTOLOGIES, go_features
from ._loading import BlockDataset, BlockSampler, row_runs
from ._modalities import (
    MODALITY_LAYERS,
    Modality,
    check_modalities,
    check_modality,
    modality_priors,
    normalize_modality,
    present_rows,
)
from ._ondisk import write_shuffled_h5ad
from ._sequences import Sequences, coupled_sequences, paired_sequences, sinkhorn, split_queries, time_scale
from ._splits import PROTOCOLS, PerturbationSplit, split_perturbations
from ._validate import (
    check_categorical,
    check_continuous,
    check_expression,
    check_obs_keys,
    check_time,
    check_unique_names,
    get_matrix,
    resolve_input_scale,
)

__all__ = [
    "GO_ONTOLOGIES",
    "compound_features",
    "go_features",
    "MODALITY_LAYERS",
    "Modality",
    "check_modalities",
    "check_modality",
    "modality_priors",
    "normalize_modality",
    "present_rows",
    "BlockDataset",
    "BlockSampler",
    "row_runs",
    "write_shuffled_h5ad",
    "PROTOCOLS",
    "PerturbationSplit",
    "split_perturbations",
    "Sequences",
    "coupled_sequences",
    "paired_sequences",
    "sinkhorn",
    "split_queries",
    "time_scale",
    "check_categorical",
    "check_continuous",
    "check_expression",
    "check_obs_keys",
    "check_time",
    "check_unique_names",
    "coexpression_modules",
    "gene_loadings",
    "gene_priors",
    "gene_statistics",
    "get_matrix",
    "module_index_from_labels",
    "normalize_expression",
    "resolve_input_scale",
    "sample_rows",
]
