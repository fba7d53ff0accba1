"""The search space of the parameters that matter, for :func:`scvi.autotune.run_autotune`."""

from __future__ import annotations

_INSTALL = "Tuning needs Ray Tune and hyperopt: `pip install 'biojepa[tune]'`."


def search_space(max_epochs: int = 50, objective: str = "validation_loss") -> dict:
    """Ray Tune search space over BioJEPA's parameters that matter, in :func:`scvi.autotune.run_autotune`'s format.

    With ``objective="validation_loss"`` only parameters that leave the loss comparable between trials are searched
    (depth, widths, learning rate, batch size): the JEPA and VICReg terms change with the loss weights, the mask
    ratio and the latent width, so those are searched only with a label-based objective (``"scib"``: scvi-tools'
    scib-metrics scores, e.g. ``metrics="Bio conservation"``, which need ``labels_key`` in ``run_autotune``).

    Parameters
    ----------
    max_epochs
        Epochs per trial (the scheduler may stop a trial earlier).
    objective
        ``"validation_loss"`` or ``"scib"``.

    Returns
    -------
    ``{"model_params": {...}, "train_params": {...}}`` of Ray Tune samplers.

    Examples
    --------
    >>> import biojepa as bj
    >>> space = bj.tune.search_space(max_epochs=5)  # doctest: +SKIP
    >>> sorted(space["model_params"])  # doctest: +SKIP
    ['n_embed', 'n_layers', 'predictor_depth', 'predictor_dim']
    """
    try:
        from ray import tune
    except ImportError as err:
        raise ImportError(_INSTALL) from err
    if objective not in ("validation_loss", "scib"):
        raise ValueError(f"`objective` must be 'validation_loss' or 'scib', got {objective!r}.")
    model = {
        "n_layers": tune.choice([1, 2, 3]),
        "n_embed": tune.choice([32, 64]),
        "predictor_dim": tune.choice([32, 64]),
        "predictor_depth": tune.choice([1, 2]),
    }
    if objective == "scib":
        model |= {
            "n_latent": tune.choice([16, 32, 64]),
            "mask_ratio": tune.choice([(0.15, 0.35), (0.25, 0.5), (0.4, 0.6)]),
            "variance_weight": tune.choice([5.0, 25.0]),
        }
    train = {
        "max_epochs": max_epochs,
        "batch_size": tune.choice([64, 128, 256]),
        "plan_kwargs": {"lr": tune.loguniform(1e-4, 3e-3)},
    }
    return {"model_params": model, "train_params": train}
