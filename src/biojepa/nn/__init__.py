"""Neural-network building blocks of BioJEPA."""

from ._condition import ConditionEmbedding
from ._count_readout import CountReadout
from ._ema import ema_update, make_target, momentum_schedule
from ._encoder import Block, CellEncoder, Transformer
from ._flow import VelocityField, flow_matching_loss, integrate, ot_pairing
from ._packing import PackedLayout, PackedTransformer, RotaryEmbedding, Segment, pack, run_packed
from ._perturbation import FEATURES_ONLY, PAD, ExpressionHead, PerturbationEffect, masked_mse
from ._predictor import Predictor
from ._tokenizer import GeneTokenizer
from ._vicreg import effective_rank, vicreg_covariance, vicreg_variance

__all__ = [
    "FEATURES_ONLY",
    "PAD",
    "Block",
    "CellEncoder",
    "ConditionEmbedding",
    "CountReadout",
    "ExpressionHead",
    "GeneTokenizer",
    "PackedLayout",
    "PackedTransformer",
    "Predictor",
    "RotaryEmbedding",
    "Segment",
    "PerturbationEffect",
    "Transformer",
    "VelocityField",
    "effective_rank",
    "ema_update",
    "flow_matching_loss",
    "integrate",
    "make_target",
    "masked_mse",
    "momentum_schedule",
    "ot_pairing",
    "pack",
    "run_packed",
    "vicreg_covariance",
    "vicreg_variance",
]
