"""Model folders: versions recorded, nothing unpickled, 0.1.0 folders still load, clear errors."""

import json
import shutil
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scvi
import torch

import biojepa as bj
from biojepa.model import _save_load

FIXTURE = Path(__file__).parents[1] / "fixtures" / "model_v0_1_0"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    adata = scvi.data.synthetic_iid(batch_size=40, n_genes=30, n_batches=2, n_labels=2)
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    bj.BioJEPA.setup_anndata(adata, batch_key="batch", categorical_covariate_keys=["labels"])
    model = bj.BioJEPA(adata, n_latent=4, n_embed=8, n_heads=2, predictor_dim=8, n_modules=3)
    model.train(max_epochs=1, batch_size=40, enable_progress_bar=False)
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save(str(path))
    return model, adata, path


class _Payload:
    """Pickles to a call that writes a file when unpickled."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (exec, (f"open({str(self.target)!r}, 'w').write('pwned')",))


def test_release_0_1_0_folder_loads_with_identical_latent():
    adata = ad.read_h5ad(FIXTURE / "adata.h5ad")
    model = bj.BioJEPA.load(str(FIXTURE / "model"), adata=adata)
    np.testing.assert_allclose(model.get_latent_representation(), np.load(FIXTURE / "latent.npy"), atol=1e-6)
    assert model.is_trained_ and len(model.history["jepa_loss_train"]) == 2
    pred = model.predict_perturbation(["g1+g2"], covariates={"batch": "batch_0", "cell_type": "label_0"})
    assert pred.shape == (1, adata.n_vars) and np.isfinite(pred.X).all()


def test_log_scale_model_saved_before_its_default_readout_loads_without_one(tmp_path):
    # log-scale input had no readout by default before "mse_log"; such a folder records readout_weight=None
    adata = scvi.data.synthetic_iid(batch_size=40, n_genes=30, n_batches=1)
    adata.X = np.log1p(np.asarray(adata.X))
    bj.BioJEPA.setup_anndata(adata)
    model = bj.BioJEPA(adata, n_latent=4, n_embed=8, n_heads=2, predictor_dim=8, n_modules=3, readout_weight=0.0)
    model.train(max_epochs=1, batch_size=40, enable_progress_bar=False)
    model.save(str(tmp_path), overwrite=True)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["attr_dict"]["init_params_"]["non_kwargs"]["readout_weight"] = None  # the default as then saved
    (tmp_path / "model.json").write_text(json.dumps(meta))
    assert bj.BioJEPA(adata, n_latent=4, n_modules=3).module.readout is not None  # today's default has one
    loaded = bj.BioJEPA.load(str(tmp_path), adata=adata.copy())
    assert loaded.module.readout is None
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6)


def test_saved_folder_records_versions_and_reloads(trained):
    model, adata, path = trained
    meta = json.loads((path / "model.json").read_text())
    assert meta["format_version"] == _save_load.FORMAT_VERSION
    assert meta["biojepa_version"] == bj.__version__
    assert meta["scvi_tools_version"] == scvi.__version__
    weights = torch.load(path / "model.pt", weights_only=True)  # tensors only
    assert set(weights) == {"model_state_dict"}
    loaded = bj.BioJEPA.load(str(path), adata=adata.copy())
    np.testing.assert_allclose(loaded.get_latent_representation(), model.get_latent_representation(), atol=1e-6)
    assert loaded.history["jepa_loss_train"].equals(model.history["jepa_loss_train"])
    np.testing.assert_array_equal(loaded.train_indices, model.train_indices)


def test_save_with_anndata_and_load_without(trained, tmp_path):
    model, _, _ = trained
    model.save(str(tmp_path / "m"), save_anndata=True)
    loaded = bj.BioJEPA.load(str(tmp_path / "m"))
    assert loaded.adata.n_obs == model.adata.n_obs


def test_existing_folder_needs_overwrite(trained):
    model, _, path = trained
    with pytest.raises(ValueError, match="already exists.*overwrite=True"):
        model.save(str(path))


@pytest.mark.parametrize("with_json", [False, True])
def test_crafted_model_file_is_refused(trained, tmp_path, with_json):
    _, adata, path = trained
    folder = tmp_path / "evil"
    folder.mkdir()
    if with_json:
        shutil.copy(path / "model.json", folder / "model.json")
    target = tmp_path / "pwned.txt"
    torch.save({"model_state_dict": {}, "attr_dict": _Payload(target), "var_names": []}, folder / "model.pt")
    with pytest.raises(ValueError, match=r"Refusing to load .*model\.pt"):
        bj.BioJEPA.load(str(folder), adata=adata.copy())
    assert not target.exists()


def test_missing_folder_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        bj.BioJEPA.load(str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=r"model\.json nor model\.pt"):
        bj.BioJEPA.load(str(tmp_path))


@pytest.mark.parametrize("damaged", ["model.json", "model.pt"])
def test_corrupted_file_names_path(trained, tmp_path, damaged):
    _, adata, path = trained
    folder = tmp_path / "copy"
    shutil.copytree(path, folder)
    (folder / damaged).write_bytes(b"\xff\xfe not a model \x00" * 10)
    with pytest.raises(ValueError, match=damaged.replace(".", r"\.")):
        bj.BioJEPA.load(str(folder), adata=adata.copy())


def test_corrupted_legacy_file_names_path(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"\x80\x04garbage")
    with pytest.raises(ValueError, match=r"model\.pt"):
        bj.BioJEPA.load(str(tmp_path), adata=ad.read_h5ad(FIXTURE / "adata.h5ad"))


def test_newer_format_is_refused(trained, tmp_path):
    _, adata, path = trained
    folder = tmp_path / "newer"
    shutil.copytree(path, folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["format_version"] = 99
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format version 99.*upgrade"):
        bj.BioJEPA.load(str(folder), adata=adata.copy())


@pytest.mark.parametrize("change", ["reordered", "renamed"])
def test_load_onto_other_genes_raises(trained, change):
    _, adata, path = trained
    other = adata.copy()
    if change == "reordered":
        other = other[:, other.var_names[::-1]].copy()
    else:
        other.var_names = [f"x{i}" for i in range(other.n_vars)]
    with pytest.raises(ValueError, match="var_names.*prepare_query_anndata|var_names.*reorder"):
        bj.BioJEPA.load(str(path), adata=other)


def test_non_zero_rank_does_not_write(trained, tmp_path, monkeypatch):
    model, _, _ = trained
    monkeypatch.setattr(_save_load, "_rank", lambda: 1)
    model.save(str(tmp_path / "rank1"))
    assert not (tmp_path / "rank1").exists()


def test_unsaveable_attribute_is_named(trained, tmp_path):
    model, _, _ = trained
    model.odd_ = object()
    try:
        with pytest.raises(TypeError, match="odd_"):
            model.save(str(tmp_path / "odd"))
    finally:
        del model.odd_
