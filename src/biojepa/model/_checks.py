"""Checks of the model's and ``train``'s arguments that name the argument and the value and say what to do."""

from __future__ import annotations

import numbers

_POSITIVE_INTS = ("n_latent", "n_embed", "n_layers", "n_heads", "predictor_dim", "predictor_depth", "perturbation_dim")
_NON_NEGATIVE = (
    "jepa_weight",
    "variance_weight",
    "covariance_weight",
    "perturbation_weight",
    "expression_weight",
    "interaction_penalty",
    "dynamic_weight",
    "smoothness_weight",
    "cross_modal_weight",
    "modality_weight",
)
#: Fewest cells the model is built from (gene modules need 2) and trained on (a train and a validation cell).
MIN_CELLS_MODEL, MIN_CELLS_TRAIN = 2, 3


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _positive_int(name: str, value) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def check_model_args(args: dict) -> None:
    """Validate the keyword arguments of :class:`~biojepa.BioJEPA` (``locals()`` of its ``__init__``).

    Examples
    --------
    >>> from biojepa.model._checks import check_model_args
    >>> check_model_args({"n_latent": 8, "mask_ratio": (0.25, 0.5)})
    >>> check_model_args({"n_latent": 0})
    Traceback (most recent call last):
    ...
    ValueError: `n_latent` must be a positive integer, got 0.
    """
    for name in _POSITIVE_INTS:
        if name in args:
            _positive_int(name, args[name])
    for name in ("n_modules", "mask_blocks"):
        if args.get(name) is not None:
            _positive_int(name, args[name])
    if "n_embed" in args and "n_heads" in args and args["n_embed"] % args["n_heads"]:
        raise ValueError(f"`n_heads`={args['n_heads']} must divide `n_embed`={args['n_embed']}.")
    for name in _NON_NEGATIVE:
        value = args.get(name, 0.0)
        if not isinstance(value, numbers.Real) or not value >= 0:
            raise ValueError(f"`{name}` must be a non-negative number, got {value!r}.")
    for name in ("dropout", "cross_modal_prob", "identity_dropout"):
        value = args.get(name, 0.0)
        if not isinstance(value, numbers.Real) or not 0 <= value < 1:
            raise ValueError(f"`{name}` must be in [0, 1), got {value!r}.")
    if "mask_ratio" in args:
        ratio = args["mask_ratio"]
        try:
            low, high = (float(r) for r in ratio)
        except (TypeError, ValueError):
            raise ValueError(f"`mask_ratio` must be a pair (low, high), got {ratio!r}.") from None
        if not 0 < low <= high < 1:
            raise ValueError(f"`mask_ratio` must satisfy 0 < low <= high < 1, got {ratio!r}.")


def check_data_size(n_obs: int, n_vars: int) -> None:
    """Raise unless the data has enough cells and genes to build the gene modules.

    Examples
    --------
    >>> from biojepa.model._checks import check_data_size
    >>> check_data_size(1, 50)
    Traceback (most recent call last):
    ...
    ValueError: BioJEPA needs at least 2 cells and 2 genes to build its gene modules; the AnnData has 1 cells ...
    """
    if n_obs < MIN_CELLS_MODEL or n_vars < 2:
        raise ValueError(
            f"BioJEPA needs at least {MIN_CELLS_MODEL} cells and 2 genes to build its gene modules; the AnnData has "
            f"{n_obs} cells and {n_vars} genes. Train on more data, or map a few cells onto a trained model with "
            "`model.get_latent_representation(adata)`."
        )


def check_train_args(max_epochs, batch_size, n_obs: int) -> None:
    """Validate ``train``'s epochs and batch size and the number of cells.

    Examples
    --------
    >>> from biojepa.model._checks import check_train_args
    >>> check_train_args(None, 128, 400)
    >>> check_train_args(10, 0, 400)
    Traceback (most recent call last):
    ...
    ValueError: `batch_size` must be an integer >= 2 (the VICReg terms need two cells per minibatch), got 0.
    """
    if max_epochs is not None and (not _is_int(max_epochs) or max_epochs < 1):
        raise ValueError(
            f"`max_epochs` must be a positive integer (or None for the heuristic), got {max_epochs!r}; a model "
            "trained for no epoch is not trained."
        )
    if not _is_int(batch_size) or batch_size < 2:
        raise ValueError(
            f"`batch_size` must be an integer >= 2 (the VICReg terms need two cells per minibatch), got {batch_size!r}."
        )
    if n_obs < MIN_CELLS_TRAIN:
        raise ValueError(
            f"BioJEPA trains on at least {MIN_CELLS_TRAIN} cells (some are held out for validation); the AnnData "
            f"has {n_obs}."
        )
