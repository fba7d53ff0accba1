"""Perturbation prediction, perturbation embeddings and mechanism retrieval of :class:`~biojepa.BioJEPA`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._constants import EXTRA_KEYS, INPUT_SCALES
from .._perturbations import canonical_label, parse_perturbation
from ..data import perturbation_tables
from ._reference import Genes, ReferenceMixin


def _index(n: int) -> list[str]:
    return [str(i) for i in range(n)]


class PerturbationMixin(ReferenceMixin):
    """Methods of :class:`~biojepa.BioJEPA` that need a registered ``perturbation_key``."""

    def _perturbation_module_kwargs(self) -> dict:
        """Lookup tables of the registered perturbation labels (empty without a ``perturbation_key``)."""
        self.perturbation_tables_ = None
        registry = self.adata_manager.data_registry
        if EXTRA_KEYS.PERTURBATION not in registry:
            return {}
        args = self.adata_manager.registry["setup_args"]
        labels = self.adata_manager.get_state_registry(EXTRA_KEYS.PERTURBATION).categorical_mapping
        doses = None
        if EXTRA_KEYS.DOSE in registry:
            doses = list(self.adata_manager.get_state_registry(EXTRA_KEYS.DOSE).categorical_mapping)
        tables = perturbation_tables(
            list(map(str, labels)),
            str(args["control_value"]),
            args["combination_delimiter"],
            self.adata.var_names,
            doses,
        )
        self.perturbation_tables_ = tables
        n_types = 0
        if EXTRA_KEYS.PERTURBATION_TYPE in registry:
            n_types = len(self.adata_manager.get_state_registry(EXTRA_KEYS.PERTURBATION_TYPE).categorical_mapping)
        return {
            "condition_genes": torch.from_numpy(tables.condition_genes),
            "condition_dose": torch.from_numpy(tables.condition_dose) if tables.condition_dose is not None else None,
            "n_extra_genes": len(tables.vocabulary) - tables.n_measured,
            "n_perturbation_types": n_types,
        }

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
            if self.input_scale == INPUT_SCALES.COUNTS:  # mean over control cells of their counts moved by d_log
                x, counts = np.zeros(adata.n_vars), np.zeros(adata.n_vars)
                for log, raw, lib in self._row_chunks(adata, group.control):
                    x += (np.maximum(np.expm1(log + d_log), 0.0) * lib[:, None] / 1e4).sum(0)
                    counts += raw.sum(0, dtype=np.float64)
                x, counts = x / len(group.control), counts / len(group.control)
                X.append(x), delta.append(x - counts)
            else:
                X.append(prof["log_ctrl_mean"] + d_log), delta.append(d_log)
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
        perturbations = list(perturbations)
        if not perturbations:
            raise ValueError("`perturbations` is empty; pass one or more labels, e.g. ['SGK1', 'KLF1+MAP2K6'].")
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
        >>> import biojepa as bj
        >>> adata = bj.datasets.norman2019_gears_tiny()  # GEARS labels: "MEIS1+ctrl", "ctrl"
        >>> bj.BioJEPA.setup_anndata(adata, layer="counts", perturbation_key="condition", control_value="ctrl")
        >>> model = bj.BioJEPA(adata, n_latent=4)
        >>> model.train(max_epochs=1, batch_size=16, enable_progress_bar=False)
        >>> emb = model.get_perturbation_embedding()
        >>> emb.n_vars, list(emb.obs.columns)
        (4, ['condition'])
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
