"""New contexts, doses and the validated interaction of :meth:`biojepa.BioJEPA.predict_perturbation`."""

import numpy as np
import pandas as pd
import pytest
import scvi
import torch
from anndata import AnnData

import biojepa as bj
from biojepa.model._coexpression import CoexpressionPrior, prior_weights


def _train(adata, epochs=3, **setup):
    scvi.settings.seed = 0
    setup.setdefault("categorical_covariate_keys", ["line"])
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control", **setup)
    model = bj.BioJEPA(adata, n_latent=8)
    model.train(max_epochs=epochs, batch_size=64, enable_progress_bar=False)
    return model


def _dosed(screen_factory):
    """A model trained with doses: singles at dose 1, half of g0's cells at 3, the double g0+g1 at ``1+3``."""
    adata = screen_factory(counts=False)
    adata.obs["dose"] = np.where(adata.obs.condition == "control", "0", "1")
    adata.obs.loc[adata.obs.condition == "g0+g1", "dose"] = "1+3"
    adata.obs.loc[(adata.obs.condition == "g0").to_numpy() & (np.arange(adata.n_obs) % 2 == 0), "dose"] = "3"
    return _train(adata, dose_key="dose"), adata


def test_new_cell_line_from_its_control_cells(screen_factory):
    full = screen_factory(counts=False)
    l1 = full[(full.obs.line == "L1").to_numpy()].copy()
    model = _train(l1)
    new = full[((full.obs.line == "L2") & (full.obs.condition == "control")).to_numpy()].copy()
    new.obs["line"] = new.obs["line"].astype(str).replace("L2", "L_new")
    before = new.copy()
    pred = model.predict_perturbation(["g0", "g0+g1"], adata=new)
    assert pred.obs["line"].tolist() == ["L_new", "L_new"]
    assert pred.obs["source"].tolist() == ["predicted", "predicted"]  # nothing observed in the new line
    np.testing.assert_allclose(pred.X[0] - pred.layers["delta"][0], np.asarray(new.X.mean(0)).ravel(), atol=1e-4)
    assert np.isfinite(pred.X).all() and np.abs(pred.layers["delta"]).sum() > 0
    z = model.get_latent_representation(new)  # an unseen category embeds without a registry error
    assert z.shape == (new.n_obs, 8) and np.isfinite(z).all()
    pd.testing.assert_frame_equal(new.obs, before.obs)


def test_group_with_controls_only_in_training(screen_factory):
    adata = screen_factory(counts=False)
    keep = ((adata.obs.line == "L1") | (adata.obs.condition == "control")).to_numpy()
    model = _train(adata[keep].copy())  # L2 has control cells but no perturbed cell
    pred = model.predict_perturbation(["g0", "g2"], covariates={"line": "L2"})
    assert pred.shape[0] == 2 and np.isfinite(pred.X).all()
    assert model.get_perturbation_embedding(covariates={"line": "L2"}).shape == (4, 8)  # the reference's labels


def test_context_without_control_cells_is_an_error(screen_factory):
    adata = screen_factory(counts=False)
    model = _train(adata, epochs=1)
    no_ctrl = adata[(adata.obs.condition == "g0").to_numpy()].copy()
    with pytest.raises(ValueError, match="no control cells"):
        model.predict_perturbation("g1", adata=no_ctrl)


def test_dose_changes_predictions_and_follows_its_gene(screen_factory):
    model, adata = _dosed(screen_factory)
    cov = {"line": "L1"}
    low, high = (model.predict_perturbation("g0", covariates=cov, dose=d) for d in (1, 3))
    assert not np.allclose(low.layers["delta"], high.layers["delta"], atol=1e-6)
    unseen = model.predict_perturbation("g0", covariates=cov, dose=10)  # a dose never seen in training
    assert np.isfinite(unseen.X).all()
    written = model.predict_perturbation("g1+g0", covariates=cov, dose="3+1")
    swapped = model.predict_perturbation("g0+g1", covariates=cov, dose="1+3")
    np.testing.assert_allclose(written.X, swapped.X, atol=1e-6)  # the dose follows its gene, not its position
    other = model.predict_perturbation("g0+g1", covariates=cov, dose="3+1")
    assert not np.allclose(other.X, swapped.X, atol=1e-6)
    with pytest.raises(ValueError, match="'1\\+2\\+3'"):
        model.predict_perturbation("g0+g1", covariates=cov, dose="1+2+3")


