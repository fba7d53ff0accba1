"""Perturbation prediction, perturbation embeddings and mechanism retrieval of :class:`~biojepa.BioJEPA`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from .._constants import EXTRA_KEYS, INPUT_SCALES
from .._perturbations import canonical_label, condition_frame, parse_perturbation
from ..data import check_expression, get_matrix, normalize_expression, parse_dose

logger = logging.getLogger(__name__)

Genes = tuple[str, ...]


TEMPERATURES = (0.05, 0.1, 0.2, 0.5, 1.0, np.inf)

#: Prior strength of the interaction's shrinkage: with n combinations whose every member was also observed alone
#: in the group, the learned interaction is scaled by n / (n + INTERACTION_PRIOR).
INTERACTION_PRIOR = 10.0


def _interaction_shrinkage(group) -> float:
    """Shrinkage factor ``n / (n + INTERACTION_PRIOR)`` of a group's learned interaction.

    ``n`` counts the group's observed combinations whose every gene was also observed alone.

    Only such combinations separate an interaction from the members' own effects; without them the learned
    interaction is not identified by the data and the prediction stays additive.
    """
    n = sum(all(g in group.singles for g in genes) for genes in group.combinations)
    return n / (n + INTERACTION_PRIOR)


def _kernel_weights(query: np.ndarray, shifts: np.ndarray, temperature: float) -> np.ndarray:
    r"""Weights :math:`w_j \propto \exp(\cos(q, s_j) / \tau)` over shifts (uniform if :math:`\tau = \infty`)."""
    if not np.isfinite(temperature):
        return np.full(len(shifts), 1.0 / len(shifts))
    norms = np.linalg.norm(shifts, axis=1) * max(np.linalg.norm(query), 1e-12)
    logits = shifts @ query / np.maximum(norms, 1e-12) / temperature
    w = np.exp(logits - logits.max())
    return w / w.sum()


def _loo_temperature(shifts: np.ndarray, deltas: np.ndarray) -> float:
    """Temperature minimizing the leave-one-out error of predicting each single's change from the others'.

    With fewer than 3 singles, or when similarity in latent space does not help, this is ``inf``: every gene not
    observed alone gets the mean change of the observed singles (the train-mean baseline).
    """
    n = len(shifts)
    if n < 3:
        return np.inf
    errors = []
    for tau in TEMPERATURES:
        err = 0.0
        for j in range(n):
            others = np.delete(np.arange(n), j)
            w = _kernel_weights(shifts[j], shifts[others], tau)
            err += float(np.sum((w @ deltas[others] - deltas[j]) ** 2))
        errors.append(err)
    return TEMPERATURES[int(np.argmin(errors))]


def _index(n: int) -> list[str]:
    return [str(i) for i in range(n)]


class _Group:
    """Cells of one covariate group in the reference AnnData, with everything predictions need."""

    def __init__(self, values: tuple, control: np.ndarray):
        self.values, self.control = values, control
        self.singles: dict[str, np.ndarray] = {}  # gene -> row indices of cells perturbed in that gene alone
        self.combinations: list[Genes] = []  # observed combinations of two or more genes
        self.types: list[str] = []


class PerturbationMixin:
    """Methods of :class:`~biojepa.BioJEPA` that need a registered ``perturbation_key``."""

    # ------------------------------------------------------------------ setup bookkeeping
    def _perturbation_args(self) -> dict:
        args = self.adata_manager.registry["setup_args"]
        if args.get("perturbation_key") is None:
            raise ValueError(
                "This model was set up without perturbations; call `BioJEPA.setup_anndata(adata, "
                "perturbation_key=..., control_value=...)` before creating the model."
            )
        return args

    def _covariate_keys(self) -> list[str]:
        args = self.adata_manager.registry["setup_args"]
        keys = [args["batch_key"]] if args.get("batch_key") else []
        return keys + list(args.get("categorical_covariate_keys") or [])

    @torch.inference_mode()
    def _target_latent(self, adata: AnnData, indices: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Latents of the EMA target encoder (the space perturbation targets live in)."""
        loader = self._make_data_loader(adata=adata, indices=indices, batch_size=batch_size)
        self.module.eval()
        out = []
        for tensors in loader:
            x = self.module.normalize(
                tensors[REGISTRY_KEYS.X_KEY].to(self.device),
                tensors.get(REGISTRY_KEYS.SIZE_FACTOR_KEY, None),
            )
            out.append(self.module.target_encoder(x)[1].cpu())
        return torch.cat(out).numpy() if out else np.zeros((0, self.module.n_latent), np.float32)

    def _log_expression(self, adata: AnnData, rows: np.ndarray) -> np.ndarray:
        """Dense log1p-normalized expression of ``rows`` (the model's scale before standardization)."""
        X = get_matrix(adata, self.adata_manager.registry["setup_args"]["layer"])[rows]
        size_factor = None
        if REGISTRY_KEYS.SIZE_FACTOR_KEY in self.adata_manager.data_registry:
            size_factor = self.get_from_registry(adata, REGISTRY_KEYS.SIZE_FACTOR_KEY)[rows]
        return normalize_expression(X, self.input_scale, size_factor)

    def _encodable(self, adata: AnnData, rows: np.ndarray | None = None) -> AnnData:
        """A new AnnData with what encoding needs (expression, covariates) of ``adata[rows]``, registered.

        Perturbation labels are set to the control value (and dose/type to a training category): encoding does not
        read them, and this way labels never seen in training (e.g. held-out or unlabeled query cells) and the
        user's AnnData itself are left alone.
        """
        args = self.adata_manager.registry["setup_args"]
        self._check_genes(adata)
        layer = args["layer"]
        check_expression(adata, layer)
        rows = np.arange(adata.n_obs) if rows is None else np.asarray(rows)
        keys = [args.get(k) for k in ("batch_key", "size_factor_key")]
        keys += list(args.get("categorical_covariate_keys") or []) + list(args.get("continuous_covariate_keys") or [])
        keys = [k for k in keys if k]
        missing = [k for k in keys if k not in adata.obs]
        if missing:
            raise KeyError(f"adata.obs lacks the columns {missing} the model was set up with.")
        obs = adata.obs.iloc[rows][keys].copy()
        fill = {"perturbation_key": args["control_value"]}
        for key, registry_key in (
            ("dose_key", EXTRA_KEYS.DOSE),
            ("perturbation_type_key", EXTRA_KEYS.PERTURBATION_TYPE),
        ):
            if args.get(key):
                fill[key] = self.adata_manager.get_state_registry(registry_key).categorical_mapping[0]
        for key, value in fill.items():
            obs[args[key]] = value
        X = get_matrix(adata, layer)[rows]
        view = AnnData(X=X if layer is None else None, obs=obs, layers=None if layer is None else {layer: X})
        view.var_names = adata.var_names.copy()
        scvi_logger = logging.getLogger("scvi")
        level = scvi_logger.level
        scvi_logger.setLevel(logging.WARNING)  # the "transferring setup" note is about this internal copy
        try:
            return self._validate_anndata(view)
        finally:
            scvi_logger.setLevel(level)

    def _reference(self, adata: AnnData, covariates: Mapping | None) -> tuple[AnnData, list[_Group], pd.DataFrame]:
        """Encodable reference cells and the covariate groups (with control cells) matching ``covariates``."""
        args = self._perturbation_args()
        pkey = args["perturbation_key"]
        if adata is None:
            adata = self.adata
        if pkey not in adata.obs:
            raise KeyError(f"adata.obs lacks the perturbation column {pkey!r} the model was set up with.")
        cov_keys = self._covariate_keys()
        control = str(args["control_value"])
        frame = condition_frame(adata.obs, pkey, control, cov_keys, args["combination_delimiter"])
        labels = frame.pop("_perturbation").to_numpy()
        type_key = args.get("perturbation_type_key")
        types = adata.obs[type_key].astype(str).to_numpy() if type_key and type_key in adata.obs else None
        if adata is not self.adata:
            adata = self._encodable(adata)
        if cov_keys:
            codes, uniques = pd.factorize(pd.MultiIndex.from_frame(frame[cov_keys]))
            uniques = [tuple(u) for u in uniques]
        else:
            codes, uniques = np.zeros(len(labels), dtype=np.int64), [()]
        groups: dict[tuple, _Group] = {}
        for code, values in enumerate(uniques):
            rows = np.flatnonzero(codes == code)
            is_ctrl = labels[rows] == control
            if not is_ctrl.any():
                continue
            group = _Group(values, rows[is_ctrl])
            for label in np.unique(labels[rows[~is_ctrl]]):
                genes = parse_perturbation(label, control, args["combination_delimiter"])
                if len(genes) == 1:
                    group.singles[genes[0]] = rows[labels[rows] == label]
                elif len(genes) > 1:
                    group.combinations.append(genes)
            if types is not None:
                group.types = list(pd.Series(types[rows[~is_ctrl]]).value_counts().index)
            groups[values] = group
        selected = self._select(list(groups), cov_keys, covariates)
        return adata, [groups[v] for v in selected], pd.DataFrame(sorted(groups), columns=cov_keys)

    @staticmethod
    def _select(groups: list[tuple], cov_keys: list[str], covariates: Mapping | None) -> list[tuple]:
        if not groups:
            raise ValueError("The AnnData has no control cells; predictions start from the control population.")
        if covariates is None:
            return sorted(groups)
        if not isinstance(covariates, Mapping):
            raise TypeError(f"`covariates` must be a mapping like {{'cell_type': 'k562'}}, got {type(covariates)}.")
        wanted = {}
        for key, values in covariates.items():
            if key not in cov_keys:
                raise KeyError(f"Covariate {key!r} is not one the model was set up with ({cov_keys}).")
            values = [values] if isinstance(values, str) or np.isscalar(values) else list(values)
            known = sorted({g[cov_keys.index(key)] for g in groups})
            for value in map(str, values):
                if value not in known:
                    raise KeyError(
                        f"No control cells with {key}={value!r} in the AnnData; values with controls: {known}."
                    )
            wanted[cov_keys.index(key)] = set(map(str, values))
        return sorted(g for g in groups if all(g[i] in v for i, v in wanted.items()))

    # ------------------------------------------------------------------ latent shifts
    def _group_tensors(self, adata: AnnData, rows: np.ndarray) -> dict:
        """Registered covariate codes of a group (taken from its first control cell) and mean continuous covariates."""
        registry = self.adata_manager.data_registry
        out = {"batch_index": torch.as_tensor(self.get_from_registry(adata, REGISTRY_KEYS.BATCH_KEY)[rows[:1]])}
        out["cat_covs"] = None
        if REGISTRY_KEYS.CAT_COVS_KEY in registry:
            out["cat_covs"] = torch.as_tensor(
                np.asarray(self.get_from_registry(adata, REGISTRY_KEYS.CAT_COVS_KEY))[rows[:1]]
            )
        out["cont_covs"] = None
        if REGISTRY_KEYS.CONT_COVS_KEY in registry:
            cont = np.asarray(self.get_from_registry(adata, REGISTRY_KEYS.CONT_COVS_KEY), dtype=np.float32)
            out["cont_covs"] = torch.as_tensor(cont[rows].mean(0, keepdims=True))
        return {k: (v.to(self.device) if v is not None else None) for k, v in out.items()}

    def _type_code(self, group: _Group, perturbation_type: str | None) -> torch.Tensor | None:
        args = self.adata_manager.registry["setup_args"]
        if not args.get("perturbation_type_key"):
            return None
        mapping = list(
            map(str, self.adata_manager.get_state_registry(EXTRA_KEYS.PERTURBATION_TYPE).categorical_mapping)
        )
        if perturbation_type is None:
            if len(group.types) != 1:
                raise ValueError(
                    f"Covariate group {group.values} has perturbation types {group.types or 'none'}; pass "
                    f"`perturbation_type=` (one of {mapping})."
                )
            perturbation_type = group.types[0]
        if str(perturbation_type) not in mapping:
            raise ValueError(f"Unknown perturbation_type {perturbation_type!r}; known types: {mapping}.")
        return torch.tensor([mapping.index(str(perturbation_type))], device=self.device)

    def _dose_tensor(self, genes: Genes, dose) -> torch.Tensor | None:
        if self.module.condition_dose is None:
            return None
        args = self.adata_manager.registry["setup_args"]
        values = parse_dose(1.0 if dose is None else dose, len(genes), args["combination_delimiter"], "dose")
        return torch.tensor([values[: len(genes)]], dtype=torch.float32, device=self.device)

    def _profile(self, adata: AnnData, group: _Group, n_control_cells: int, seed: int) -> dict:
        """Control latents/expression of a group and the observed latent and log-expression shift of its singles.

        ``temperature`` is the kernel temperature of :func:`_kernel_weights` chosen by leave-one-out over the
        group's singles.
        """
        ctrl = group.control
        if ctrl.size > n_control_cells:
            ctrl = np.sort(np.random.default_rng(seed).choice(ctrl, n_control_cells, replace=False))
        z_ctrl = self._target_latent(adata, ctrl)
        z0 = z_ctrl.mean(0)
        log_ctrl = self._log_expression(adata, group.control)
        ctrl_mean = log_ctrl.mean(0)
        singles = {
            gene: (self._target_latent(adata, rows).mean(0) - z0, self._log_expression(adata, rows).mean(0) - ctrl_mean)
            for gene, rows in group.singles.items()
        }
        shifts = np.array([v[0] for v in singles.values()]).reshape(len(singles), -1)
        deltas = np.array([v[1] for v in singles.values()]).reshape(len(singles), -1)
        return {
            "z_ctrl": z_ctrl,
            "z0": z0,
            "log_ctrl": log_ctrl,
            "singles": singles,
            "shifts": shifts,
            "deltas": deltas,
            "temperature": _loo_temperature(shifts, deltas),
        }

    @torch.inference_mode()
    def _latent_shifts(self, adata, groups, parsed, perturbation_type, dose, n_control_cells, seed):
        """Per group and perturbation: predicted latent shift, the observed (anchor) shift and expression change.

        A gene observed alone in the group contributes its observed shift and expression change. Any other gene's
        token predicts its shift, which retrieves the group's observed singles by similarity (:func:`_kernel_weights`):
        the gene contributes their weighted shift and expression change. The predicted shift adds the learned
        interaction, shrunk by :func:`_interaction_shrinkage`; it is the only part decoded by the expression head
        (``shift - base``).
        """
        self.module.eval()
        gene_embedding = self.module.context_encoder.tokenizer.gene_embedding
        dev = self.device
        out = []
        for group in groups:
            prof = self._profile(adata, group, n_control_cells, seed)
            z0 = torch.as_tensor(prof["z0"][None], device=dev)
            context = self.module.perturbation_context(z0, **self._group_tensors(adata, group.control))
            ptype = self._type_code(group, perturbation_type)
            for genes in parsed:
                shift, base = torch.zeros_like(z0), torch.zeros_like(z0)
                anchor_delta = np.zeros(adata.n_vars)
                if genes:
                    idx = torch.tensor([self.perturbation_tables_.index(genes)], device=dev)
                    eff = self.module.perturbation(gene_embedding, idx, context, self._dose_tensor(genes, dose), ptype)
                    shift = shift + _interaction_shrinkage(group) * eff["interaction"]
                    for k, gene in enumerate(genes):
                        if gene in prof["singles"]:
                            z_obs, d_obs = prof["singles"][gene]
                            observed = torch.as_tensor(z_obs[None], device=dev)
                            shift, base, anchor_delta = shift + observed, base + observed, anchor_delta + d_obs
                        elif len(prof["singles"]) > 0:  # kernel retrieval over the group's observed singles
                            w = _kernel_weights(eff["effects"][0, k].cpu().numpy(), prof["shifts"], prof["temperature"])
                            retrieved = torch.as_tensor((w @ prof["shifts"])[None], dtype=z0.dtype, device=dev)
                            shift, base = shift + retrieved, base + retrieved
                            anchor_delta = anchor_delta + w @ prof["deltas"]
                        else:  # no single observed in the group: the token's effect, decoded
                            shift = shift + eff["effects"][:, k]
                out.append((group, genes, shift, base, anchor_delta, prof))
        return out

    # ------------------------------------------------------------------ public API
    def predict_perturbation(
        self,
        perturbations: str | Sequence[str],
        covariates: Mapping[str, str | Sequence[str]] | None = None,
        adata: AnnData | None = None,
        perturbation_type: str | None = None,
        dose: float | str | None = None,
        n_control_cells: int = 500,
        seed: int = 0,
    ) -> AnnData:
        """Predict the mean expression of perturbed cells, one row per (perturbation, covariate group).

        The shift of a perturbation in latent space is additive over its genes plus the learned interaction;
        a gene observed alone in the covariate group contributes its observed latent shift, any other gene its
        token's predicted effect. The shift is decoded by the expression head applied to the group's control
        latents, and the decoded change is added to the observed control mean. For genes observed alone the
        observed expression change is used and only what the model adds (interaction, unobserved genes) is
        decoded, so a combination of observed singles starts from the additive prediction.

        Parameters
        ----------
        perturbations
            Labels such as ``"SGK1"``, ``"KLF1+MAP2K6"`` or GEARS-style ``"MEIS1+ctrl"``; genes must be measured
            or perturbed in the training data.
        covariates
            Values of the covariate keys (``batch_key`` and ``categorical_covariate_keys``), e.g.
            ``{"cell_type": "k562"}``; keys left out take every value with control cells. ``None``: every group.
        adata
            Reference cells: the control population (and observed singles) of each covariate group; ``None``
            uses the training AnnData. Must have the model's genes and the perturbation column (labels never seen
            in training are fine). Not modified.
        perturbation_type
            Type for every prediction (e.g. ``"CRISPRa"``); ``None`` takes the group's only training type.
        dose
            Dose per gene (a number, or numbers joined by the delimiter); ``None`` means 1.
        n_control_cells
            Control cells per group whose latents are decoded.
        seed
            Seed of the control-cell subsample.

        Returns
        -------
        New AnnData: ``obs`` holds the perturbation column and the covariates; ``X`` the predicted mean
        expression on the input scale; ``layers["delta"]`` ``X`` minus the control mean; ``obsm["X_biojepa"]``
        the predicted latent (target-encoder space) of the perturbed population.

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
        >>> adata.obs["condition"] = ["control", "g1", "g2", "g1+g2"] * 100
        >>> bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> pred = model.predict_perturbation(["g1+g2", "g3"])
        >>> pred.shape, list(pred.layers), list(pred.obsm)
        ((2, 100), ['delta'], ['X_biojepa'])
        """
        self._check_if_trained(warn=True)
        args = self._perturbation_args()
        parsed, labels = self._parse_requests(perturbations)
        adata, groups, _ = self._reference(adata, covariates)
        results = self._latent_shifts(adata, groups, parsed, perturbation_type, dose, n_control_cells, seed)
        std = self.module.gene_std.cpu().numpy().astype(np.float64)
        head = self.module.expression_head
        X, delta, latents, obs = [], [], [], []
        for (group, genes, shift, base, anchor_delta, prof), label in zip(results, labels * len(groups), strict=True):
            d_log = anchor_delta
            if genes:
                zc = torch.as_tensor(prof["z_ctrl"], device=self.device)
                with torch.inference_mode():
                    decoded = (head(zc + shift).mean(0) - head(zc + base).mean(0)).cpu().numpy()
                d_log = anchor_delta + decoded * std
            log_ctrl = prof["log_ctrl"]
            if self.input_scale == INPUT_SCALES.COUNTS:
                counts = get_matrix(adata, args["layer"])[group.control]
                counts = counts.toarray() if sparse.issparse(counts) else np.asarray(counts)
                lib = np.maximum(counts.sum(1), 1e-8)
                if REGISTRY_KEYS.SIZE_FACTOR_KEY in self.adata_manager.data_registry:
                    lib = np.asarray(
                        self.get_from_registry(adata, REGISTRY_KEYS.SIZE_FACTOR_KEY)[group.control]
                    ).ravel()
                x = (np.expm1(log_ctrl + d_log) * lib[:, None] / 1e4).mean(0)
                X.append(x), delta.append(x - counts.mean(0))
            else:
                X.append(log_ctrl.mean(0) + d_log), delta.append(d_log)
            latents.append(prof["z0"] + shift.cpu().numpy()[0])
            obs.append((label, *group.values))
        pred = AnnData(
            X=np.vstack(X).astype(np.float32),
            obs=pd.DataFrame(
                obs, columns=[args["perturbation_key"], *self._covariate_keys()], index=_index(len(obs))
            ).astype(str),
            var=pd.DataFrame(index=adata.var_names.copy()),
            layers={"delta": np.vstack(delta).astype(np.float32)},
            obsm={"X_biojepa": np.vstack(latents).astype(np.float32)},
        )
        pred.obs_names_make_unique()
        pred.uns["method"] = "BioJEPA"
        return pred

    def _parse_requests(self, perturbations) -> tuple[list[Genes], list[str]]:
        args = self._perturbation_args()
        if isinstance(perturbations, str):
            perturbations = [perturbations]
        control, delim = str(args["control_value"]), args["combination_delimiter"]
        parsed = [parse_perturbation(p, control, delim) for p in perturbations]
        for genes in parsed:
            self.perturbation_tables_.index(genes)
        return parsed, [canonical_label(g, delim, control) for g in parsed]

    def get_perturbation_embedding(
        self,
        perturbations: str | Sequence[str] | None = None,
        covariates: Mapping[str, str | Sequence[str]] | None = None,
        adata: AnnData | None = None,
        perturbation_type: str | None = None,
        n_control_cells: int = 500,
    ) -> AnnData:
        """Latent shift of each perturbation in each covariate group (predicted latent minus control latent).

        Parameters
        ----------
        perturbations
            Labels; ``None`` takes every non-control label of the reference AnnData.
        covariates, adata, perturbation_type, n_control_cells
            As in :meth:`predict_perturbation`.

        Returns
        -------
        AnnData with ``X`` the ``(n, n_latent)`` shifts and ``obs`` the perturbation and covariates.

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
        >>> adata.obs["condition"] = ["control", "g1", "g2", "g1+g2"] * 100
        >>> bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> model.get_perturbation_embedding().shape
        (3, 8)
        """
        self._check_if_trained(warn=True)
        args = self._perturbation_args()
        if perturbations is None:
            reference = self.adata if adata is None else adata
            labels = pd.unique(reference.obs[args["perturbation_key"]].astype(str))
            control = str(args["control_value"])
            delim = args["combination_delimiter"]
            perturbations = sorted(
                {canonical_label(parse_perturbation(x, control, delim), delim, control) for x in labels} - {control}
            )
        parsed, labels = self._parse_requests(perturbations)
        adata, groups, _ = self._reference(adata, covariates)
        results = self._latent_shifts(adata, groups, parsed, perturbation_type, None, n_control_cells, 0)
        shifts = np.vstack([r[2].cpu().numpy() for r in results]).astype(np.float32)
        obs = [(label, *r[0].values) for r, label in zip(results, labels * len(groups), strict=True)]
        columns = [args["perturbation_key"], *self._covariate_keys()]
        emb = AnnData(shifts, obs=pd.DataFrame(obs, columns=columns, index=_index(len(obs))).astype(str))
        emb.obs_names_make_unique()
        return emb

    def retrieve_perturbations(
        self,
        adata: AnnData,
        indices: Sequence[int],
        perturbations: str | Sequence[str] | None = None,
        reference: AnnData | None = None,
        perturbation_type: str | None = None,
        centered: bool = True,
    ) -> pd.DataFrame:
        """Rank perturbations by how well their latent shift matches an observed cell population's shift.

        The query shift is the mean target latent of ``adata[indices]`` minus that of the control cells of the
        same covariate group in ``reference``; candidates are scored by cosine similarity of their predicted
        shift (:meth:`get_perturbation_embedding`) in that group, both centered on the candidates' mean shift.

        Parameters
        ----------
        adata
            AnnData with the query cells (the model's genes and covariate columns; perturbation labels are not
            needed). Not modified.
        indices
            Query cells: one population from a single covariate group.
        perturbations
            Candidates; ``None``: every non-control label of the reference.
        reference, perturbation_type
            Reference AnnData (``None``: training data) and perturbation type, as in :meth:`predict_perturbation`.
        centered
            Subtract the candidates' mean shift from the query's and every candidate's shift first, so that a
            response shared by all perturbations (e.g. to the screen itself) does not dominate the similarity.

        Returns
        -------
        Candidates sorted by decreasing ``cosine``, with a 1-based ``rank`` column.

        Examples
        --------
        >>> import scvi, biojepa as bj
        >>> adata = scvi.data.synthetic_iid()
        >>> adata.var_names = [f"g{i}" for i in range(adata.n_vars)]
        >>> adata.obs["condition"] = ["control", "g1", "g2", "g1+g2"] * 100
        >>> bj.BioJEPA.setup_anndata(adata, perturbation_key="condition", control_value="control")
        >>> model = bj.BioJEPA(adata, n_latent=8)
        >>> model.train(max_epochs=1, enable_progress_bar=False)
        >>> model.retrieve_perturbations(adata, indices=range(1, 400, 4)).columns.tolist()
        ['condition', 'cosine', 'rank']
        """
        args = self._perturbation_args()
        indices = np.asarray(list(indices))
        query = self._encodable(adata, indices)
        cov_keys = self._covariate_keys()
        covariates = None
        if cov_keys:
            values = query.obs[cov_keys].astype(str).drop_duplicates()
            if len(values) != 1:
                raise ValueError(f"The query cells span {len(values)} covariate groups of {cov_keys}; pass one group.")
            covariates = dict(zip(cov_keys, values.iloc[0], strict=True))
        emb = self.get_perturbation_embedding(perturbations, covariates, reference, perturbation_type)
        ref, groups, _ = self._reference(reference, covariates)
        z_ctrl = self._target_latent(ref, groups[0].control).mean(0)
        shift = self._target_latent(query, np.arange(query.n_obs)).mean(0) - z_ctrl
        cand = np.asarray(emb.X, dtype=np.float64)
        if centered and len(cand) > 1:  # remove the response shared by all perturbations of the group
            common = cand.mean(0)
            cand, shift = cand - common, shift - common
        cosine = cand @ shift / np.maximum(np.linalg.norm(cand, axis=1) * np.linalg.norm(shift), 1e-12)
        out = pd.DataFrame({args["perturbation_key"]: emb.obs[args["perturbation_key"]].to_numpy(), "cosine": cosine})
        out = out.sort_values("cosine", ascending=False, ignore_index=True)
        out["rank"] = np.arange(1, len(out) + 1)
        return out
