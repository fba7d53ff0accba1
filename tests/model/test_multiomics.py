import copy

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scvi
import torch

import biojepa as bj
from biojepa._constants import LOSS_KEYS
from biojepa.data import module_index_from_labels, normalize_modality
from biojepa.nn import CellEncoder, GeneTokenizer

N_LATENT = 6
SMALL = {"n_latent": N_LATENT, "n_embed": 16, "n_heads": 2, "predictor_dim": 16, "n_layers": 1, "predictor_depth": 1}
MODS = {"rna_layer": "rna", "protein_layer": "adt"}
SCVI_SLOTS = ("_scvi_",)


def make_citeseq(n=120, n_genes=36, n_prot=8, seed=0, missing=0.0):
    """RNA and protein counts driven by the same 3 latent programs, so protein is predictable from RNA.

    ``missing``: fraction of cells whose protein row is all NaN (not measured).
    """
    rng = np.random.default_rng(seed)
    programs = rng.normal(size=(n, 3))
    rna = rng.poisson(np.exp(1.0 + programs @ rng.normal(size=(3, n_genes)) * 0.7)).astype(np.float32)
    rna[:, 0] += 1  # no all-zero cell
    abundance = np.linspace(1.5, 5.0, n_prot)  # proteins of different abundance: CLR means differ
    prot = rng.poisson(np.exp(abundance + programs @ rng.normal(size=(3, n_prot)) * 0.7)).astype(np.float32)
    if missing:
        prot[rng.permutation(n)[: int(round(missing * n))]] = np.nan
    names = [f"cell{i}" for i in range(n)]
    rna = ad.AnnData(rna, obs=pd.DataFrame({"site": np.where(np.arange(n) % 2, "A", "B")}, index=names))
    rna.var_names = [f"g{i}" for i in range(n_genes)]
    adt = ad.AnnData(prot, obs=pd.DataFrame(index=names))
    adt.var_names = [f"p{i}" for i in range(n_prot)]
    return md.MuData({"rna": rna, "adt": adt})


def _clr(counts):
    x = np.log1p(counts)
    return x - x.mean(1, keepdims=True)


def _train(mdata, epochs, modalities=MODS, **setup):
    scvi.settings.seed = 0
    bj.BioJEPA.setup_mudata(mdata, modalities=modalities, **setup)
    model = bj.BioJEPA(mdata, **SMALL)
    model.train(max_epochs=epochs, batch_size=64, enable_progress_bar=False)
    return model


@pytest.fixture(scope="module")
def citeseq():
    mdata = make_citeseq()
    return _train(mdata, epochs=5), mdata


@pytest.fixture(scope="module")
def partial():
    """20% of the cells have no protein (all-NaN rows)."""
    mdata = make_citeseq(seed=1, missing=0.2)
    return _train(mdata, epochs=3), mdata


# ---------------------------------------------------------------------------------------------- setup errors
def test_setup_mudata_modalities_errors():
    mdata = make_citeseq(n=20)
    with pytest.raises(ValueError, match="rna_layer"):
        bj.BioJEPA.setup_mudata(mdata)  # no modalities
    with pytest.raises(ValueError, match="rna_layer"):
        bj.BioJEPA.setup_mudata(mdata, modalities={"protein_layer": "adt"})
    with pytest.raises(ValueError, match="Unknown.*'adt_layer'"):
        bj.BioJEPA.setup_mudata(mdata, modalities={"rna_layer": "rna", "adt_layer": "adt"})
    with pytest.raises(KeyError, match="'protein'"):
        bj.BioJEPA.setup_mudata(mdata, modalities={"rna_layer": "rna", "protein_layer": "protein"})


def test_setup_mudata_empty_and_misaligned_modalities():
    mdata = make_citeseq(n=20)
    empty = md.MuData({"rna": mdata["rna"].copy(), "adt": mdata["adt"][:, []].copy()})
    with pytest.raises(ValueError, match="'adt' has no features"):
        bj.BioJEPA.setup_mudata(empty, modalities=MODS)
    fewer = md.MuData({"rna": mdata["rna"].copy(), "adt": mdata["adt"][:15].copy()})
    with pytest.raises(ValueError, match="aligned"):
        bj.BioJEPA.setup_mudata(fewer, modalities=MODS)
    reordered = md.MuData({"rna": mdata["rna"].copy(), "adt": mdata["adt"][::-1].copy()})
    with pytest.raises(ValueError, match="aligned"):
        bj.BioJEPA.setup_mudata(reordered, modalities=MODS)