def test_dose_without_dose_key_is_an_error(screen_factory):
    model = _train(screen_factory(counts=False), epochs=1)
    with pytest.raises(ValueError, match="dose_key"):
        model.predict_perturbation("g0", dose=2)


def _as_screen(blocks: list[np.ndarray], obs: pd.DataFrame) -> AnnData:
    """Stacked per-condition blocks of log1p counts as an AnnData with cells ``c0..`` and genes ``g0..``."""
    adata = AnnData(np.vstack(blocks).astype(np.float32), obs=obs)
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
    return adata


def _combination_screen(n_genes=40, n_cells=12, seed=0) -> AnnData:
    """Control, 8 singles and 10 doubles of them; doubles act super-additively on a block of genes."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(2.0, 1.0, n_genes)
    singles = [f"g{i}" for i in range(8)]
    pairs = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 7), (0, 7), (1, 5), (2, 6)]
    doubles = [f"g{i}+g{j}" for i, j in pairs]
    X, obs = [], []
    for cond in ["control", *singles, *doubles]:
        mu = base.copy()
        genes = [] if cond == "control" else [int(g[1:]) for g in cond.split("+")]
        for g in genes:
            mu[8 + 3 * g : 11 + 3 * g] *= 3.0
        if len(genes) == 2:
            mu[32:40] *= 4.0
        X.append(np.log1p(rng.poisson(mu, (n_cells if cond != "control" else 4 * n_cells, n_genes))))
        obs += [cond] * len(X[-1])
    return _as_screen(X, pd.DataFrame({"condition": obs}))


def test_interaction_strength_is_chosen_on_held_out_training_combinations():
    adata = _combination_screen()
    model = _train(adata, epochs=8, categorical_covariate_keys=None)
    setup = model.perturbation_setup_
    assert len(setup.holdout) == 2
    held = model.module.condition_holdout.cpu().numpy()
    assert [setup.labels[i] for i in np.flatnonzero(held)] == [
        label for label in setup.labels if label in setup.holdout
    ]
    scale = model.module.interaction_scale.item()
    assert 0.0 <= scale <= 2.0
    pred = model.predict_perturbation(list(setup.holdout))
    assert pred.uns["interaction_scale"] == pytest.approx(scale)
    assert (pred.obs["source"] == "predicted").all()


def test_novelty_scale_is_chosen_on_held_out_singles_and_shrinks_untrained_tokens():
    rng = np.random.default_rng(0)
    n_genes, genes = 40, [f"g{i}" for i in range(40)]
    labels = ["control"] + [f"g{i}" for i in range(10)]  # 10 singles of genes in no other label
    rows, obs = [], []
    base = rng.gamma(2.0, 1.0, n_genes)
    for label in labels:
        mu = base.copy()
        if label != "control":
            mu[int(label[1:]) + 20] *= 4.0  # own effect
            mu[35:40] *= 2.0  # an effect every perturbation shares
        rows.append(rng.poisson(mu, (30, n_genes)))
        obs += [label] * 30
    adata = AnnData(np.vstack(rows).astype(np.float32), obs=pd.DataFrame({"condition": obs}))
    adata.obs_names = [f"c{i}" for i in range(adata.n_obs)]
    adata.var_names = genes
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
    model = bj.BioJEPA(adata, n_latent=8)
    held = [h for h in model.perturbation_setup_.holdout if "+" not in h]
    assert len(held) == 2  # 20 % of the 10 eligible singles
    assert not model.perturbation_setup_.trained_vocabulary()[model.perturbation_setup_.index(held)].any()
    model.train(max_epochs=3, batch_size=64, enable_progress_bar=False)
    alpha = float(model.module.novelty_scale)
    assert 0.0 <= alpha <= 1.0
    model.module.novelty_scale.fill_(0.0)  # no trust in untrained tokens: every one predicts the trained mean
    a, b = (model.predict_perturbation(g, anchor=False) for g in ("g30", "g31"))  # measured, never perturbed
    np.testing.assert_allclose(a.X, b.X, atol=1e-5)
    model.module.novelty_scale.fill_(1.0)
    a, b = (model.predict_perturbation(g, anchor=False) for g in ("g30", "g31"))
    assert not np.allclose(a.X, b.X, atol=1e-5)


def _lines_screen(lines, singles_of, types=None, n_genes=50, n_cells=20, seed=0) -> AnnData:
    """Log1p counts: each single raises its own block (genes 8+3i..); every perturbation of line k raises block k."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(4.0, 1.0, n_genes)
    X, obs = [], []
    for k, line in enumerate(lines):
        for label in ["control", *singles_of[line]]:
            mu = base.copy()
            if label != "control":
                i = int(label[1:])
                mu[8 + 3 * i : 11 + 3 * i] *= 3.0
                mu[35 + 5 * k : 40 + 5 * k] *= 3.0  # the response every perturbation of this line shares
            n = 3 * n_cells if label == "control" else n_cells
            X.append(np.log1p(rng.poisson(mu, (n, n_genes))))
            obs += [(label, line, (types or {}).get(line, "KO"))] * n
    return _as_screen(X, pd.DataFrame(obs, columns=["condition", "line", "ptype"]))


