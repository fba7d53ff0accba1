import copy

import numpy as np
import pandas as pd
import pytest
import scvi
from anndata import AnnData

import biojepa as bj

SCVI_SLOTS = ("_scvi_",)


@pytest.fixture
def adata():
    return scvi.data.synthetic_iid(batch_size=50, n_genes=40, n_batches=2, n_labels=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_key": "donor"}, "donor"),
        ({"categorical_covariate_keys": ["batch", "cell_cycle"]}, "cell_cycle"),
        ({"continuous_covariate_keys": ["age"]}, "age"),
        ({"layer": "spliced"}, "spliced"),
    ],
)
def test_missing_keys(adata, kwargs, match):
    with pytest.raises(KeyError, match=match):
        bj.BioJEPA.setup_anndata(adata, **kwargs)


def test_nan_and_inf(adata):
    adata.X = adata.X.astype(float)
    adata.X[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        bj.BioJEPA.setup_anndata(adata)
    adata.X[3, 4] = np.inf
    with pytest.raises(ValueError, match="NaN or infinite"):
        bj.BioJEPA.setup_anndata(adata)


def test_negative_values(adata):
    adata.X = adata.X.astype(float)
    adata.X[0, 0] = -1.5
    with pytest.raises(ValueError, match="negative values.*layer="):
        bj.BioJEPA.setup_anndata(adata)


def test_all_zero_cells(adata):
    adata.X[[2, 9]] = 0
    with pytest.raises(ValueError, match="2 cells have no expression.*filter_cells"):
        bj.BioJEPA.setup_anndata(adata)


def test_empty_anndata():
    with pytest.raises(ValueError, match="empty"):
        bj.BioJEPA.setup_anndata(AnnData(np.zeros((0, 5), dtype=np.float32)))


def test_non_numeric_continuous(adata):
    adata.obs["donor"] = ["a", "b"] * (adata.n_obs // 2)
    with pytest.raises(ValueError, match="'donor'.*not numeric"):
        bj.BioJEPA.setup_anndata(adata, continuous_covariate_keys=["donor"])


def test_bad_input_scale(adata):
    with pytest.raises(ValueError, match="input_scale"):
        bj.BioJEPA.setup_anndata(adata, input_scale="tpm")
    adata.X = adata.X.astype(float) + 0.5
    with pytest.raises(ValueError, match="non-integer"):
        bj.BioJEPA.setup_anndata(adata, input_scale="counts")


def test_unknown_plan_kwarg(adata):
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, n_embed=16, n_heads=2)
    with pytest.raises(TypeError, match="lrr"):
        model.train(max_epochs=1, plan_kwargs={"lrr": 1e-3})


def _without_scvi(mapping):
    return {k: v for k, v in mapping.items() if not k.startswith(SCVI_SLOTS)}


def test_user_anndata_not_mutated_beyond_documented_slots(adata):
    adata.layers["counts"] = adata.X.copy()
    adata.obs["cont"] = np.arange(adata.n_obs, dtype=float)
    before = copy.deepcopy(adata)
    bj.BioJEPA.setup_anndata(adata, batch_key="batch", continuous_covariate_keys=["cont"])
    model = bj.BioJEPA(adata, n_latent=4, n_embed=16, n_heads=2, predictor_dim=16)
    model.train(max_epochs=1, enable_progress_bar=False)
    model.get_latent_representation(key_added="X_biojepa")

    np.testing.assert_array_equal(adata.X, before.X)
    np.testing.assert_array_equal(adata.layers["counts"], before.layers["counts"])
    assert list(adata.layers) == list(before.layers)
    pd.testing.assert_frame_equal(adata.var, before.var)
    obs = adata.obs[[c for c in adata.obs.columns if not c.startswith(SCVI_SLOTS)]]
    pd.testing.assert_frame_equal(obs, before.obs)
    assert set(_without_scvi(adata.obsm)) == set(before.obsm) | {"X_biojepa"}
    for key in before.obsm:
        np.testing.assert_array_equal(adata.obsm[key], before.obsm[key])
    assert set(_without_scvi(adata.uns)) == set(before.uns)
