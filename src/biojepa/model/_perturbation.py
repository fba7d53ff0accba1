"""Perturbation prediction, perturbation embeddings and mechanism retrieval of :class:`~biojepa.BioJEPA`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from anndata import AnnData

from .._constants import INPUT_SCALES
from ..perturbation import Perturbation, PerturbationFeatures, PerturbationSetup
from ._composition import CompositionMixin

logger = logging.getLogger(__name__)


def _index(n: int) -> list[str]:
    return [str(i) for i in range(n)]


class PerturbationMixin(CompositionMixin):
    """Methods of :class:`~biojepa.BioJEPA` that need a registered ``perturbation_key``."""

    def _perturbation_module_kwargs(self, features: pd.DataFrame | None = None, identity_dropout: float = 0.5) -> dict:
        """The frozen perturbation setup's tables for the module (empty without a ``perturbation_key``)."""
        self.perturbation_setup_ = None
        self.perturbation_features_ = None
        if self.adata_manager.registry["setup_args"].get("perturbation_key") is None:
            if features is not None:
                raise ValueError(
                    "`perturbation_features` was given, but the AnnData was set up without `perturbation_key`; "
                    "call `BioJEPA.setup_anndata(adata, perturbation_key=..., control_value=...)` first."
                )
            return {}
        setup = PerturbationSetup.from_registry(self.adata_manager.registry, self.adata.var_names)
        self.perturbation_setup_ = setup
        dose = setup.condition_dose()
        kwargs = {
            "condition_genes": torch.from_numpy(setup.condition_genes()),
            "condition_dose": torch.from_numpy(dose) if dose is not None else None,
            "condition_holdout": torch.from_numpy(setup.holdout_mask()),
            "condition_group_holdout": torch.from_numpy(self._held_out_pairs(setup)),
            "n_extra_genes": len(setup.vocabulary) - setup.n_measured,
            "n_perturbation_types": len(setup.types),
        }
        if features is not None:
            table = PerturbationFeatures.from_frame(features)
            values, known = table.lookup(setup.vocabulary)
            perturbed = {g for label in setup.labels for g in setup.parse(label).genes}
            covered = sum(g in table for g in perturbed)
            logger.info(
                "perturbation_features: %d columns; %d of %d perturbed names in training have a row, "
                "%d names in the table are not in training (predicted from their features).",
                table.n_features,
                covered,
                len(perturbed),
                sum(n not in set(setup.vocabulary) for n in table.names),
            )
            if not known.any():
                raise ValueError(
                    "No name of `perturbation_features`' index is a perturbed or measured gene of the training data "
                    f"(e.g. {list(table.names[:3])} vs {sorted(perturbed)[:3]}); index the table by perturbation name."
                )
            self.perturbation_features_ = table
            kwargs.update(perturbation_features=torch.from_numpy(values), identity_dropout=identity_dropout)
        return kwargs

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
        anchor: bool = True,
        observed: bool = False,
        return_uncertainty: bool = False,
    ) -> AnnData:
        """Predict the mean expression of perturbed cells, one row per (perturbation, covariate group).

        One composition, the one the model trains with: the perturbed latent is the group's control latent plus
        the learned effect of every gene (built from its token, type and dose) plus the learned interaction of the
        set, scaled by the strength chosen on training combinations held out from the perturbation loss. The
        shift is decoded by the expression head applied to the group's control latents and the decoded change is
        added to the observed control mean. A cell line or cell type never seen in training is predicted from its
        control cells, passed as ``adata``.

        Parameters
        ----------
        perturbations
            Labels such as ``"SGK1"``, ``"KLF1+MAP2K6"`` or GEARS-style ``"MEIS1+ctrl"``; genes must be measured
            or perturbed in the training data.
        covariates
            Values of the covariate keys (``batch_key`` and ``categorical_covariate_keys``), e.g.
            ``{"cell_type": "k562"}``; keys left out take every value with control cells. ``None``: every group.
        adata
            Reference cells: the control population (and observed perturbations) of each covariate group; ``None``
            uses the training AnnData. Must have the model's genes and the perturbation column; labels and covariate
            values never seen in training are fine (a new context needs only its control cells). Not modified.
        perturbation_type
            Type for every prediction (e.g. ``"CRISPRa"``); ``None`` takes the group's only training type.
        dose
            Dose of every perturbation: one number, or one per gene joined by the delimiter in the order the genes
            are written; ``None`` means 1. Needs a model set up with ``dose_key``.
        n_control_cells
            Control cells per group whose latents are decoded.
        seed
            Seed of the control-cell subsample.
        anchor
            Anchor each gene observed alone in the group (without doses) to its observed change: its decoded
            effect is corrected by the decoding's residual on its observed single, so a seen single returns its
            observed change and a combination of seen singles starts from the additive combination of their
            observed changes, each denoised gene by gene by its sampling variance (genes a single moves within its
            noise take the change every perturbation of the group shares). With doses, a gene's residual is fitted
            over its measured doses along its learned dose-response; at an unseen dose between measured ones it is
            blended with the log-dose interpolation of the neighbouring doses' residuals, by the weight that
            predicts left-out measured doses best. A measured gene that no training perturbation touched starts
            from the trained singles' mean observed change and adds an expression prior: its own level moves as the
            trained singles moved theirs, and the genes that rise and fall with it across those singles follow, each
            part weighted as leaving every trained single out confirms. ``False``: every change is decoded from the
            model alone.
        observed
            Return the observed mean change for perturbations observed in the group (``obs["source"]`` says so).
        return_uncertainty
            Add per-gene predictive intervals and a per-prediction uncertainty score from the generative head
            (:meth:`predict_uncertainty`; needs :meth:`train_generative` first).

        Returns
        -------
        New AnnData: ``obs`` holds the perturbation column, the covariates and ``source`` (``"observed"`` where the
        row is an observed mean, ``"predicted"`` elsewhere); ``X`` the predicted mean expression on the input scale;
        ``layers["delta"]`` ``X`` minus the control mean; ``obsm["X_biojepa"]`` the predicted latent
        (target-encoder space); ``uns["interaction_scale"]`` the interaction's strength.

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
        >>> pred.shape, list(pred.layers), list(pred.obsm), pred.obs["source"].tolist()
        ((2, 100), ['delta'], ['X_biojepa'], ['predicted', 'predicted'])
        """
        if return_uncertainty:  # predict_uncertainty calls back here with return_uncertainty=False
            return self.predict_uncertainty(
                perturbations,
                covariates,
                adata,
                perturbation_type=perturbation_type,
                dose=dose,
                n_control_cells=n_control_cells,
                seed=seed,
                anchor=anchor,
                observed=observed,
            )
        self._check_if_trained(warn=True)
        setup = self._setup()
        parsed = self._parse_requests(perturbations, dose)
        adata, groups, every = self._reference(adata, covariates)
        results = self._compose(
            adata, groups, parsed, perturbation_type, n_control_cells, seed, anchor, observed, every
        )
        X, delta, latents, obs = [], [], [], []
        for r in results:
            d_log = r["d_log"]
            if self.input_scale == INPUT_SCALES.COUNTS:  # mean over control cells of their counts moved by d_log
                x, counts = np.zeros(adata.n_vars), np.zeros(adata.n_vars)
                for log, raw, lib in self._row_chunks(adata, r["group"].control):
                    x += (np.maximum(np.expm1(log + d_log), 0.0) * lib[:, None] / 1e4).sum(0)
                    counts += raw.sum(0, dtype=np.float64)
                x, counts = x / len(r["group"].control), counts / len(r["group"].control)
                X.append(x), delta.append(x - counts)
            else:
                X.append(r["log_ctrl_mean"] + d_log), delta.append(d_log)
            latents.append(r["z0"] + r["shift"].cpu().numpy()[0])
            label = r["perturbation"].label(setup.delimiter, setup.control_value)
            obs.append((label, *r["group"].values, r["source"]))
        columns = [setup.perturbation_key, *setup.covariate_keys, "source"]
        pred = AnnData(
            X=np.vstack(X).astype(np.float32),
            obs=pd.DataFrame(obs, columns=columns, index=_index(len(obs))).astype(str).astype("category"),
            var=pd.DataFrame(index=adata.var_names.copy()),
            layers={"delta": np.vstack(delta).astype(np.float32)},
            obsm={"X_biojepa": np.vstack(latents).astype(np.float32)},
        )
        pred.obs_names_make_unique()
        pred.uns["method"] = "BioJEPA"
        pred.uns["interaction_scale"] = float(self.module.interaction_scale)
        return pred

    def _parse_requests(self, perturbations, dose=None) -> list[Perturbation]:
        """Parse requested labels (with ``dose``) and check every gene has a token."""
        setup = self._setup()
        if isinstance(perturbations, str):
            perturbations = [perturbations]
        perturbations = list(perturbations)
        if not perturbations:
            raise ValueError("`perturbations` is empty; pass one or more labels, e.g. ['SGK1', 'KLF1+MAP2K6'].")
        if dose is not None and setup.dose_key is None:
            raise ValueError(
                f"dose={dose!r} was given, but the model was set up without `dose_key`, so doses cannot change "
                "predictions; set up with `dose_key=` to model doses."
            )
        parsed = [setup.parse(str(p), dose) for p in perturbations]
        for p in parsed:
            self._token_inputs(p)
        return parsed

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
        setup = self._setup()
        if perturbations is None:
            reference = self.adata if adata is None else adata
            labels = pd.unique(reference.obs[setup.perturbation_key].astype(str))
            perturbations = sorted({setup.parse(x).label(setup.delimiter, setup.control_value) for x in labels})
            perturbations = [p for p in perturbations if p != setup.control_value]
        parsed = self._parse_requests(perturbations)
        adata, groups, _ = self._reference(adata, covariates)
        results = self._compose(adata, groups, parsed, perturbation_type, n_control_cells, 0, anchor=False)
        shifts = np.vstack([r["shift"].cpu().numpy() for r in results]).astype(np.float32)
        obs = [(r["perturbation"].label(setup.delimiter, setup.control_value), *r["group"].values) for r in results]
        columns = [setup.perturbation_key, *setup.covariate_keys]
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
        setup = self._setup()
        indices = np.asarray(list(indices))
        query = self._encodable(adata, indices)
        cov_keys = list(setup.covariate_keys)
        covariates = None
        if cov_keys:
            values = adata.obs.iloc[indices][cov_keys].astype(str).drop_duplicates()
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
        out = pd.DataFrame({setup.perturbation_key: emb.obs[setup.perturbation_key].to_numpy(), "cosine": cosine})
        out = out.sort_values("cosine", ascending=False, ignore_index=True)
        out["rank"] = np.arange(1, len(out) + 1)
        return out
