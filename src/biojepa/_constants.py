"""Frozen key tuples shared by the model, module and training plan."""

from typing import NamedTuple


class _ExtraKeys(NamedTuple):
    """Registry keys that scvi-tools' ``REGISTRY_KEYS`` does not define."""

    INPUT_SCALE: str = "input_scale"
    PERTURBATION: str = "perturbation"
    DOSE: str = "dose"
    PERTURBATION_TYPE: str = "perturbation_type"
    TIME: str = "time"
    PROTEIN: str = "protein"
    ATAC: str = "atac"
    SAMPLE: str = "sample"


class _LossKeys(NamedTuple):
    """Names of the loss terms, as logged in ``model.history`` (with ``_train``/``_validation``)."""

    JEPA: str = "jepa_loss"
    VARIANCE: str = "vicreg_variance"
    COVARIANCE: str = "vicreg_covariance"
    EFFECTIVE_RANK: str = "effective_rank"
    LATENT_STD: str = "latent_std"
    MOMENTUM: str = "ema_momentum"
    PERTURBATION: str = "perturbation_loss"
    EXPRESSION: str = "expression_loss"
    INTERACTION: str = "interaction_norm"
    DYNAMIC: str = "dynamic_loss"
    SMOOTHNESS: str = "smoothness_loss"
    CROSS_MODAL: str = "cross_modal_loss"
    MODALITY: str = "modality_loss"
    READOUT: str = "readout_loss"


class _ModuleKeys(NamedTuple):
    """Keys of the dictionaries returned by the module's ``inference``/``generative``."""

    TOKENS: str = "tokens"
    Z: str = "z"
    PRED: str = "pred"
    TARGET: str = "target"
    MASKS_ENC: str = "masks_enc"
    MASKS_PRED: str = "masks_pred"
    TARGET_Z: str = "target_z"
    X_NORM: str = "x_norm"
    PERT_PRED: str = "pert_pred"
    PERT_ROWS: str = "pert_rows"
    PERT_INTERACTION: str = "pert_interaction"
    EXPR_PRED: str = "expr_pred"
    TIME_PRED: str = "time_pred"
    TIME_TARGET: str = "time_target"
    SMOOTHNESS: str = "smoothness"
    PRED_WEIGHT: str = "pred_weight"
    PRESENT: str = "present"
    CROSS: str = "cross"
    MODALITY_PRED: str = "modality_pred"
    READOUT_PRED: str = "readout_pred"


class _InputScales(NamedTuple):
    """Accepted values of ``input_scale`` in :meth:`biojepa.BioJEPA.setup_anndata`."""

    AUTO: str = "auto"
    COUNTS: str = "counts"
    LOG: str = "log"


EXTRA_KEYS = _ExtraKeys()
LOSS_KEYS = _LossKeys()
MODULE_KEYS = _ModuleKeys()
INPUT_SCALES = _InputScales()