def test_setup_mudata_covariate_and_nan_errors():
    mdata = make_citeseq(n=20)
    with pytest.raises(KeyError, match="'donor'"):
        bj.BioJEPA.setup_mudata(mdata, batch_key="donor", modalities=MODS)
    with pytest.raises(KeyError, match="'donor'.*rna"):
        bj.BioJEPA.setup_mudata(mdata, batch_key="donor", modalities={**MODS, "batch_key": "rna"})
    with pytest.raises(KeyError, match="'age'"):
        bj.BioJEPA.setup_mudata(mdata, continuous_covariate_keys=["age"], modalities=MODS)
    mdata.mod["adt"].X[3, 1] = np.nan  # partial NaN: not a missing cell
    with pytest.raises(ValueError, match="'adt'.*NaN in cells where it was measured"):
        bj.BioJEPA.setup_mudata(mdata, modalities=MODS)
    mdata.mod["adt"].X[:] = np.nan
    with pytest.raises(ValueError, match="'adt' is NaN in every cell"):
        bj.BioJEPA.setup_mudata(mdata, modalities=MODS)


# ---------------------------------------------------------------------------------------------- encoder masking
def _encoder():
    index = torch.from_numpy(module_index_from_labels([g % 4 for g in range(12)], 12))
    return CellEncoder(GeneTokenizer(index, 12, 8), n_latent=5, depth=2, n_heads=2).eval()


@torch.no_grad()
def test_encoder_token_mask_ignores_masked_modules():
    torch.manual_seed(0)
    enc = _encoder()
    x = torch.randn(3, 12)
    _, z_full = enc(x)
    mask = torch.tensor([[True, True, True, True], [True, True, False, True], [False, False, False, False]])
    _, z = enc(x, token_mask=mask)
    torch.testing.assert_close(z[0], z_full[0])  # all tokens valid: the unmasked latent
    torch.testing.assert_close(z[2], z_full[2])  # nothing valid: falls back to every token (no NaN)
    assert not torch.allclose(z[1], z_full[1])
    x2 = x.clone()
    x2[1, 2::4] += 5.0  # the features of module 2, masked out for cell 1
    _, z2 = enc(x2, token_mask=mask)
    torch.testing.assert_close(z2[1], z[1])
    _, z2_full = enc(x2)
    assert not torch.allclose(z2_full[1], z_full[1])  # the change does matter when the module is visible
    torch.testing.assert_close(enc(x, token_mask=torch.ones(3, 4, dtype=torch.bool))[1], z_full)


