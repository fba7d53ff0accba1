"""Multi-omics with MuData: ``setup_mudata``, RNA-only queries in the joint latent and cross-modal prediction."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import torch
from anndata import AnnData
from mudata import MuData
from scvi import REGISTRY_KEYS, settings
from scvi.data import AnnDataManager
from scvi.data.fields import (
    MuDataCategoricalJointObsField,
    MuDataCategoricalObsField,
    MuDataLayerField,
    MuDataNumericalJointObsField,
    MuDataNumericalObsField,
)

from .._constants import EXTRA_KEYS, MODULE_KEYS
from ..data import (
    MODALITY_LAYERS,
    Modality,
    check_modalities,
    check_modality,
    get_matrix,
    modality_priors,
    sample_rows,
)
from ._checks import check_data_size

logger = logging.getLogger(__name__)

_REGISTRY = {"rna": REGISTRY_KEYS.X_KEY, "protein": EXTRA_KEYS.PROTEIN, "atac": EXTRA_KEYS.ATAC}


class MultiomicsMixin:
    """Methods of :class:`~biojepa.BioJEPA` for data registered with :meth:`setup_mudata`."""

    @classmethod
    def setup_mudata(
        cls,
        mdata: MuData,
        rna_layer: str | None = None,
        protein_layer: str | None = None,
        atac_layer: str | None = None,
        *,
        modalities: dict[str, str] | None = None,
        input_scale: Literal["auto", "counts", "log"] = "auto",
        batch_key: str | None = None,
        categorical_covariate_keys: list[str] | None = None,
        continuous_covariate_keys: list[str] | None = None,
        size_factor_key: str | None = None,
        **kwargs,
    ) -> None:
        """Register a MuData with RNA and protein and/or ATAC for one joint latent.

        Each modality gets its own tokens (gene, protein or peak modules) in the shared token space and one
        encoder reads them all. Counts are normalized inside the model (RNA and ATAC: log1p CP10k; protein:
        centred log-ratio per cell); non-integer input is taken as already normalized. A cell without a
        modality has an all-NaN row in it: that modality is masked for the cell, never filled with zeros.

        Parameters
        ----------
        mdata
            MuData whose modalities are row-aligned with ``mdata.obs``.
        rna_layer, protein_layer, atac_layer
            Layer of each modality with the data; ``None`` uses its ``X``.
        modalities
            Maps ``"rna_layer"`` (required), ``"protein_layer"``, ``"atac_layer"`` to modality names in
            ``mdata.mod``, and optionally ``"batch_key"`` etc. to the modality whose ``obs`` holds that column
            (default: ``mdata.obs``), e.g. ``{"rna_layer": "rna", "protein_layer": "adt"}``.
        input_scale
            Scale of the RNA (``"auto"`` detects counts from integers).
        batch_key, categorical_covariate_keys, continuous_covariate_keys, size_factor_key
            Covariates, as in :meth:`setup_anndata`.
        **kwargs
            Passed to :meth:`scvi.data.AnnDataManager.register_fields`.

        Examples
        --------
        >>> import numpy as np, anndata as ad, mudata as md, biojepa as bj
        >>> rng = np.random.default_rng(0)
        >>> rna = ad.AnnData(rng.poisson(2.0, (60, 40)).astype(np.float32))
        >>> adt = ad.AnnData(rng.poisson(20.0, (60, 6)).astype(np.float32))
        >>> mdata = md.MuData({"rna": rna, "adt": adt})
        >>> bj.BioJEPA.setup_mudata(mdata, modalities={"rna_layer": "rna", "protein_layer": "adt"})
        """
        setup_method_args = cls._get_setup_method_args(**locals())
        mods = check_modalities(mdata, modalities)
        attrs = cls._create_modalities_attr_dict(modalities, setup_method_args)
        for arg in ("batch_key", "categorical_covariate_keys", "continuous_covariate_keys", "size_factor_key"):
            value = locals()[arg]
            where = mdata.obs if attrs[arg] is None else mdata.mod[attrs[arg]].obs
            for key in [value] if isinstance(value, str) else value or []:
                if key not in where:
                    raise KeyError(f"`{arg}`: column {key!r} not found in the obs of {attrs[arg] or 'mdata'}.")
        layers = {"rna_layer": rna_layer, "protein_layer": protein_layer, "atac_layer": atac_layer}
        fields = []
        for arg, mod in mods.items():
            kind, _ = MODALITY_LAYERS[arg]
            scale = check_modality(mdata.mod[mod], layers[arg], mod, input_scale if kind == "rna" else "auto", kind)
            logger.info(
                "BioJEPA: modality %r (%s) holds %s.", mod, kind, "counts" if scale == "counts" else "log-scale values"
            )
            fields.append(
                MuDataLayerField(_REGISTRY[kind], layers[arg], mod_key=mod, is_count_data=False, mod_required=True)
            )
        fields += [
            MuDataCategoricalObsField(REGISTRY_KEYS.BATCH_KEY, batch_key, mod_key=attrs.batch_key),
            MuDataCategoricalJointObsField(
                REGISTRY_KEYS.CAT_COVS_KEY, categorical_covariate_keys, mod_key=attrs.categorical_covariate_keys
            ),
            MuDataNumericalJointObsField(
                REGISTRY_KEYS.CONT_COVS_KEY, continuous_covariate_keys, mod_key=attrs.continuous_covariate_keys
            ),
            MuDataNumericalObsField(
                REGISTRY_KEYS.SIZE_FACTOR_KEY, size_factor_key, mod_key=attrs.size_factor_key, required=False
            ),
        ]
        adata_manager = AnnDataManager(fields=fields, setup_method_args=setup_method_args)
        adata_manager.register_fields(mdata, **kwargs)
        cls.register_manager(adata_manager)

    # ------------------------------------------------------------------ model construction
    @property
    def _multimodal(self) -> bool:
        return "modalities" in self.adata_manager.registry["setup_args"]

    def _modality_specs(self) -> tuple[dict[str, str], dict[str, str | None]]:
        args = self.adata_manager.registry["setup_args"]
        mods = {MODALITY_LAYERS[a][0]: m for a, m in args["modalities"].items() if a in MODALITY_LAYERS and m}
        layers = {MODALITY_LAYERS[a][0]: args[a] for a in MODALITY_LAYERS}
        return mods, layers

    def _modality_priors(self, n_embed: int, n_modules: int | None):
        """Per-modality scales and feature priors of the registered MuData."""
        args = self.adata_manager.registry["setup_args"]
        mods, layers = self._modality_specs()
        check_data_size(self.adata.n_obs, self.adata.mod[mods.get("rna", next(iter(mods.values())))].n_vars)
        rows = sample_rows(self.adata.n_obs, 10_000, settings.seed or 0)
        specs, matrices = [], []
        for kind in ("rna", "protein", "atac"):
            if kind not in mods:
                continue
            a = self.adata.mod[mods[kind]]
            scale = check_modality(a, layers[kind], mods[kind], args["input_scale"] if kind == "rna" else "auto", kind)
            specs.append(Modality(kind, scale, a.n_vars))
            matrices.append(get_matrix(a, layers[kind])[rows])
        return modality_priors(matrices, specs, n_embed, n_modules, settings.seed or 0), specs

    # ------------------------------------------------------------------ queries
    def _as_mudata(self, adata: AnnData) -> MuData:
        """A registered MuData with ``adata`` as RNA and every other modality missing (all NaN): RNA-only queries."""
        mods, layers = self._modality_specs()
        rna = AnnData(
            X=get_matrix(adata, layers["rna"]),
            obs=pd.DataFrame(index=adata.obs_names.copy()),
            var=pd.DataFrame(index=adata.var_names.copy()),
        )
        self._check_modality_features(rna, "rna")
        mdict = {mods["rna"]: rna}
        for kind, name in mods.items():
            if kind == "rna":
                continue
            ref = self.adata.mod[name]
            nan = np.full((adata.n_obs, ref.n_vars), np.nan, dtype=np.float32)
            mdict[name] = AnnData(X=nan, obs=pd.DataFrame(index=adata.obs_names.copy()), var=ref.var[[]].copy())
        args = self.adata_manager.registry["setup_args"]
        keys = [args["batch_key"], args["size_factor_key"], *(args["categorical_covariate_keys"] or [])]
        keys += list(args["continuous_covariate_keys"] or [])
        for key in filter(None, keys):
            if key not in adata.obs:
                raise KeyError(f"The RNA AnnData lacks the column {key!r} the model was set up with.")
            for mod in mdict.values():  # wherever the model reads it: mdata.obs or a modality's obs
                mod.obs[key] = adata.obs[key].to_numpy()
        mdata = MuData(mdict)
        for key in filter(None, keys):
            mdata.obs[key] = adata.obs[key].to_numpy()
        if layers["rna"] is not None:
            mdata.mod[mods["rna"]].layers[layers["rna"]] = mdata.mod[mods["rna"]].X
        return self._validate_internal(mdata)

    @torch.inference_mode()
    def _modality_reference(self, i: int, batch_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Latents (every modality a cell has) and normalized values of modality ``i`` of the training cells."""
        start, stop = self.module.modality_offsets[i], self.module.modality_offsets[i + 1]
        mean, std = self.module.gene_mean[start:stop], self.module.gene_std[start:stop]
        zs, values = [], []
        for tensors in self._make_data_loader(adata=self.adata, batch_size=batch_size):
            inputs = self.module._get_inference_input(tensors)
            x, present = self.module.normalize_inputs(**inputs)
            keep = present[:, i]
            z = self.module.inference(**inputs, masked=False)[MODULE_KEYS.Z]
            zs.append(z[keep]), values.append(x[keep, start:stop] * std + mean)
        return torch.cat(zs), torch.cat(values)

    def _check_modality_features(self, adata: AnnData, kind: str) -> None:
        mods, _ = self._modality_specs()
        expected = self.adata.mod[mods[kind]].var_names
        if adata.n_vars != len(expected) or not np.array_equal(np.asarray(adata.var_names), np.asarray(expected)):
            missing = [g for g in expected if g not in set(adata.var_names)]
            raise ValueError(
                f"The {kind} features differ from the model's ({adata.n_vars} vs {len(expected)}; missing e.g. "
                f"{missing[:5]}); subset and reorder them like the training modality {mods[kind]!r}."
            )

    def _validate_mudata(self, mdata: MuData) -> None:
        mods, layers = self._modality_specs()
        for kind, name in mods.items():
            if name not in mdata.mod:
                raise KeyError(f"The MuData lacks the modality {name!r} ({kind}) the model was set up with.")
            self._check_modality_features(mdata.mod[name], kind)
        check_modalities(mdata, self.adata_manager.registry["setup_args"]["modalities"])

    @torch.inference_mode()
    def predict_modality(
        self,
        data: AnnData | MuData | None = None,
        target: Literal["protein", "atac"] = "protein",
        indices: Sequence[int] | None = None,
        batch_size: int | None = None,
        method: Literal["neighbors", "head"] = "neighbors",
        n_neighbors: int = 15,
        levels: Sequence[float] | None = None,
        n_samples: int = 100,
        seed: int = 0,
    ) -> AnnData:
        """Predict a modality (e.g. protein) from the others, for cells that may lack it.

        Cells are embedded with the ``target`` modality hidden (so the prediction never reads it, even where it
        was measured). ``method="neighbors"`` averages the ``target`` values of the ``n_neighbors`` training cells
        nearest in the joint latent (training cells embedded with every modality they have; weights 1 / distance);
        ``method="head"`` decodes the latent with the modality's head.

        Parameters
        ----------
        data
            A MuData like the training one, or an AnnData of RNA (the model's genes); ``None``: the training data.
        target
            ``"protein"`` or ``"atac"``.
        indices
            Cells to predict; ``None``: all.
        batch_size
            Minibatch size.
        method, n_neighbors
            Decoding: latent nearest neighbours among the training cells, or the modality head.
        levels
            Nominal coverages (e.g. ``(0.5, 0.8, 0.95)``) of per-cell, per-feature intervals for the measured values,
            the central quantiles of ``n_samples`` profiles from :meth:`sample_modality` (seeded by ``seed``); needs
            the generative head (:meth:`train_generative`). ``None``: no intervals.
        n_samples, seed
            With ``levels``: profiles sampled per cell and their seed.

        Returns
        -------
        AnnData (cells × the target's features) with the predicted values on the model's normalized scale: centred
        log-ratio for protein counts, log1p CP10k for ATAC counts, the input itself for normalized input. With
        ``levels``: ``layers["lower_80"]``, ``layers["upper_80"]``, ... and ``obs["uncertainty"]`` (root mean square
        over features of the sampled profiles' standard deviation).

        Examples
        --------
        >>> import numpy as np, anndata as ad, mudata as md, biojepa as bj
        >>> rng = np.random.default_rng(0)
        >>> rna = ad.AnnData(rng.poisson(2.0, (60, 40)).astype(np.float32))
        >>> adt = ad.AnnData(rng.poisson(20.0, (60, 6)).astype(np.float32))
        >>> mdata = md.MuData({"rna": rna, "adt": adt})
        >>> bj.BioJEPA.setup_mudata(mdata, modalities={"rna_layer": "rna", "protein_layer": "adt"})
        >>> model = bj.BioJEPA(mdata, n_latent=8)
        >>> model.train(max_epochs=2, enable_progress_bar=False)
        >>> model.predict_modality(rna, target="protein").shape
        (60, 6)
        """
        self._check_if_trained(warn=True)
        if not self._multimodal:
            raise ValueError("This model was set up with `setup_anndata`; `predict_modality` needs `setup_mudata`.")
        i = self.module.modality_index(target)
        if i == 0:
            raise ValueError("`target` must be a modality other than RNA (the model's input).")
        data = self.adata if data is None else data
        mdata = self._as_mudata(data) if isinstance(data, AnnData) else self._validate_anndata(data)
        loader = self._make_data_loader(adata=mdata, indices=indices, batch_size=batch_size)
        self.module.eval()
        head = self.module.modality_heads[target]
        start, stop = self.module.modality_offsets[i], self.module.modality_offsets[i + 1]
        mean, std = self.module.gene_mean[start:stop], self.module.gene_std[start:stop]
        if method not in ("neighbors", "head"):
            raise ValueError(f"`method` must be 'neighbors' or 'head', got {method!r}.")
        out, latents = [], []
        for tensors in loader:
            inputs = self.module._get_inference_input(tensors)
            z = self.module.inference(**inputs, masked=False, drop=[target])[MODULE_KEYS.Z]
            latents.append(z)
            out.append((head(z) * std + mean).cpu())
        reference = None
        if method == "neighbors" or levels is not None:  # encoded once for the neighbours and the intervals
            reference = self._modality_reference(i, batch_size)
        if method == "neighbors":
            out = [_knn_average(z, *reference, n_neighbors).cpu() for z in latents]
        mods, _ = self._modality_specs()
        names = np.asarray(mdata.obs_names)
        rows = np.arange(len(names)) if indices is None else np.asarray(indices)
        pred = AnnData(
            X=torch.cat(out).numpy(),
            obs=pd.DataFrame(index=names[rows]),
            var=pd.DataFrame(index=self.adata.mod[mods[target]].var_names.copy()),
        )
        if levels is None:
            return pred
        return self._with_modality_intervals(pred, latents, target, levels, n_samples, seed, reference)


def _knn_average(
    z: torch.Tensor, ref_z: torch.Tensor, ref_values: torch.Tensor, k: int, exclude: np.ndarray | None = None
) -> torch.Tensor:
    """Inverse-distance weighted mean of ``ref_values`` over the ``k`` rows of ``ref_z`` nearest each row of ``z``.

    With ``exclude``, row ``j`` of ``z`` skips reference row ``exclude[j]`` (a training cell, itself). Computed in
    chunks of rows of ``z`` whose distance matrix holds at most 2**24 entries (64 MB), whatever the reference size.
    """
    out, step = [], max(1, 2**24 // max(len(ref_z), 1))
    for s in range(0, len(z), step):
        dist = torch.cdist(z[s : s + step], ref_z)  # (b, N)
        if exclude is not None:
            own = torch.as_tensor(exclude[s : s + step], device=dist.device)
            dist[torch.arange(len(own), device=dist.device), own] = float("inf")
        d, idx = dist.topk(min(k, ref_z.shape[0] - (exclude is not None)), dim=1, largest=False)
        w = 1.0 / d.clamp(min=1e-6)
        out.append((ref_values[idx] * w[..., None]).sum(1) / w.sum(1, keepdim=True))
    return torch.cat(out)
