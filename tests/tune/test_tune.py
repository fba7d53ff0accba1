"""Tuning with scvi-tools' autotune: the docs page's example runs, and the search space is checked."""

import re
from pathlib import Path

import numpy as np
import pytest
import scvi

import biojepa as bj

pytest.importorskip("ray.tune")
pytest.importorskip("hyperopt")
pytest.importorskip("scib_metrics")

TUNING_PAGE = Path(__file__).parents[2] / "docs" / "tuning.md"


def test_search_space_objectives():
    loss = bj.tune.search_space(max_epochs=3)
    scib = bj.tune.search_space(objective="scib")
    assert sorted(loss["model_params"]) == ["n_embed", "n_layers", "predictor_depth", "predictor_dim"]
    assert {"n_latent", "mask_ratio", "variance_weight"} <= set(scib["model_params"])
    assert loss["train_params"]["max_epochs"] == 3 and "lr" in loss["train_params"]["plan_kwargs"]
    with pytest.raises(ValueError, match="'accuracy'"):
        bj.tune.search_space(objective="accuracy")


@pytest.mark.slow
def test_tuning_page_example_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(scvi.settings, "logging_dir", tmp_path / "scvi_log")  # trials log here, not in the checkout
    first, second = re.findall(r"```python\n(.*?)```", TUNING_PAGE.read_text(), flags=re.S)
    namespace: dict = {}
    exec(compile(first, "docs/tuning.md example", "exec"), namespace)
    results = namespace["experiment"].result_grid
    assert len(results) == 4 and not results.errors
    assert np.isfinite(namespace["best"].metrics["validation_loss"])
    exec(compile(second.replace('"max_epochs": 50', '"max_epochs": 1'), "docs/tuning.md training", "exec"), namespace)
    assert namespace["model"].is_trained_
