"""The default expression readout of the cell latent: by the input, a count likelihood or a log-scale squared error.

RNA counts get a negative-binomial likelihood; log-scale RNA and several modalities a squared error of each
feature's normalized value (log1p CP10k, centred log-ratio, or the log-scale input) weighted by its variance.
"""

from __future__ import annotations

from .._constants import INPUT_SCALES

#: Weight of the negative-binomial readout when ``readout_weight`` is left at ``None`` (RNA counts only): the best
#: of 50/200/1000/3000 on Kang 2018 kNN accuracy and silhouette, 3 seeds (benchmarks page, "What the latent learns").
DEFAULT_NB_WEIGHT = 3000.0
#: Weight of the squared-error readout of log expression on its own scale (``"mse_log"``) when ``readout_weight``
#: is left at ``None`` (log-scale RNA, several modalities): the best of 100/1000/3000 on the K562 conditions and
#: HSMM times, 3 seeds (benchmarks page, "What the latent learns"); on ECCITE-seq RNA + protein it lifts the joint
#: latent and protein from RNA (benchmarks page, "Multi-omics").
DEFAULT_LOG_WEIGHT = 3000.0


def resolve_readout(
    readout_weight: float | None, readout_likelihood: str | None, input_scale: str, multimodal: bool
) -> tuple[float, str]:
    """``(weight, likelihood)`` of the readout from the model's arguments and its data.

    ``None`` likelihood: ``"nb"`` for RNA-only counts, else ``"mse_log"``. ``None`` weight: ``DEFAULT_NB_WEIGHT``
    with the negative-binomial readout, ``DEFAULT_LOG_WEIGHT`` with ``"mse_log"``, else ``0`` (no readout: the
    pure JEPA objective).

    Examples
    --------
    >>> from biojepa.model._readout import resolve_readout
    >>> resolve_readout(None, None, "counts", multimodal=False)
    (3000.0, 'nb')
    >>> resolve_readout(None, None, "log", multimodal=False)  # log input: log expression on its own scale
    (3000.0, 'mse_log')
    >>> resolve_readout(None, None, "counts", multimodal=True)  # several modalities: each feature on its own scale
    (3000.0, 'mse_log')
    >>> resolve_readout(10.0, "mse", "log", multimodal=False)
    (10.0, 'mse')
    >>> resolve_readout(0.0, None, "counts", multimodal=False)  # the pure JEPA objective
    (0.0, 'nb')
    """
    if readout_likelihood is None:
        counts = input_scale == INPUT_SCALES.COUNTS and not multimodal
        readout_likelihood = "nb" if counts else "mse_log"
    if readout_weight is None:
        defaults = {"nb": DEFAULT_NB_WEIGHT, "mse_log": DEFAULT_LOG_WEIGHT}
        readout_weight = defaults.get(readout_likelihood, 0.0)
    return float(readout_weight), readout_likelihood
