"""Neural-network building blocks of BioJEPA."""

from ._ema import ema_update, make_target, momentum_schedule
from ._encoder import Block, CellEncoder, Transformer
from ._perturbation import ExpressionHead, PerturbationEffect, masked_mse
from ._predictor import MaskedModulePredictor
from ._tokenizer import GeneTokenizer
from ._vicreg import effective_rank, vicreg_covariance, vicreg_variance

__all__ = [
    "Block",
    "CellEncoder",
    "ExpressionHead",
    "GeneTokenizer",
    "MaskedModulePredictor",
    "PerturbationEffect",
    "Transformer",
    "effective_rank",
    "ema_update",
    "make_target",
    "masked_mse",
    "momentum_schedule",
    "vicreg_covariance",
    "vicreg_variance",
]
