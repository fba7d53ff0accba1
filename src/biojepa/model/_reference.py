"""Reference cells of perturbation predictions: encoding, covariate groups and latent shifts."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from scipy import sparse
from scvi import REGISTRY_KEYS

from .._constants import EXTRA_KEYS
from .._perturbations import condition_frame
from ..data import (
    CovariateGroup,
    covariate_groups,
    get_matrix,
    interaction_shrinkage,
    kernel_weights,
    loo_temperature,
    normalize_expression,
    parse_dose,
    select_groups,
)

Genes = tuple[str, ...]
_CHUNK = 10_000  # rows densified at a time


class ReferenceMixin:
    """Reference cells of perturbation predictions: registration, encoding, covariate groups, latent shifts."""

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

    def _row_chunks(self, adata: AnnData, rows: np.ndarray):
        """Yield ``(log1p-normalized expression, raw values, library sizes)`` of ``rows`` in chunks of rows.

        Dense arrays of at most ``_CHUNK`` rows, so that large groups of cells are never densified at once.
        """
        layer = self.adata_manager.registry["setup_args"]["layer"]
        rows = np.asarray(rows)
        for start in range(0, len(rows), _CHUNK):
            chunk = rows[start : start + _CHUNK]
            raw = get_matrix(adata, layer)[chunk]
            raw = raw.toarray() if sparse.issparse(raw) else np.asarray(raw)
            size_factor = None
            if REGISTRY_KEYS.SIZE_FACTOR_KEY in self.adata_manager.data_registry:
                size_factor = np.asarray(self.get_from_registry(adata, REGISTRY_KEYS.SIZE_FACTOR_KEY)[chunk]).ravel()
            lib = np.maximum(raw.sum(1), 1e-8) if size_factor is None else size_factor
            yield normalize_expression(raw, self.input_scale, size_factor), raw, lib

    def _mean_log_expression(self, adata: AnnData, rows: np.ndarray) -> np.ndarray:
        """Mean log1p-normalized expression of ``rows``, accumulated chunk by chunk."""
        total = np.zeros(adata.n_vars)
        for log, _, _ in self._row_chunks(adata, rows):
            total += log.sum(0, dtype=np.float64)
        return total / max(len(rows), 1)

    def _log_expression(self, adata: AnnData, rows: np.ndarray) -> np.ndarray:
        """Dense log1p-normalized expression of ``rows`` (the model's scale before standardization)."""
        X = get_matrix(adata, self.adata_manager.registry["setup_args"]["layer"])[rows]
        size_factor = None
        if REGISTRY_KEYS.SIZE_FACTOR_KEY in self.adata_manager.data_registry:
            size_factor = self.get_from_registry(adata, REGISTRY_KEYS.SIZE_FACTOR_KEY)[rows]
        return normalize_expression(X, self.input_scale, size_factor)

    def _encodable(self, adata: AnnData, rows: np.ndarray | None = None) -> AnnData:
        """A new AnnData with what encoding needs (expression, covariates) of ``adata[rows]``, registered.

        Perturbation labels are set to the control value (dose/type/sample to a training category, time to 0):
        encoding does not read them, and this way labels never seen in training (e.g. held-out or unlabeled query
        cells, new subjects) and the user's AnnData itself are left alone.
        """
        args = self.adata_manager.registry["setup_args"]
        self._check_genes(adata)
        layer = args["layer"]
        self._check_expression(adata)
        rows = np.arange(adata.n_obs) if rows is None else np.asarray(rows)
        keys = [args.get(k) for k in ("batch_key", "size_factor_key")]
        keys += list(args.get("categorical_covariate_keys") or []) + list(args.get("continuous_covariate_keys") or [])
        keys = [k for k in keys if k]
        missing = [k for k in keys if k not in adata.obs]
        if missing:
            raise KeyError(f"adata.obs lacks the columns {missing} the model was set up with.")
        obs = adata.obs.iloc[rows][keys].copy()
        fill = {"perturbation_key": args.get("control_value"), "time_key": 0.0}
        for key, registry_key in (
            ("dose_key", EXTRA_KEYS.DOSE),
            ("perturbation_type_key", EXTRA_KEYS.PERTURBATION_TYPE),
            ("sample_key", EXTRA_KEYS.SAMPLE),
        ):
            if args.get(key):
                fill[key] = self.adata_manager.get_state_registry(registry_key).categorical_mapping[0]
        for key, value in fill.items():
            if args.get(key):
                obs[args[key]] = value
        X = get_matrix(adata, layer)[rows]
        view = AnnData(X=X if layer is None else None, obs=obs, layers=None if layer is None else {layer: X})
        view.var_names = adata.var_names.copy()
        return self._validate_internal(view)

    def _reference(
        self, adata: AnnData, covariates: Mapping | None
    ) -> tuple[AnnData, list[CovariateGroup], pd.DataFrame]:
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
        groups = covariate_groups(labels, frame[cov_keys], control, args["combination_delimiter"], types)
        selected = select_groups(list(groups), cov_keys, covariates)
        return adata, [groups[v] for v in selected], pd.DataFrame(sorted(groups), columns=cov_keys)

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

    def _type_code(self, group: CovariateGroup, perturbation_type: str | None) -> torch.Tensor | None:
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

    def _profile(self, adata: AnnData, group: CovariateGroup, n_control_cells: int, seed: int) -> dict:
        """Control latents/expression of a group and the observed latent and log-expression shift of its singles.

        Expression is averaged chunk by chunk (:meth:`_row_chunks`). ``temperature`` is the kernel temperature of
        :func:`_kernel_weights` chosen by leave-one-out over the group's singles.
        """
        ctrl = group.control
        if ctrl.size > n_control_cells:
            ctrl = np.sort(np.random.default_rng(seed).choice(ctrl, n_control_cells, replace=False))
        z_ctrl = self._target_latent(adata, ctrl)
        z0 = z_ctrl.mean(0)
        ctrl_mean = self._mean_log_expression(adata, group.control)
        singles = {
            gene: (self._target_latent(adata, rows).mean(0) - z0, self._mean_log_expression(adata, rows) - ctrl_mean)
            for gene, rows in group.singles.items()
        }
        shifts = np.array([v[0] for v in singles.values()]).reshape(len(singles), -1)
        deltas = np.array([v[1] for v in singles.values()]).reshape(len(singles), -1)
        return {
            "z_ctrl": z_ctrl,
            "z0": z0,
            "log_ctrl_mean": ctrl_mean,
            "singles": singles,
            "shifts": shifts,
            "deltas": deltas,
            "temperature": loo_temperature(shifts, deltas),
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
        if isinstance(n_control_cells, bool) or not isinstance(n_control_cells, int) or n_control_cells < 1:
            raise ValueError(f"`n_control_cells` must be a positive integer, got {n_control_cells!r}.")
        if dose is not None and EXTRA_KEYS.DOSE not in self.adata_manager.data_registry:
            raise ValueError(
                f"`dose`={dose!r} was given but the model was set up without a `dose_key`; set it up with "
                "`setup_anndata(..., dose_key=...)` to predict doses, or leave `dose=None`."
            )
        self.module.eval()
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
                    eff = self.module.perturbation_effect(idx, context, self._dose_tensor(genes, dose), ptype)
                    shift = shift + interaction_shrinkage(group) * eff["interaction"]
                    for k, gene in enumerate(genes):
                        if gene in prof["singles"]:
                            z_obs, d_obs = prof["singles"][gene]
                            observed = torch.as_tensor(z_obs[None], device=dev)
                            shift, base, anchor_delta = shift + observed, base + observed, anchor_delta + d_obs
                        elif len(prof["singles"]) > 0:  # kernel retrieval over the group's observed singles
                            w = kernel_weights(eff["effects"][0, k].cpu().numpy(), prof["shifts"], prof["temperature"])
                            retrieved = torch.as_tensor((w @ prof["shifts"])[None], dtype=z0.dtype, device=dev)
                            shift, base = shift + retrieved, base + retrieved
                            anchor_delta = anchor_delta + w @ prof["deltas"]
                        else:  # no single observed in the group: the token's effect, decoded
                            shift = shift + eff["effects"][:, k]
                out.append((group, genes, shift, base, anchor_delta, prof))
        return out
