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
from ..data import get_matrix, normalize_expression
from ..perturbation import (
    CovariateGroup,
    Perturbation,
    PerturbationSetup,
    condition_frame,
    covariate_groups,
    select_groups,
)

_CHUNK = 10_000  # rows densified at a time


class ReferenceMixin:
    """Reference cells of perturbation predictions: registration, encoding, covariate groups, latent shifts."""

    # ------------------------------------------------------------------ setup bookkeeping
    def _setup(self) -> PerturbationSetup:
        """The model's :class:`~biojepa.perturbation.PerturbationSetup` (a ValueError without perturbations)."""
        if getattr(self, "perturbation_setup_", None) is None:
            return PerturbationSetup.from_registry(self.adata_manager.registry, self.adata.var_names)  # raises
        return self.perturbation_setup_

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
        return self._log_moments(adata, rows, variance=False)[0]

    def _log_moments(self, adata: AnnData, rows: np.ndarray, variance: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Mean log1p-normalized expression of ``rows`` and its per-gene sampling variance (cells' variance / n).

        One pass over the rows, chunk by chunk; the variance is zeros for fewer than two rows or ``variance=False``.
        """
        total, squares = np.zeros(adata.n_vars), np.zeros(adata.n_vars)
        for log, _, _ in self._row_chunks(adata, rows):
            total += log.sum(0, dtype=np.float64)
            if variance:
                squares += (log.astype(np.float64) ** 2).sum(0)
        n = len(rows)
        mean = total / max(n, 1)
        if not variance or n < 2:
            return mean, np.zeros(adata.n_vars)
        return mean, np.maximum(squares - total * mean, 0.0) / (n - 1) / n

    def _log_expression(self, adata: AnnData, rows: np.ndarray) -> np.ndarray:
        """Dense log1p-normalized expression of ``rows`` (the model's scale before standardization)."""
        X = get_matrix(adata, self.adata_manager.registry["setup_args"]["layer"])[rows]
        size_factor = None
        if REGISTRY_KEYS.SIZE_FACTOR_KEY in self.adata_manager.data_registry:
            size_factor = self.get_from_registry(adata, REGISTRY_KEYS.SIZE_FACTOR_KEY)[rows]
        return normalize_expression(X, self.input_scale, size_factor)

    def _categories(self) -> dict[str, list[str]]:
        """Training categories (as strings) of the registered batch and categorical covariate columns."""
        args = self.adata_manager.registry["setup_args"]
        out = {}
        if args.get("batch_key"):
            mapping = self.adata_manager.get_state_registry(REGISTRY_KEYS.BATCH_KEY).categorical_mapping
            out[args["batch_key"]] = list(map(str, mapping))
        if REGISTRY_KEYS.CAT_COVS_KEY in self.adata_manager.data_registry:
            for key, mapping in self.adata_manager.get_state_registry(REGISTRY_KEYS.CAT_COVS_KEY).mappings.items():
                out[key] = list(map(str, mapping))
        return out

    def _registered(self, adata: AnnData | None) -> AnnData:
        """``adata`` registered for encoding, or a registered copy of what encoding needs.

        The copy is made when ``adata`` has categories (covariates, perturbations, doses) never seen in training,
        which registration would refuse.
        """
        if adata is None or self._multimodal:
            return self._validate_anndata(adata)
        args = self.adata_manager.registry["setup_args"]
        known = self._categories()
        for key, registry_key in (
            ("perturbation_key", EXTRA_KEYS.PERTURBATION),
            ("dose_key", EXTRA_KEYS.DOSE),
            ("perturbation_type_key", EXTRA_KEYS.PERTURBATION_TYPE),
            ("sample_key", EXTRA_KEYS.SAMPLE),
        ):
            if args.get(key):
                known[args[key]] = list(
                    map(str, self.adata_manager.get_state_registry(registry_key).categorical_mapping)
                )
        for key, categories in known.items():
            if key not in adata.obs or not adata.obs[key].astype(str).isin(categories).all():
                return self._encodable(adata)
        return self._validate_anndata(adata)

    def _encodable(self, adata: AnnData, rows: np.ndarray | None = None) -> AnnData:
        """A new AnnData with what encoding needs (expression, covariates) of ``adata[rows]``, registered.

        Perturbation labels are set to the control value (dose/type/sample to a training category, time to 0) and
        covariate categories never seen in training to a training category: encoding reads none of them, and this
        way labels and contexts never seen in training (e.g. held-out or unlabeled query cells, a new cell line,
        new subjects) and the user's AnnData itself are left alone.
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
        for key, known in self._categories().items():  # categories never seen in training: encoding ignores them
            if key in obs and not obs[key].astype(str).isin(known).all():
                obs[key] = obs[key].astype(str).where(obs[key].astype(str).isin(known), known[0])
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
        self, adata: AnnData | None, covariates: Mapping | None
    ) -> tuple[AnnData, list[CovariateGroup], list[CovariateGroup]]:
        """Encodable reference cells, the covariate groups (with control cells) matching ``covariates``, and all."""
        setup = self._setup()
        pkey = setup.perturbation_key
        if adata is None:
            adata = self.adata
        if pkey not in adata.obs:
            raise KeyError(
                f"adata.obs lacks the perturbation column {pkey!r} the model was set up with; label control cells "
                f"with {setup.control_value!r}."
            )
        cov_keys = list(setup.covariate_keys)
        frame = condition_frame(adata.obs, pkey, setup.control_value, cov_keys, setup.delimiter)
        labels = frame.pop("_perturbation").to_numpy()
        types = None
        if setup.type_key and setup.type_key in adata.obs:
            types = adata.obs[setup.type_key].astype(str).to_numpy()
        doses = None
        if setup.dose_key and setup.dose_key in adata.obs:  # read before `_encodable` fills the column
            doses = pd.to_numeric(adata.obs[setup.dose_key].astype(str), errors="coerce").to_numpy(dtype=float)
        if adata is not self.adata:
            adata = self._encodable(adata)
        groups = covariate_groups(labels, frame[cov_keys], setup.control_value, setup.delimiter, types, doses)
        selected = select_groups(list(groups), cov_keys, covariates)
        return adata, [groups[v] for v in selected], [groups[v] for v in sorted(groups)]

    def _populations(self, group, adata=None) -> dict[Perturbation, np.ndarray]:
        """Rows of each observed perturbation of ``group`` in ``adata`` (default: the training data).

        One population per (genes, doses) when the model has doses: a compound at each of its doses.
        """
        setup = self._setup()
        if not setup.dose_key:
            return {Perturbation(genes): rows for genes, rows in sorted(group.observed.items())}
        obs = (self.adata if adata is None else adata).obs
        all_labels = obs[setup.perturbation_key].astype(str).to_numpy()
        all_doses = obs[setup.dose_key].astype(str).to_numpy()
        out: dict[Perturbation, np.ndarray] = {}
        for _, rows in sorted(group.observed.items()):
            labels, doses = all_labels[rows], all_doses[rows]
            for label, dose in sorted(set(zip(labels, doses, strict=True))):
                p = setup.parse(label, dose)
                out[p] = np.concatenate([out.get(p, rows[:0]), rows[(labels == label) & (doses == dose)]])
        return dict(sorted(out.items(), key=lambda kv: (kv[0].genes, kv[0].doses)))

    # ------------------------------------------------------------------ tensors of a group
    def _group_tensors(self, adata: AnnData, group: CovariateGroup) -> dict:
        """Covariate codes of a group (``-1`` for a category never seen in training) and mean continuous covariates."""
        setup, known = self._setup(), self._categories()
        args = self.adata_manager.registry["setup_args"]
        codes = {}
        for key, value in zip(setup.covariate_keys, group.values, strict=True):
            codes[key] = known[key].index(value) if value in known[key] else -1
        batch = codes.get(args.get("batch_key"), 0) if args.get("batch_key") else 0
        out = {"batch_index": torch.tensor([[batch]]), "cat_covs": None, "cont_covs": None}
        cat_keys = list(args.get("categorical_covariate_keys") or [])
        if cat_keys:
            out["cat_covs"] = torch.tensor([[codes[k] for k in cat_keys]])
        if REGISTRY_KEYS.CONT_COVS_KEY in self.adata_manager.data_registry:
            cont = np.asarray(self.get_from_registry(adata, REGISTRY_KEYS.CONT_COVS_KEY), dtype=np.float32)
            out["cont_covs"] = torch.as_tensor(cont[group.control].mean(0, keepdims=True))
        return {k: (v.to(self.device) if v is not None else None) for k, v in out.items()}

    def _type_code(self, group: CovariateGroup, perturbation_type: str | None) -> torch.Tensor | None:
        setup = self._setup()
        if not setup.type_key:
            return None
        if perturbation_type is None:
            if len(group.types) != 1:
                raise ValueError(
                    f"Covariate group {group.values} has perturbation types {group.types or 'none'}; pass "
                    f"`perturbation_type=` (one of {list(setup.types)})."
                )
            perturbation_type = group.types[0]
        if str(perturbation_type) not in setup.types:
            raise ValueError(f"Unknown perturbation_type {perturbation_type!r}; known types: {list(setup.types)}.")
        return torch.tensor([setup.types.index(str(perturbation_type))], device=self.device)

    def _dose_tensor(self, perturbation: Perturbation) -> torch.Tensor | None:
        """``(1, n_genes)`` doses aligned with the perturbation's sorted genes (1 without doses)."""
        if self.module.condition_dose is None:
            return None
        doses = perturbation.doses or (1.0,) * len(perturbation.genes)
        return torch.tensor([doses], dtype=torch.float32, device=self.device)

    def _profile(self, adata: AnnData, group: CovariateGroup, n_control_cells: int, seed: int) -> dict:
        """Control latents (a subsample of ``n_control_cells``), their mean and the mean log expression of a group."""
        ctrl = group.control
        if ctrl.size > n_control_cells:
            ctrl = np.sort(np.random.default_rng(seed).choice(ctrl, n_control_cells, replace=False))
        z_ctrl = self._target_latent(adata, ctrl)
        return {
            "z_ctrl": z_ctrl,
            "z0": z_ctrl.mean(0),
            "log_ctrl_mean": self._mean_log_expression(adata, group.control),
        }