def test_token_trained_under_another_type_counts_as_untrained():
    singles = {"L1": [f"g{i}" for i in range(6)], "L2": [f"g{i}" for i in range(6, 12)]}
    adata = _lines_screen(["L1", "L2"], singles, types={"L1": "CRISPRi", "L2": "CRISPRa"})
    model = _train(adata, perturbation_type_key="ptype")
    setup = model.perturbation_setup_
    crispra = model._type_code(None, "CRISPRa")
    trained, typed_singles = model._trained_with(crispra)
    assert not trained[setup.index(["g0"])].any() and trained[setup.index(["g6"])].all()
    assert set(typed_singles) <= set(setup.index([f"g{i}" for i in range(6, 12)]))
    assert model._trained_with(None)[0][setup.index(["g0", "g6"])].all()  # without a type: every trained token
    # with no trust in untrained tokens, two genes knocked down only in L1 predict the same activation in L2
    model.module.novelty_scale.fill_(0.0)
    a, b = (model.predict_perturbation(g, covariates={"line": "L2"}) for g in ("g0", "g1"))
    np.testing.assert_allclose(a.X, b.X, atol=1e-5)
    model.module.novelty_scale.fill_(1.0)
    a, b = (model.predict_perturbation(g, covariates={"line": "L2"}) for g in ("g0", "g1"))
    assert not np.allclose(a.X, b.X, atol=1e-5)


def test_gene_seen_in_other_lines_takes_this_lines_shared_response():
    lines = ["L1", "L2", "L3"]
    singles = {line: [f"g{i}" for i in range(6)] for line in lines}
    singles["L3"] = singles["L3"][:-1]  # g5 is held out in L3, seen in L1 and L2
    truth = _lines_screen(lines, {line: [f"g{i}" for i in range(6)] for line in lines})
    model = _train(_lines_screen(lines, singles))
    pred = model.predict_perturbation("g5", covariates={"line": "L3"})
    delta = pred.layers["delta"][0]
    blocks = {line: delta[35 + 5 * k : 40 + 5 * k].mean() for k, line in enumerate(lines)}
    assert blocks["L3"] > 0.5  # L3's shared response, measured on L3's other knockouts
    assert abs(blocks["L1"]) < 0.25 and abs(blocks["L2"]) < 0.25  # the other lines' shared responses are not borrowed
    assert delta[23:26].mean() > 0.5  # g5's own block, borrowed from L1 and L2
    observed = bj.metrics.evaluate(pred, truth, "condition", "control", ["line"])
    assert observed["pearson_delta"].iloc[0] > 0.9


