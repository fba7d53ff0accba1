import anndata as ad
import numpy as np
import pandas as pd
import pytest

import biojepa as bj


def _ref(n=40, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.repeat(["T", "B"], n // 2)
    z = rng.normal(size=(n, 3)) + np.where(labels == "T", 0.0, 8.0)[:, None]
    adata = ad.AnnData(np.zeros((n, 1)), obs=pd.DataFrame({"type": labels}, index=[f"r{i}" for i in range(n)]))
    adata.obsm["X_biojepa"] = z
    return adata


def test_nearest_cells_transfers_labels_and_keeps_other_slots():
    ref = _ref()
    query = _ref(seed=1)[[0, 1, 30, 31]].copy()
    query.obs = query.obs.drop(columns="type")
    before = set(query.obsm), list(query.obs.columns)
    out = bj.tl.nearest_cells(query, ref, n_neighbors=5, labels_key="type", key_added="nn", copy=True)
    assert set(query.obsm) == before[0] and list(query.obs.columns) == before[1]  # copy=True leaves it alone
    assert out.obs["nn_type"].tolist() == ["T", "T", "B", "B"]
    assert (out.obs["nn_type_fraction"] == 1.0).all()
    assert out.obsm["nn_indices"].shape == (4, 5) and (np.diff(out.obsm["nn_distances"], axis=1) >= 0).all()
    assert set(out.obs["nn"]) <= set(ref.obs_names)


def test_nearest_cells_errors():
    ref = _ref()
    with pytest.raises(KeyError, match="X_scvi.*get_latent_representation"):
        bj.tl.nearest_cells(ref, ref, use_rep="X_scvi")
    with pytest.raises(ValueError, match="`n_neighbors`=99"):
        bj.tl.nearest_cells(ref, ref, n_neighbors=99)
    with pytest.raises(KeyError, match="'cluster'"):
        bj.tl.nearest_cells(ref, ref, labels_key="cluster")


def test_perturbation_similarity_from_a_model(screen_factory):
    adata = screen_factory()
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
    model = bj.BioJEPA(adata, n_latent=4, n_embed=8, predictor_dim=8)
    model.train(max_epochs=1, batch_size=64, enable_progress_bar=False)
    emb = model.get_perturbation_embedding()
    bj.tl.perturbation_similarity(emb)
    sim = emb.obsp["perturbation_similarity"]
    assert sim.shape == (emb.n_obs, emb.n_obs)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-6)
    np.testing.assert_allclose(sim, sim.T, atol=1e-12)
    assert (emb.obs["perturbation_similarity_nearest"] != emb.obs_names).all()
    with pytest.raises(ValueError, match="at least two"):
        bj.tl.perturbation_similarity(emb[:1].copy())
