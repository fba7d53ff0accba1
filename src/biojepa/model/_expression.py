"""``get_normalized_expression`` of :class:`~biojepa.BioJEPA`: the expression readout of the cell latent."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData


class ExpressionMixin:
    """Expression read out from the latent by the model's expression head."""

    @torch.inference_mode()
    def get_normalized_expression(
        self,
        adata: AnnData | None = None,
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        return_numpy: bool = False,
    ) -> pd.DataFrame | np.ndarray:
        """Expression of each cell as the model reads it out of the cell's (target-encoder) latent.

        The expression head, trained on a stop-gradient latent, maps each cell's latent to its log-normalized
        expression: log1p CP10k for count input, the input's own log scale for log-normalized input. It is
        trained when a ``perturbation_key`` or ``time_key`` is registered; other models have no readout (the
        JEPA latent is not shaped by reconstruction) and raise.

        Parameters
        ----------
        adata
            AnnData with the model's genes; ``None`` uses the training AnnData.
        indices
            Cells to read out; ``None`` reads all.
        batch_size
            Minibatch size; ``None`` uses ``scvi.settings.batch_size``.
        return_numpy
            Return an array instead of a DataFrame (cells × genes).

        Returns
        -------
        Log-normalized expression, ``(n_cells, n_genes)``, as a DataFrame indexed by cell and gene names unless
        ``return_numpy``.

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
        >>> adata.obs["condition"] = ["control", "g1", "g2", "g1+g2"] * 100
        >>> bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> model.get_normalized_expression(indices=range(5)).shape
        (5, 100)
        """
        head = getattr(self.module, "expression_head", None)
        if head is None or self._multimodal:
            raise ValueError(
                "This model has no expression readout: it is trained with a `perturbation_key` or `time_key` "
                "registered (AnnData input). Use `get_latent_representation` for the latent, or set the model up "
                "with a perturbation or time key."
            )
        self._check_if_trained(warn=True)
        adata = self._validate_anndata(adata)
        rows = np.arange(adata.n_obs) if indices is None else np.asarray(list(indices))
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        z = torch.as_tensor(self._target_latent(adata, rows, batch_size), device=self.device)
        std, mean = self.module.gene_std, self.module.gene_mean
        expression = (head(z) * std + mean).cpu().numpy()  # (N, G): standardized readout back to the log scale
        if return_numpy:
            return expression
        return pd.DataFrame(expression, index=adata.obs_names[rows], columns=adata.var_names)
