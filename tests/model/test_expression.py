import numpy as np
import pytest
import scvi

import biojepa as bj


def test_normalized_expression_reads_out_the_latent(screen_factory):
    scvi.settings.seed = 0
    adata = screen_factory(counts=False)
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
    model = bj.BioJEPA(adata, n_latent=8, n_embed=16, predictor_dim=16)
    model.train(max_epochs=30, batch_size=64, enable_progress_bar=False)
    out = model.get_normalized_expression()
    assert out.shape == adata.shape and list(out.columns) == list(adata.var_names)
    assert list(out.index) == list(adata.obs_names)
    # the readout follows the perturbed blocks: per-condition mean expression correlates with the observed one
    observed = np.vstack([adata[adata.obs["condition"] == c].X.mean(0) for c in ("control", "g0", "g1")])
    readout = np.vstack([out[(adata.obs["condition"] == c).to_numpy()].mean(0) for c in ("control", "g0", "g1")])
    assert np.corrcoef(observed.ravel(), readout.ravel())[0, 1] > 0.8
    assert model.get_normalized_expression(indices=[0, 1], return_numpy=True).shape == (2, adata.n_vars)


def test_normalized_expression_without_readout_raises():
    adata = scvi.data.synthetic_iid(batch_size=30, n_genes=20, n_batches=1)
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, n_latent=4, n_embed=8, predictor_dim=8)
    with pytest.raises(ValueError, match="no expression readout.*perturbation_key"):
        model.get_normalized_expression()