def test_line_given_at_prediction_starts_from_what_the_trained_lines_observed():
    lines = ["L1", "L2", "L3"]
    full = _lines_screen(lines, {line: [f"g{i}" for i in range(6)] for line in lines})
    in_l3 = (full.obs["line"] == "L3").to_numpy()
    model = _train(full[~in_l3].copy())
    controls = full[in_l3 & (full.obs["condition"] == "control").to_numpy()].copy()
    pred = model.predict_perturbation(["g4", "g5"], adata=controls)
    delta = np.asarray(pred.layers["delta"])
    for row, gene in enumerate((4, 5)):  # each gene's own block, observed in L1 and L2, carries over to L3
        assert delta[row, 8 + 3 * gene : 11 + 3 * gene].mean() > 0.5
    # what L1's and L2's knockouts share is their own (blocks 35-44): predicting each from the other says so
    assert np.abs(delta[:, 35:45]).mean() < 0.25
    model.train_generative(max_epochs=2, n_ensemble=1)
    model.generative_config_["spread"] = 0.0  # every cell gets the point prediction's change
    cells = model.sample_perturbation("g5", n_cells=30, adata=controls, seed=0)  # sampled cells start there too
    moved = np.asarray(cells.X) - np.asarray(controls[cells.obs["source_cell"].astype(str).to_numpy()].X)
    np.testing.assert_allclose(moved[:, 23:26].mean(0), delta[1, 23:26], atol=1e-4)


def test_untrained_token_at_zero_novelty_predicts_the_trained_singles_mean_change():
    adata = _lines_screen(["L1"], {"L1": [f"g{i}" for i in range(8)]})
    scvi.settings.seed = 0
    bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
    model = bj.BioJEPA(adata, n_latent=8)
    model.train(max_epochs=3, batch_size=64, enable_progress_bar=False)
    model.module.novelty_scale.fill_(0.0)  # the token's own deviation from the mean effect is not trusted
    held = set(model.perturbation_setup_.holdout)
    trained = model.predict_perturbation([f"g{i}" for i in range(8) if f"g{i}" not in held])
    assert set(trained.obs["source"]) == {"observed"}  # each returns its observed change
    novel = model.predict_perturbation("g45")  # measured, never perturbed
    assert novel.obs["source"].tolist() == ["predicted"]
    # the decoder's nonlinearity leaves no gap: the mean observed change of the trained singles, exactly, plus the
    # expression prior read from those same changes (its weights chosen leaving each single out)
    changes = np.asarray(trained.layers["delta"], dtype=np.float64)
    columns = np.array([int(g[1:]) for g in trained.obs["condition"]])
    cells = [np.asarray(adata[adata.obs["condition"] == g].X, dtype=np.float64) for g in trained.obs["condition"]]
    variances = np.stack([c.var(0, ddof=1) / len(c) for c in cells])  # sampling variance of each single's mean
    prior = CoexpressionPrior(changes, columns, variances, *prior_weights(changes, columns, variances))
    np.testing.assert_allclose(novel.layers["delta"][0], changes.mean(0) + prior(45), atol=1e-4)
    assert np.abs(trained.layers["delta"].mean(0)[35:40]).min() > 0.3  # the shared response, not an empty check