@torch.no_grad()
def test_encoder_token_mask_with_keep_equals_dropping_the_module():
    torch.manual_seed(0)
    enc = _encoder()
    x = torch.randn(2, 12)
    keep = torch.tensor([[0, 1, 2], [3, 1, 0]])
    mask = torch.tensor([[True, True, False, True], [True, True, True, False]])  # module 2 / module 3 absent
    _, z = enc(x, keep=keep, token_mask=mask)
    _, z0 = enc(x[:1], keep=torch.tensor([[0, 1]]))
    _, z1 = enc(x[1:], keep=torch.tensor([[1, 0]]))
    torch.testing.assert_close(z, torch.cat([z0, z1]), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------- module parts
def test_module_normalization_matches_data_functions(citeseq):
    model, mdata = citeseq
    module = model.module
    rna, prot = mdata["rna"].X[:10].copy(), mdata["adt"].X[:10].copy()
    prot[4] = np.nan  # cell 4 has no protein
    x, present = module.normalize_inputs(torch.from_numpy(rna), None, torch.from_numpy(prot))
    mean, std = module.gene_mean.cpu().numpy(), module.gene_std.cpu().numpy()
    expected = np.concatenate(
        [normalize_modality(rna, "rna", "counts"), normalize_modality(prot, "protein", "counts")], 1
    )
    expected = np.clip((expected - mean) / std, -10, 10)
    ok = np.ones(10, dtype=bool)
    ok[4] = False
    np.testing.assert_allclose(x.cpu().numpy()[ok], expected[ok], rtol=1e-4, atol=1e-4)
    assert torch.isfinite(x).all()
    np.testing.assert_array_equal(present.cpu().numpy(), np.stack([np.ones(10, bool), ok], 1))
    # the protein statistics are those of the per-cell CLR of the training cells
    n_genes = mdata["rna"].n_vars
    np.testing.assert_allclose(mean[n_genes:], _clr(mdata["adt"].X).mean(0), rtol=1e-4, atol=1e-4)


def test_module_token_mask_and_cross_modal_masks(citeseq):
    model, mdata = citeseq
    module = model.module
    n_genes, total = mdata["rna"].n_vars, mdata["rna"].n_vars + mdata["adt"].n_vars
    index = module.context_encoder.tokenizer.module_index.cpu().numpy()
    is_protein = np.array([(row[row < total] >= n_genes).all() for row in index])
    is_rna = np.array([(row[row < total] < n_genes).all() for row in index])
    assert (is_protein ^ is_rna).all() and is_protein.any() and is_rna.any()  # modules never mix modalities
    np.testing.assert_array_equal(module.module_modality.cpu().numpy(), is_protein.astype(int))

    present = torch.tensor([[True, True], [True, False]], device=module.module_modality.device)
    mask = module.token_mask(present).cpu().numpy()
    np.testing.assert_array_equal(mask, np.stack([np.ones_like(is_rna), is_rna]))
    np.testing.assert_array_equal(module.token_mask(present, drop=["protein"]).cpu().numpy(), np.stack([is_rna] * 2))
    with pytest.raises(ValueError, match="'atac'"):
        module.token_mask(present, drop=["atac"])

    assert module.cross_modal_masks(4) is None  # eval mode: never
    prob = module.cross_modal_prob
    try:
        module.train()
        module.cross_modal_prob = 1.0
        torch.manual_seed(0)
        seen = set()
        for _ in range(20):
            enc, pred, m = module.cross_modal_masks(4)
            seen.add(m)
            assert enc.shape[0] == pred.shape[0] == 4
            hidden = is_protein if m == 1 else is_rna
            np.testing.assert_array_equal(pred[0].cpu().numpy(), np.flatnonzero(hidden))
            np.testing.assert_array_equal(enc[0].cpu().numpy(), np.flatnonzero(~hidden))
        assert seen == {0, 1}
        module.cross_modal_prob = 0.0
        assert module.cross_modal_masks(4) is None
    finally:
        module.cross_modal_prob = prob
        module.eval()


# ---------------------------------------------------------------------------------------------- training and latent
def test_training_logs_modality_losses(citeseq):
    model, _ = citeseq
    for key in (LOSS_KEYS.CROSS_MODAL, LOSS_KEYS.MODALITY, LOSS_KEYS.JEPA):
        values = model.history[f"{key}_train"].to_numpy(dtype=float)
        assert values.shape == (5, 1) and np.isfinite(values).all(), key
        assert (values >= 0).all(), key
    assert (model.history[f"{LOSS_KEYS.CROSS_MODAL}_train"].to_numpy(dtype=float) > 0).any()
    heads = model.history[f"{LOSS_KEYS.MODALITY}_train"].to_numpy(dtype=float).ravel()
    assert (heads > 0).all() and heads[-1] < heads[0]  # the protein head learns


def test_latent_with_and_without_protein_land_close(citeseq):
    model, mdata = citeseq
    z = model.get_latent_representation(mdata, key_added="X_biojepa")
    assert z.shape == (mdata.n_obs, N_LATENT) and np.isfinite(z).all()
    np.testing.assert_array_equal(mdata.obsm["X_biojepa"], z)
    rna = mdata["rna"].copy()
    z_rna = model.get_latent_representation(rna, key_added="X_rna_only")
    assert z_rna.shape == z.shape and np.isfinite(z_rna).all()
    np.testing.assert_array_equal(rna.obsm["X_rna_only"], z_rna)
    assert "X_rna_only" not in mdata.obsm and "X_rna_only" not in mdata["rna"].obsm
    assert not np.allclose(z_rna, z)  # the protein is used when present
    same = np.linalg.norm(z_rna - z, axis=1)
    other = np.linalg.norm(z_rna - np.roll(z, 37, axis=0), axis=1)  # a different cell for every cell
    assert same.mean() < 0.8 * other.mean(), (same.mean(), other.mean())
    assert (same < other).mean() > 0.7


def test_queries_do_not_mutate_user_data(citeseq):
    model, mdata = citeseq
    # the registered MuData (set up and trained already)
    before = mdata.copy()
    model.get_latent_representation(mdata, key_added="X_query")
    model.predict_modality(mdata)
    pd.testing.assert_frame_equal(mdata.obs, before.obs)
    assert set(mdata.obsm) == set(before.obsm) | {"X_query"}
    for name in ("rna", "adt"):
        a, b = mdata[name], before[name]
        np.testing.assert_array_equal(a.X, b.X)
        pd.testing.assert_frame_equal(a.obs, b.obs)
        pd.testing.assert_frame_equal(a.var, b.var)
        assert set(a.obsm) == set(b.obsm) and set(a.layers) == set(b.layers)

    # an RNA AnnData: only the `key_added` slot changes
    rna = mdata["rna"].copy()
    rna.layers["counts"] = rna.X.copy()
    rna.obsm["X_pca"] = np.zeros((rna.n_obs, 2))
    rna_before = copy.deepcopy(rna)
    model.get_latent_representation(rna, key_added="X_biojepa")
    model.predict_modality(rna)
    np.testing.assert_array_equal(rna.X, rna_before.X)
    np.testing.assert_array_equal(rna.layers["counts"], rna_before.layers["counts"])
    pd.testing.assert_frame_equal(rna.obs, rna_before.obs)
    pd.testing.assert_frame_equal(rna.var, rna_before.var)
    assert set(rna.obsm) == {"X_pca", "X_biojepa"} and set(rna.layers) == {"counts"}
    assert set(rna.uns) == set(rna_before.uns)

    # a new (unregistered) MuData: only `key_added` and scvi-tools' own slots
    fresh = md.MuData({"rna": mdata["rna"].copy(), "adt": mdata["adt"].copy()})
    fresh_before = fresh.copy()
    model.get_latent_representation(fresh, key_added="X_biojepa")
    obs = fresh.obs[[c for c in fresh.obs.columns if not c.startswith(SCVI_SLOTS)]]
    pd.testing.assert_frame_equal(obs, fresh_before.obs)
    assert set(fresh.obsm) == set(fresh_before.obsm) | {"X_biojepa"}
    for name in ("rna", "adt"):
        np.testing.assert_array_equal(fresh[name].X, fresh_before[name].X)
        assert list(fresh[name].obs.columns) == list(fresh_before[name].obs.columns)


# ---------------------------------------------------------------------------------------------- prediction
def test_predict_protein_from_rna(citeseq):
    model, mdata = citeseq
    rna = mdata["rna"].copy()
    pred = model.predict_modality(rna, target="protein")
    assert isinstance(pred, ad.AnnData) and pred.shape == (mdata.n_obs, mdata["adt"].n_vars)
    assert list(pred.var_names) == list(mdata["adt"].var_names)
    assert list(pred.obs_names) == list(rna.obs_names)
    assert np.isfinite(pred.X).all()
    truth = _clr(mdata["adt"].X)
    cors = np.array([np.corrcoef(pred.X[:, j], truth[:, j])[0, 1] for j in range(truth.shape[1])])
    assert np.nanmean(cors) > 0.25 and (cors > 0).mean() >= 0.75, cors
    # on the CLR scale: each protein's mean and spread match those of the true CLR
    np.testing.assert_allclose(pred.X.mean(0), truth.mean(0), atol=0.3 * truth.std(0).mean())
    assert (pred.X.std(0) < 1.5 * truth.std(0)).all()
    # a subset, in the order asked
    sub = model.predict_modality(rna, indices=[7, 2, 30])
    assert list(sub.obs_names) == ["cell7", "cell2", "cell30"]
    np.testing.assert_allclose(sub.X, pred.X[[7, 2, 30]], rtol=1e-5, atol=1e-5)


def test_predict_modality_decodings(citeseq):
    model, mdata = citeseq
    rna = mdata["rna"].copy()
    truth = _clr(mdata["adt"].X)
    near = model.predict_modality(rna, n_neighbors=5).X
    # neighbours: a weighted mean of training cells' values, so inside their range protein by protein
    assert (near >= truth.min(0) - 1e-4).all() and (near <= truth.max(0) + 1e-4).all()
    one = model.predict_modality(rna, n_neighbors=1).X
    assert all(any(np.allclose(row, t, atol=1e-4) for t in truth) for row in one[:10])  # a training cell's values
    head = model.predict_modality(rna, method="head").X
    assert head.shape == near.shape and not np.allclose(head, near)
    cors = [np.corrcoef(head[:, j], truth[:, j])[0, 1] for j in range(truth.shape[1])]
    assert np.nanmean(cors) > 0.25
    with pytest.raises(ValueError, match="method"):
        model.predict_modality(rna, method="linear")


def test_predict_modality_never_reads_the_target(citeseq):
    model, mdata = citeseq
    from_mudata = model.predict_modality(mdata)
    from_rna = model.predict_modality(mdata["rna"].copy())
    np.testing.assert_allclose(from_mudata.X, from_rna.X, rtol=1e-5, atol=1e-5)
    assert list(from_mudata.obs_names) == list(mdata.obs_names)
    rng = np.random.default_rng(3)
    other = mdata["adt"].copy()
    other.X = rng.poisson(50.0, other.shape).astype(np.float32)
    changed = md.MuData({"rna": mdata["rna"].copy(), "adt": other})
    np.testing.assert_allclose(model.predict_modality(changed).X, from_mudata.X, rtol=1e-5, atol=1e-5)
    # whereas the latent does read the protein
    assert not np.allclose(model.get_latent_representation(changed), model.get_latent_representation(mdata))


def test_predict_modality_errors(citeseq):
    model, mdata = citeseq
    with pytest.raises(ValueError, match="other than RNA"):
        model.predict_modality(target="rna")
    with pytest.raises(ValueError, match="'atac'"):
        model.predict_modality(target="atac")
    with pytest.raises(ValueError, match="features differ"):
        model.predict_modality(mdata["rna"][:, :-1].copy())
    plain = mdata["rna"].copy()
    bj.BioJEPA.setup_anndata(plain)
    single = bj.BioJEPA(plain, **SMALL)
    with pytest.warns(UserWarning), pytest.raises(ValueError, match="setup_mudata"):
        single.predict_modality(plain)


def test_save_load_identical(citeseq, tmp_path):
    model, mdata = citeseq
    rna = mdata["rna"].copy()
    z, pred = model.get_latent_representation(mdata), model.predict_modality(rna)
    z_rna = model.get_latent_representation(rna)
    model.save(tmp_path / "model", overwrite=True)
    loaded = bj.BioJEPA.load(tmp_path / "model", adata=mdata)
    np.testing.assert_allclose(loaded.get_latent_representation(mdata), z, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.get_latent_representation(rna), z_rna, rtol=1e-6, atol=1e-6)
    reloaded = loaded.predict_modality(rna)
    np.testing.assert_allclose(reloaded.X, pred.X, rtol=1e-6, atol=1e-6)
    assert list(reloaded.var_names) == list(pred.var_names)


# ---------------------------------------------------------------------------------------------- missing modality
def test_missing_protein_cells_are_masked(partial):
    model, mdata = partial
    missing = np.isnan(mdata["adt"].X).all(1)
    assert missing.sum() == 24
    for key in ("train_loss", f"{LOSS_KEYS.CROSS_MODAL}_train", f"{LOSS_KEYS.MODALITY}_train"):
        assert np.isfinite(model.history[key].to_numpy(dtype=float)).all(), key
    assert np.isfinite(model.module.gene_mean.cpu().numpy()).all()
    z = model.get_latent_representation(mdata)
    assert np.isfinite(z).all()
    z_rna = model.get_latent_representation(mdata["rna"].copy())
    np.testing.assert_allclose(z[missing], z_rna[missing], rtol=1e-5, atol=1e-5)
    assert not np.allclose(z[~missing], z_rna[~missing], atol=1e-3)  # measured protein is read
    # masked, not filled: zero protein counts give another latent
    zeros = mdata["adt"].copy()
    zeros.X = np.nan_to_num(zeros.X, nan=0.0)
    z_zero = model.get_latent_representation(md.MuData({"rna": mdata["rna"].copy(), "adt": zeros}))
    assert not np.allclose(z_zero[missing], z[missing], atol=1e-3)
    np.testing.assert_allclose(z_zero[~missing], z[~missing], rtol=1e-5, atol=1e-5)
    pred = model.predict_modality()
    assert pred.shape == (mdata.n_obs, mdata["adt"].n_vars) and np.isfinite(pred.X).all()


# ---------------------------------------------------------------------------------------------- RNA + ATAC
def test_rna_atac_predict_peaks():
    rng = np.random.default_rng(2)
    n, n_genes, n_peaks = 100, 30, 40
    programs = rng.normal(size=(n, 2))
    counts = rng.poisson(np.exp(1.0 + programs @ rng.normal(size=(2, n_genes)) * 0.7)).astype(np.float32)
    counts[:, 0] += 1
    peaks = rng.poisson(np.exp(-0.5 + programs @ rng.normal(size=(2, n_peaks)) * 0.7)).astype(np.float32)
    peaks[:, 0] += 1
    names = [f"cell{i}" for i in range(n)]
    log = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    rna = ad.AnnData(log, obs=pd.DataFrame(index=names), layers={"counts": counts})
    rna.var_names = [f"g{i}" for i in range(n_genes)]
    atac = ad.AnnData(peaks, obs=pd.DataFrame(index=names))
    atac.var_names = [f"chr1:{i * 1000}-{i * 1000 + 500}" for i in range(n_peaks)]
    mdata = md.MuData({"rna": rna, "atac": atac})
    model = _train(mdata, epochs=2, modalities={"rna_layer": "rna", "atac_layer": "atac"}, rna_layer="counts")
    assert model.input_scale == "counts"  # the counts layer, not the log-normalized X
    values = model.history[f"{LOSS_KEYS.MODALITY}_train"].to_numpy(dtype=float)
    assert np.isfinite(values).all() and (values > 0).all()
    query = mdata["rna"].copy()
    pred = model.predict_modality(query, target="atac")
    assert pred.shape == (n, n_peaks) and np.isfinite(pred.X).all()
    assert list(pred.var_names) == list(atac.var_names) and list(pred.obs_names) == names
    z = model.get_latent_representation(query, key_added="X_biojepa")
    assert query.obsm["X_biojepa"].shape == (n, N_LATENT) and np.isfinite(z).all()
    with pytest.raises(ValueError, match="'protein'"):
        model.predict_modality(query, target="protein")


# ---------------------------------------------------------------------------------------------- known bugs
def test_rna_only_query_with_batch_key_in_rna_modality():
    mdata = make_citeseq(n=40)
    bj.BioJEPA.setup_mudata(mdata, batch_key="site", modalities={**MODS, "batch_key": "rna"})
    model = bj.BioJEPA(mdata, **SMALL)
    query = mdata["rna"].copy()
    assert "site" in query.obs
    with pytest.warns(UserWarning):  # untrained
        z = model.get_latent_representation(query)
    assert z.shape == (40, N_LATENT)


def test_clr_normalized_protein_is_accepted():
    mdata = make_citeseq(n=40)
    mdata.mod["adt"].X = _clr(mdata["adt"].X).astype(np.float32)
    bj.BioJEPA.setup_mudata(mdata, modalities=MODS)
    model = bj.BioJEPA(mdata, **SMALL)
    assert [m.input_scale for m in model.module.modalities] == ["counts", "log"]


# ---------------------------------------------------------------------------------------------- generative head
@pytest.fixture(scope="module")
def flows():
    mdata = make_citeseq()
    model = _train(mdata, epochs=5)
    table = model.train_generative(max_epochs=40, n_ensemble=2, batch_size=32, seed=0)
    return model, mdata, table


def test_modality_flows_train_on_cells_with_the_target(flows):
    model, mdata, table = flows
    assert table[["kind", "source", "target", "n_source"]].values.tolist() == [["modality", "rna", "protein", 120]]
    assert model.generative_config_["target"] == "protein" and len(model.generative_config_["scale"]) == 8
    partial_model = _train(make_citeseq(seed=1, missing=0.2), epochs=1)
    table = partial_model.train_generative(max_epochs=1, n_ensemble=1)
    assert table["n_source"].item() == 96  # the 24 cells without protein are not learned from
    with pytest.raises(ValueError, match="'rna'"):
        partial_model.train_generative(max_epochs=1, target="rna")


def test_sample_modality_spreads_like_the_measured_profiles(flows):
    model, mdata, _ = flows
    rna = mdata["rna"].copy()
    cells = model.sample_modality(rna, n_samples=10, seed=1)
    assert cells.shape == (120 * 10, 8) and list(cells.var_names) == list(mdata["adt"].var_names)
    assert cells.obs["cell"].tolist()[:11] == ["cell0"] * 10 + ["cell1"]
    assert cells.obs["sample"].tolist()[:11] == [*range(10), 0]
    np.testing.assert_allclose(cells.obsm["X_biojepa"][::10], model.get_latent_representation(rna), atol=1e-5)
    truth = _clr(mdata["adt"].X)
    point = model.predict_modality(rna).X
    # point predictions shrink the cell-to-cell spread; the samples restore it
    ratio = np.asarray(cells.X).var(0) / truth.var(0)
    assert (point.var(0) / truth.var(0)).mean() < 0.8 and 0.7 < ratio.mean() < 1.4, ratio
    # each cell's samples centre no farther from its measured profile than the point prediction is
    centre = np.asarray(cells.X).reshape(120, 10, 8).mean(1)
    assert np.abs(centre - truth).mean() < np.abs(point - truth).mean(), (centre, point)
    again = model.sample_modality(rna, n_samples=10, seed=1)
    np.testing.assert_allclose(again.X, cells.X, atol=1e-6)
    assert not np.allclose(model.sample_modality(rna, n_samples=10, seed=2).X, cells.X)
    sub = model.sample_modality(mdata, n_samples=2, indices=[5, 3], seed=1)
    assert sub.obs["cell"].tolist() == ["cell5", "cell5", "cell3", "cell3"]


def test_predict_modality_intervals_from_samples(flows):
    model, mdata, _ = flows
    rna = mdata["rna"].copy()
    pred = model.predict_modality(rna, levels=(0.5, 0.9), n_samples=40)
    np.testing.assert_allclose(pred.X, model.predict_modality(rna).X, atol=1e-6)  # the point is unchanged
    lo50, hi50, lo90, hi90 = (pred.layers[k] for k in ("lower_50", "upper_50", "lower_90", "upper_90"))
    assert (lo90 <= lo50 + 1e-6).all() and (lo50 <= hi50).all() and (hi50 <= hi90 + 1e-6).all()
    assert (pred.obs["uncertainty"] > 0).all()
    truth = _clr(mdata["adt"].X)
    covered = ((truth >= lo90) & (truth <= hi90)).mean()
    assert 0.7 < covered <= 1.0, covered  # the training cells themselves: near the nominal 90 %
    with pytest.raises(ValueError, match="levels"):
        model.predict_modality(rna, levels=(1.5,))


def test_modality_flow_errors_and_save_load(flows, citeseq, tmp_path):
    model, mdata, _ = flows
    rna = mdata["rna"].copy()
    untrained = citeseq[0]
    with pytest.raises(ValueError, match="train_generative"):
        untrained.sample_modality(rna)
    with pytest.raises(ValueError, match="train_generative"):
        untrained.predict_modality(rna, levels=(0.5,))
    with pytest.raises(ValueError, match="'atac'"):
        model.sample_modality(rna, target="atac")
    with pytest.raises(ValueError, match="n_samples"):
        model.sample_modality(rna, n_samples=0)
    model.save(tmp_path / "flows", overwrite=True)
    loaded = bj.BioJEPA.load(tmp_path / "flows", adata=mdata)
    np.testing.assert_allclose(
        loaded.sample_modality(rna, n_samples=3).X, model.sample_modality(rna, n_samples=3).X, atol=1e-5
    )


def test_knn_average_excluding_the_cell_itself():
    from biojepa.model._multiomics import _knn_average

    z = torch.tensor([[0.0], [1.0], [5.0]])
    values = torch.tensor([[10.0], [20.0], [30.0]])
    assert _knn_average(z, z, values, 1).view(-1).tolist() == [10.0, 20.0, 30.0]  # each finds itself
    assert _knn_average(z, z, values, 1, exclude=np.arange(3)).view(-1).tolist() == [20.0, 10.0, 20.0]


def _switching_citeseq(n, seed):
    """RNA and protein of 3 shared programs; given the programs, proteins 0-3 switch on at random (bimodal)."""
    rng, fixed = np.random.default_rng(seed), np.random.default_rng(99)
    W, V = fixed.normal(size=(3, 36)), fixed.normal(size=(3, 8))
    programs = rng.normal(size=(n, 3))
    rna = rng.poisson(np.exp(1.0 + programs @ W * 0.7)).astype(np.float32)
    rna[:, 0] += 1
    on = rng.random(n) < 1 / (1 + np.exp(-2 * programs[:, 0]))
    prot = rng.poisson(np.exp(np.linspace(1.5, 5.0, 8) + programs @ V * 0.5 + on[:, None] * (np.arange(8) < 4) * 2.0))
    names = [f"c{seed}_{i}" for i in range(n)]
    rna = ad.AnnData(rna, obs=pd.DataFrame(index=names), var=pd.DataFrame(index=[f"g{i}" for i in range(36)]))
    adt = ad.AnnData(prot.astype(np.float32), obs=pd.DataFrame(index=names))
    adt.var_names = [f"p{i}" for i in range(8)]
    return md.MuData({"rna": rna, "adt": adt})


def test_modality_flows_learn_a_bimodal_conditional():
    mdata, test = _switching_citeseq(400, 0), _switching_citeseq(200, 1)
    model = _train(mdata, epochs=5)
    model.train_generative(max_epochs=60, n_ensemble=2, seed=0)
    assert min(model.generative_config_["stopped_at"]) > 0  # validation kept trained weights
    truth = _clr(test["adt"].X)
    samples = np.asarray(model.sample_modality(test["rna"], n_samples=30).X).reshape(200, 30, 8)
    point = np.asarray(model.predict_modality(test["rna"]).X)
    i = model.module.modality_index("protein")
    std = model.module.gene_std[model.module.modality_offsets[i] : model.module.modality_offsets[i + 1]].numpy()
    noise = np.random.default_rng(0).standard_normal(samples.shape) * np.asarray(model.generative_config_["scale"])
    gaussian = point[:, None] + noise * std  # what an untrained flow samples
    flow, base = bj.metrics.energy_score(samples, truth), bj.metrics.energy_score(gaussian, truth)
    assert flow < 0.95 * base, (flow, base)


def test_sampled_atac_stays_on_its_scale():
    """ATAC samples (log1p CP10k of sparse counts) never go below the lowest training value of their peak (0)."""
    rng = np.random.default_rng(0)
    rna = ad.AnnData(rng.poisson(2.0, (150, 30)).astype(np.float32))
    atac = ad.AnnData((rng.random((150, 40)) < 0.1).astype(np.float32) * rng.poisson(2.0, (150, 40)))
    atac.X[:, 0] += 1  # no empty cell
    mdata = md.MuData({"rna": rna, "atac": atac})
    model = _train(mdata, epochs=2, modalities={"rna_layer": "rna", "atac_layer": "atac"})
    model.train_generative(max_epochs=2, n_ensemble=1)
    cells = model.sample_modality(rna, n_samples=5)
    assert cells.shape == (750, 40) and float(np.asarray(cells.X).min()) >= 0.0
