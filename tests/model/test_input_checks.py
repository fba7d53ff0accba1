"""Odd and bad inputs across the public API: each raises naming the key or value, and leaves the AnnData as it was."""

import re

import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scvi
from anndata import AnnData

import biojepa as bj

SMALL = {"n_latent": 4, "n_embed": 8, "n_heads": 2, "predictor_dim": 8, "n_layers": 1, "predictor_depth": 1}


def _cells(n_cells=60, n_genes=30, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.poisson(3.0, (n_cells, n_genes)).astype(np.float32)
    X[:, 0] += 1
    obs = pd.DataFrame(
        {
            "batch": np.resize(["b0", "b1"], n_cells),
            "cell_type": np.resize(["T", "B", "NK"], n_cells),
            "condition": np.resize(["control", "g1", "g2", "g1+g2"], n_cells),
            "hours": np.resize([0.0, 12.0, 24.0], n_cells),
            "subject": np.repeat([f"s{i}" for i in range(n_cells // 3 + 1)], 3)[:n_cells],
        },
        index=[f"c{i}" for i in range(n_cells)],
    )
    adata = AnnData(X, obs=obs)
    adata.var_names = [f"g{i}" for i in range(n_genes)]
    return adata


def _snapshot(adata):
    return adata.obs.copy(), adata.var.copy(), set(adata.uns), set(adata.obsm), set(adata.layers)


def _assert_unchanged(adata, snap):
    obs, var, uns, obsm, layers = snap
    pd.testing.assert_frame_equal(adata.obs, obs)
    pd.testing.assert_frame_equal(adata.var, var)
    assert (set(adata.uns), set(adata.obsm), set(adata.layers)) == (uns, obsm, layers)


def _raises(exc, pattern, fn):
    with pytest.raises(exc) as info:
        fn()
    message = info.value.args[0] if info.value.args else str(info.value)
    assert re.search(pattern, message, flags=re.S), f"{message!r} does not match {pattern!r}"


# --------------------------------------------------------------------------------------------- setup_anndata
def _nan(key):
    def edit(adata):
        adata.obs[key] = adata.obs[key].astype(object)
        adata.obs.iloc[3, adata.obs.columns.get_loc(key)] = np.nan

    return edit


def _dup(axis):
    def edit(adata):
        names = list(getattr(adata, f"{axis}_names"))
        names[1] = names[0]
        setattr(adata, f"{axis}_names", names)

    return edit


SETUP_CASES = {
    "nan-batch": (_nan("batch"), {"batch_key": "batch"}, ValueError, r"`batch_key`.*'batch'.*1 missing.*fill"),
    "nan-covariate": (
        _nan("cell_type"),
        {"categorical_covariate_keys": ["cell_type"]},
        ValueError,
        r"categorical_covariate_keys.*'cell_type'.*missing",
    ),
    "nan-sample": (
        _nan("subject"),
        {"time_key": "hours", "sample_key": "subject"},
        ValueError,
        r"`sample_key`.*'subject'.*missing",
    ),
    "nan-perturbation": (
        _nan("condition"),
        {"perturbation_key": "condition", "control_value": "control"},
        ValueError,
        r"'condition'.*missing",
    ),
    "nan-perturbation-type": (
        _nan("cell_type"),
        {"perturbation_key": "condition", "control_value": "control", "perturbation_type_key": "cell_type"},
        ValueError,
        r"perturbation_type_key.*'cell_type'.*missing",
    ),
    "duplicate-obs": (_dup("obs"), {}, ValueError, r"obs_names.*'c0'.*obs_names_make_unique"),
    "duplicate-var": (_dup("var"), {}, ValueError, r"var_names.*'g0'.*var_names_make_unique"),
    "missing-batch-column": (None, {"batch_key": "donor"}, KeyError, r"batch_key.*'donor'"),
    "dose-without-perturbation": (None, {"dose_key": "hours"}, ValueError, r"dose_key.*perturbation_key"),
    "sample-without-time": (None, {"sample_key": "subject"}, ValueError, r"sample_key.*time_key"),
    "time-not-numeric": (None, {"time_key": "cell_type"}, ValueError, r"time_key.*'cell_type'.*not numbers"),
    "unknown-control": (
        None,
        {"perturbation_key": "condition", "control_value": "ctrl"},
        ValueError,
        r"'ctrl' not found.*control_value",
    ),
    "unknown-input-scale": (None, {"input_scale": "tpm"}, ValueError, r"input_scale.*'tpm'"),
    "missing-layer": (None, {"layer": "counts"}, KeyError, r"'counts'.*layers"),
}


@pytest.mark.parametrize("case", list(SETUP_CASES))
def test_setup_errors_leave_anndata_unchanged(case):
    edit, kwargs, exc, pattern = SETUP_CASES[case]
    adata = _cells()
    if edit is not None:
        edit(adata)
    snap = _snapshot(adata)
    _raises(exc, pattern, lambda: bj.BioJEPA.setup_anndata(adata, **kwargs))
    _assert_unchanged(adata, snap)


# --------------------------------------------------------------------------------------------- model arguments
MODEL_CASES = {
    "n_latent-negative": ({"n_latent": -3}, r"`n_latent`.*-3"),
    "n_latent-zero": ({"n_latent": 0}, r"`n_latent`.*positive.*0"),
    "n_latent-float": ({"n_latent": 2.5}, r"`n_latent`.*2\.5"),
    "n_embed-zero": ({"n_embed": 0}, r"`n_embed`.*0"),
    "n_heads-not-dividing": ({"n_embed": 8, "n_heads": 3}, r"`n_heads`=3.*`n_embed`=8"),
    "n_modules-zero": ({"n_modules": 0}, r"`n_modules`.*0"),
    "dropout-one": ({"dropout": 1.0}, r"`dropout`.*1\.0"),
    "mask_ratio-reversed": ({"mask_ratio": (0.6, 0.2)}, r"`mask_ratio`.*0\.6"),
    "mask_blocks-zero": ({"mask_blocks": 0}, r"`mask_blocks`.*0"),
    "weight-negative": ({"variance_weight": -1.0}, r"`variance_weight`.*-1\.0"),
}


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_model_argument_errors(case):
    kwargs, pattern = MODEL_CASES[case]
    adata = _cells()
    bj.BioJEPA.setup_anndata(adata)
    _raises(ValueError, pattern, lambda: bj.BioJEPA(adata, **kwargs))


@pytest.mark.parametrize(("n_cells", "n_genes"), [(1, 30), (60, 1)])
def test_one_cell_or_one_gene(n_cells, n_genes):
    adata = _cells()[:n_cells, :n_genes].copy()
    bj.BioJEPA.setup_anndata(adata)
    _raises(
        ValueError, rf"at least 2 cells and 2 genes.*{n_cells} cells and {n_genes} genes", lambda: bj.BioJEPA(adata)
    )


# --------------------------------------------------------------------------------------------- train arguments
TRAIN_CASES = {
    "max_epochs-negative": ({"max_epochs": -1}, r"`max_epochs`.*-1"),
    "max_epochs-zero": ({"max_epochs": 0}, r"`max_epochs`.*positive.*0"),
    "max_epochs-float": ({"max_epochs": 1.5}, r"`max_epochs`.*1\.5"),
    "batch_size-zero": ({"max_epochs": 1, "batch_size": 0}, r"`batch_size`.*0"),
    "batch_size-one": ({"max_epochs": 1, "batch_size": 1}, r"`batch_size`.*>= 2.*1"),
}


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_argument_errors(case):
    kwargs, pattern = TRAIN_CASES[case]
    adata = _cells()
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, **SMALL)
    _raises(ValueError, pattern, lambda: model.train(enable_progress_bar=False, **kwargs))
    assert not model.is_trained_


def test_two_cells_cannot_train():
    adata = _cells()[:2].copy()
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, **SMALL)
    _raises(ValueError, r"at least 3 cells.*has 2", lambda: model.train(max_epochs=1, enable_progress_bar=False))


# --------------------------------------------------------------------------------------------- queries
@pytest.fixture(scope="module")
def counts_model():
    scvi.settings.seed = 0
    adata = _cells(n_cells=90)
    bj.BioJEPA.setup_anndata(adata, batch_key="batch", categorical_covariate_keys=["cell_type"])
    model = bj.BioJEPA(adata, **SMALL)
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    return model


def _log1p(adata):
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    adata.uns.pop("log1p")


def _set(key, index, value):
    def edit(adata):
        adata.obs[key] = adata.obs[key].astype(object)
        adata.obs.iloc[index, adata.obs.columns.get_loc(key)] = value

    return edit


QUERY_CASES = {
    "no-batch-column": (lambda a: a.obs.drop(columns="batch", inplace=True), KeyError, r"'batch'"),
    "log1p-for-counts": (_log1p, ValueError, r"trained on raw counts.*log-normalized"),
    "genes-reordered": (lambda a: a._inplace_subset_var(a.var_names[::-1]), ValueError, r"order.*reorder"),
    "genes-missing": (lambda a: a._inplace_subset_var(a.var_names[:20]), ValueError, r"lacks 10 of the model's 30"),
    "negative-values": (lambda a: a.X.__setitem__((0, 0), -1.0), ValueError, r"negative values"),
}


@pytest.mark.parametrize("case", list(QUERY_CASES))
def test_query_errors_leave_query_unchanged(counts_model, case):
    edit, exc, pattern = QUERY_CASES[case]
    query = _cells(n_cells=12, seed=1)
    edit(query)
    snap = _snapshot(query)
    _raises(exc, pattern, lambda: counts_model.get_latent_representation(query))
    _assert_unchanged(query, snap)


@pytest.mark.parametrize(
    "edit",
    [_set("batch", 0, "b9"), _set("cell_type", 2, "DC"), _set("batch", 1, np.nan)],
    ids=["batch", "covariate", "nan-batch"],
)
def test_unseen_categories_embed_without_changing_the_query(counts_model, edit):
    query = _cells(n_cells=12, seed=1)
    edit(query)
    snap = _snapshot(query)
    z = counts_model.get_latent_representation(query)  # the encoder reads expression only
    assert z.shape == (12, counts_model.module.n_latent) and np.isfinite(z).all()
    _assert_unchanged(query, snap)


def test_key_added_with_indices(counts_model):
    _raises(
        ValueError,
        r"key_added.*indices=None",
        lambda: counts_model.get_latent_representation(indices=[0, 1], key_added="X_biojepa"),
    )


# --------------------------------------------------------------------------------------------- perturbations
@pytest.fixture(scope="module")
def perturbation_model(screen_factory):
    scvi.settings.seed = 0
    adata = screen_factory()
    bj.BioJEPA.setup_anndata(
        adata, perturbation_key="condition", control_value="control", categorical_covariate_keys=["line"]
    )
    model = bj.BioJEPA(adata, **SMALL)
    model.train(max_epochs=1, batch_size=64, enable_progress_bar=False)
    return model, adata


PREDICT_CASES = {
    "empty-list": ({"perturbations": []}, ValueError, r"`perturbations` is empty"),
    "dose-without-dose_key": ({"perturbations": ["g0"], "dose": 2.0}, ValueError, r"dose=2\.0.*dose_key"),
    "zero-control-cells": ({"perturbations": ["g0"], "n_control_cells": 0}, ValueError, r"`n_control_cells`.*0"),
    "negative-control-cells": (
        {"perturbations": ["g0"], "n_control_cells": -5},
        ValueError,
        r"`n_control_cells`.*-5",
    ),
    "unknown-covariate-value": (
        {"perturbations": ["g0"], "covariates": {"line": "L9"}},
        (KeyError, ValueError),
        r"L9",
    ),
}


@pytest.mark.parametrize("case", list(PREDICT_CASES))
def test_predict_perturbation_errors(perturbation_model, case):
    model, adata = perturbation_model
    kwargs, exc, pattern = PREDICT_CASES[case]
    snap = _snapshot(adata)
    _raises(exc, pattern, lambda: model.predict_perturbation(**kwargs))
    _assert_unchanged(adata, snap)


@pytest.fixture(scope="module")
def prediction(perturbation_model):
    model, adata = perturbation_model
    return model.predict_perturbation(["g0+g1"], covariates={"line": "L1"}), adata


def _few_genes(pred):
    return pred[:, :5].copy()


def _nan_row(pred):
    pred = pred.copy()
    pred.X[0, 3] = np.nan
    return pred


EVALUATE_CASES = {
    "5-of-60-genes": (_few_genes, ValueError, r"pred covers 5 of adata's 60 genes"),
    "nan-prediction": (_nan_row, ValueError, r"NaN or infinite.*\['0'\]"),
    "missing-key": (lambda p: p, KeyError, r"'cell_line'"),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_errors(prediction, case):
    pred, adata = prediction
    edit, exc, pattern = EVALUATE_CASES[case]
    covariates = ["cell_line"] if case == "missing-key" else ["line"]
    _raises(exc, pattern, lambda: bj.metrics.evaluate(edit(pred), adata, "condition", "control", covariates))


def test_evaluate_full_prediction_scores(prediction):
    pred, adata = prediction
    scores = bj.metrics.evaluate(pred, adata, "condition", "control", ["line"])
    assert np.isfinite(scores["pearson_delta"]).all()


# --------------------------------------------------------------------------------------------- time courses
@pytest.fixture(scope="module")
def course_model():
    scvi.settings.seed = 0
    adata = _cells(n_cells=90)
    adata.obs["hours"] = np.tile([12.0, 24.0, 36.0], 30)
    bj.BioJEPA.setup_anndata(adata, time_key="hours", sample_key="subject")
    model = bj.BioJEPA(adata, **SMALL)
    model.train(max_epochs=1, batch_size=32, enable_progress_bar=False)
    return model, adata


TRAJECTORY_CASES = {
    "before-first-observation": ({"time_points": [6.0]}, r"`time_points` \[6\.0\].*before the first.*at 12"),
    "no-time-points": ({"time_points": []}, r"`time_points`.*\[\]"),
    "nan-time": ({"time_points": [np.nan]}, r"`time_points`.*nan"),
    "rollout-zero": ({"time_points": [48.0], "rollout_step": 0.0}, r"`rollout_step`.*0\.0"),
    "no-indices": ({"time_points": [48.0], "indices": []}, r"`indices` selects no observation"),
}


@pytest.mark.parametrize("case", list(TRAJECTORY_CASES))
def test_predict_trajectory_errors(course_model, case):
    model, adata = course_model
    kwargs, pattern = TRAJECTORY_CASES[case]
    _raises(ValueError, pattern, lambda: model.predict_trajectory(**kwargs))


def test_trajectory_forward_still_predicts(course_model):
    model, _ = course_model
    pred = model.predict_trajectory(indices=np.arange(6), time_points=[48.0])
    assert pred.n_obs == 2 and np.isfinite(pred.X).all()