def _coexpression_screen(n_genes=40, n_cells=30, seed=0) -> AnnData:
    """Log1p counts of 12 knockouts in two modules, each lowering its own gene, its module and the module's targets.

    Module A: g0-g5 and g20 (never perturbed), targets g30-g31; module B: g6-g11, targets g32-g33.
    """
    rng = np.random.default_rng(seed)
    base = rng.gamma(6.0, 1.0, n_genes) + 4.0
    modules = {"A": ([0, 1, 2, 3, 4, 5, 20], [30, 31]), "B": ([6, 7, 8, 9, 10, 11], [32, 33])}
    X, obs = [], []
    for label in ["control", *[f"g{i}" for i in range(12)]]:
        mu = base.copy()
        if label != "control":
            i = int(label[1:])
            members, targets = modules["A" if i < 6 else "B"]
            mu[members] *= 0.6
            mu[targets] *= 0.4
            mu[i] = base[i] * 0.2
        n = 3 * n_cells if label == "control" else n_cells
        X.append(np.log1p(rng.poisson(mu, (n, n_genes))))
        obs += [label] * n
    return _as_screen(X, pd.DataFrame({"condition": obs}))


def test_never_perturbed_gene_lowers_itself_and_what_moves_with_it():
    model = _train(_coexpression_screen(), categorical_covariate_keys=None)
    model.module.novelty_scale.fill_(0.0)  # the prediction is the mean change plus the expression prior alone
    pred = model.predict_perturbation(["g20", "g35"])  # measured, never perturbed; g20 moves with module A
    delta = np.asarray(pred.layers["delta"])
    held = model.perturbation_setup_.holdout
    trained = model.predict_perturbation([f"g{i}" for i in range(12) if f"g{i}" not in held])
    mean = np.asarray(trained.layers["delta"]).mean(0)
    assert delta[0, 20] < mean[20] - 0.3 and delta[1, 35] < mean[35] - 0.3  # each lowers its own gene
    assert delta[0, 30:32].max() < mean[30:32].min() - 0.15  # module A's targets fall with g20: read as downstream
    # module B's targets, which fall only when g20 does not, stay nearer their control level than the mean change
    assert (np.abs(delta[0, 32:34]) < np.abs(mean[32:34]) - 0.1).all()
    assert np.abs(delta[1, 30:34] - mean[30:34]).max() < 0.1  # nothing moves with g35


def test_cross_line_transfer_is_chosen_on_singles_held_out_in_one_line(tmp_path):
    lines = ["L1", "L2", "L3"]
    singles = {line: [f"g{i}" for i in range(6)] for line in lines}
    singles["L3"] = singles["L3"][:-1]  # g5 is asked for in L3, seen in L1 and L2
    adata = _lines_screen(lines, singles)
    model = _train(adata)
    setup, module = model.perturbation_setup_, model.module
    line_of = {model._group_code((line,)): line for line in lines}
    held = [divmod(key, module.n_groups) for key in module.pair_holdout.tolist()]
    held = [(setup.labels[label], line_of[group]) for label, group in held]
    assert len(held) >= 2 and len({label for label, _ in held}) == len(held)  # at most one line per single
    assert all(label in singles[line] for label, line in held)  # each observed there, and in another line
    kappa, beta = model._context_transfer()
    assert 0.0 <= kappa <= 1.0 and beta > 0.5  # here a gene's own block carries over to every line
    # no own part trusted: the line's mean observed change over its singles, the TrainMean baseline's prediction
    module.context_transfer.copy_(torch.tensor([0.0, 0.0]))
    pred = model.predict_perturbation("g5", covariates={"line": "L3"})
    mean = bj.baselines.TrainMean().fit(adata, "condition", "control", ["line"])
    np.testing.assert_allclose(pred.X, mean.predict_perturbation("g5", covariates={"line": "L3"}).X, atol=1e-4)
    assert abs(pred.layers["delta"][0, 23:26].mean()) < 0.25
    module.context_transfer.copy_(torch.tensor([0.0, 1.0]))  # the own part observed in L1 and L2, whole
    assert model.predict_perturbation("g5", covariates={"line": "L3"}).layers["delta"][0, 23:26].mean() > 0.5
    # saved and loaded, with data whose candidate pairs differ (one line fewer): the held-out pairs come back
    model.save(tmp_path / "m", overwrite=True)
    loaded = bj.BioJEPA.load(tmp_path / "m", adata=adata[(adata.obs["line"] != "L3").to_numpy()].copy())
    assert len(loaded._held_out_pairs(loaded.perturbation_setup_)) != len(held)  # so the saved ones are restored
    assert torch.equal(loaded.module.pair_holdout, module.pair_holdout)
    assert torch.equal(loaded.module.context_transfer, module.context_transfer)


