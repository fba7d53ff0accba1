"""The default expression readout of the cell latent: a count likelihood for RNA counts, none otherwise."""

from __future__ import annotations

from .._constants import INPUT_SCALES

#: Weight of the negative-binomial readout when ``readout_weight`` is left at ``None`` (RNA counts only): the best
#: of 50/200/1000/3000 on Kang 2018 kNN accuracy and silhouette, 3 seeds (benchmarks page, "What the latent learns").
DEFAULT_NB_WEIGHT = 3000.0


def resolve_readout(
    readout_weight: float | None, readout_likelihood: str | None, input_scale: str, multimodal: bool
) -> tuple[float, str]:
    """``(weight, likelihood)`` of the readout from the model's arguments and its data.

    ``None`` likelihood: ``"nb"`` for RNA-only counts, else ``"mse"``. ``None`` weight: ``DEFAULT_NB_WEIGHT``
    with the negative-binomial readout, else ``0`` (no readout: the pure JEPA objective).

    Examples
    --------
    >>> from biojepa.model._readout import resolve_readout
    >>> resolve_readout(None, None, "counts", multimodal=False)
    (3000.0, 'nb')
    >>> resolve_readout(None, None, "log", multimodal=False)  # log input: no count likelihood, no readout
    (0.0, 'mse')
    >>> resolve_readout(10.0, None, "log", multimodal=False)
    (10.0, 'mse')
    >>> resolve_readout(0.0, None, "counts", multimodal=False)  # the pure JEPA objective
    (0.0, 'nb')
    """
    if readout_likelihood is None:
        counts = input_scale == INPUT_SCALES.COUNTS and not multimodal
        readout_likelihood = "nb" if counts else "mse"
    if readout_weight is None:
        readout_weight = DEFAULT_NB_WEIGHT if readout_likelihood == "nb" else 0.0
    return float(readout_weight), readout_likelihood