def test_cells_sampled_in_a_line_that_never_saw_the_gene_are_centred_on_its_prediction():
    lines = ["L1", "L2", "L3"]
    singles = {line: [f"g{i}" for i in range(6)] for line in lines}
    singles["L3"] = singles["L3"][:-1]  # g5 is asked for in L3, seen in L1 and L2
    adata = _lines_screen(lines, singles)
    model = _train(adata)
    model.module.context_transfer.copy_(torch.tensor([0.0, 1.0]))  # g5's own block carries over from L1 and L2
    model.train_generative(max_epochs=2, n_ensemble=1)
    model.generative_config_["spread"] = 0.0  # every cell gets the point prediction's change
    pred = model.predict_perturbation("g5", covariates={"line": "L3"}).layers["delta"][0]
    assert pred[23:26].mean() > 0.5  # the transferred own block
    cells = model.sample_perturbation("g5", n_cells=50, covariates={"line": "L3"}, seed=0)
    source = np.asarray(adata[cells.obs["source_cell"].astype(str).to_numpy()].X)
    moved = np.asarray(cells.X) - source
    raised = pred > 0.3  # genes moved up: no generated cell is floored at zero there
    assert raised[23:26].all()
    np.testing.assert_allclose(moved[:, raised], np.broadcast_to(pred[raised], moved[:, raised].shape), atol=1e-4)


def test_transfer_shares_are_kept_only_where_they_predict_left_out_pairs():
    from scipy.optimize import lsq_linear

    from biojepa.model._context_transfer import _validated_shares

    rng = np.random.default_rng(0)
    terms = [rng.normal(size=(200, 2)) for _ in range(4)]
    signal = [t @ np.array([0.3, 0.8]) + 0.1 * rng.normal(size=200) for t in terms]
    np.testing.assert_allclose(_validated_shares(signal, terms), [0.3, 0.8], atol=0.05)
    # one pair follows its first term, the others do not: the fit on all pairs finds a share that no left-out pair
    # confirms, so none is kept
    single = [terms[0][:, 0]] + [rng.normal(size=200) for _ in terms[1:]]
    assert lsq_linear(np.concatenate(terms), np.concatenate(single), bounds=(0, 1)).x[0] > 0.15
    np.testing.assert_array_equal(_validated_shares(single, terms), [0.0, 0.0])


def test_group_code_of_covariate_values_is_the_modules(screen_factory):
    adata = screen_factory(counts=False)
    adata.obs["donor"] = np.array(["d0", "d1", "d2"])[np.arange(adata.n_obs) % 3]
    bj.BioJEPA.setup_anndata(
        adata, perturbation_key="condition", control_value="control", batch_key="donor",
        categorical_covariate_keys=["line"],
    )  # fmt: skip
    model = bj.BioJEPA(adata, n_latent=8)
    _, _, groups = model._reference(None, None)
    codes = []
    for group in groups:  # (donor, line): a batch and a categorical covariate, the module's mixed radix
        tensors = model._group_tensors(adata, group)
        codes.append(int(model.module.group_index(tensors["batch_index"], tensors["cat_covs"])[0]))
        assert model._group_code(group.values) == codes[-1]
    assert len(set(codes)) == len(groups) == 6
    assert model._group_code(("d9", "L1")) is None  # a category never seen in training has no code
