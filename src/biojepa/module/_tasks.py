"""The tasks the module packs into its predictor besides masked modules: perturbation sets and time series."""

from __future__ import annotations

import torch
from torch import nn

from ..data import coupled_sequences, paired_sequences, split_queries
from ..nn import ConditionEmbedding, PerturbationEffect


def _embed_or_mean(table: torch.nn.Embedding, codes: torch.Tensor) -> torch.Tensor:
    """Embeddings of ``codes`` ``(B,)``; a code of ``-1`` (unknown category) gets the mean embedding."""
    known = codes >= 0
    out = table(codes.clamp(min=0))
    return torch.where(known[:, None], out, table.weight.mean(0).expand_as(out))


class TaskSamplesMixin:
    """Perturbation and time-course samples of :class:`~biojepa.module.BioJEPAModule`."""

    def _init_perturbation(
        self,
        condition_genes,
        condition_dose,
        condition_holdout,
        condition_group_holdout,
        n_embed,
        n_extra,
        n_types,
        features,
        identity_dropout,
        dim,
        n_batch,
        n_cats,
        n_cont,
    ) -> None:
        """Perturbation effect model, the per-covariate-group control latents and the interaction's strength."""
        self.register_buffer("condition_genes", torch.as_tensor(condition_genes).long())
        holdout = torch.zeros(len(condition_genes), dtype=torch.bool)
        if condition_holdout is not None:
            holdout = torch.as_tensor(condition_holdout).bool()
        self.register_buffer("condition_holdout", holdout)
        pairs = torch.zeros((0, 2), dtype=torch.long)
        if condition_group_holdout is not None:
            pairs = torch.as_tensor(condition_group_holdout).long().reshape(-1, 2)
        # one key per held-out (label, covariate group) pair: a set of pairs, not a dense n_labels x n_groups table
        self.register_buffer("pair_holdout", pairs[:, 0] * self.n_groups + pairs[:, 1])
        # (learned-effect share, own-part share) chosen after training on those pairs; NaN: not chosen
        self.register_buffer("context_transfer", torch.full((2,), float("nan")))
        self.register_buffer("interaction_scale", torch.tensor(0.0))  # chosen after training on held-out combinations
        self.register_buffer("novelty_scale", torch.tensor(1.0))  # chosen after training on held-out singles
        self.register_buffer(
            "condition_dose", torch.as_tensor(condition_dose).float() if condition_dose is not None else None
        )
        self.register_buffer("vocabulary_features", torch.as_tensor(features).float() if features is not None else None)
        dose_center = 0.0
        if condition_dose is not None:
            doses = torch.as_tensor(condition_dose).float()
            used = (torch.as_tensor(condition_genes) >= 0)[:, None, :].expand_as(doses)
            positive = doses[used & (doses > 0)]
            dose_center = float(positive.log().median()) if positive.numel() else 0.0
        self.perturbation = PerturbationEffect(
            n_embed,
            n_extra,
            self.n_latent,
            dim,
            n_types,
            use_dose=condition_dose is not None,
            n_features=0 if features is None else int(features.shape[1]),
            identity_dropout=identity_dropout,
            dose_center=dose_center,
        )
        self.perturbation_condition = ConditionEmbedding(dim, n_batch, n_cats, n_cont)
        self.context_projection = nn.Linear(self.n_latent, dim)
        self.register_buffer("control_latent", torch.zeros(self.n_groups, self.n_latent))
        self.register_buffer("control_seen", torch.zeros(self.n_groups))

    def group_index(self, batch_index, cat_covs=None) -> torch.Tensor:
        """Covariate-group code of each cell: mixed radix over the batch and the categorical covariates."""
        cols = [batch_index.long().view(-1, 1)]
        if cat_covs is not None and cat_covs.shape[-1] > 0:
            cols.append(cat_covs.long())
        return (torch.cat(cols, 1) * self.group_strides).sum(1)

    def perturbation_context(self, control_z, batch_index=None, cat_covs=None, cont_covs=None) -> torch.Tensor:
        """Context vector of the effect model: the control population's latent plus the covariates.

        A covariate code of ``-1`` (a category never seen in training, e.g. a new cell line) contributes the mean
        embedding of the known categories, so the context of a new cell line comes from its control latent.
        """
        context = self.context_projection(control_z)
        embed = self.perturbation_condition
        if embed.is_empty:
            return context
        if embed.batch is not None and batch_index is not None:
            context = context + _embed_or_mean(embed.batch, batch_index.long().view(-1))
        for i, table in enumerate(embed.cats):
            context = context + _embed_or_mean(table, cat_covs[:, i].long())
        if embed.cont is not None and cont_covs is not None:
            context = context + embed.cont(cont_covs.float())
        return context

    def lookup_condition(self, codes, dose_codes=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vocabulary indices ``(B, K)`` and doses of registered perturbation/dose category codes."""
        codes = codes.long().view(-1)
        genes = self.condition_genes[codes]
        dose = None
        if self.condition_dose is not None and dose_codes is not None:
            dose = self.condition_dose[codes, dose_codes.long().view(-1)]
        return genes, dose

    def _perturbation_samples(self, z, target_z, perturbation, dose, ptype, group, batch_index, cat_covs, cont_covs):
        """Per-gene effects of each cell's perturbation and the predictor samples of its multi-gene sets.

        Action-conditioned JEPA: the perturbed cell's target latent is predicted as the running mean of its covariate
        group's control target latents plus the effects; the effects are conditioned on a context built from the mean
        online latent ``z`` of the group's control cells in the minibatch (the running mean when it has none), so
        the perturbation loss shapes the encoder while the shift stays measured in the target space. Cells of held-out
        combinations (``condition_holdout``) get no loss: they choose the interaction's strength after training; nor do
        the cells of singles held out in one covariate group (``pair_holdout``), which choose how far an effect
        carries to a group that did not observe it.
        """
        genes, doses = self.lookup_condition(perturbation, dose)
        is_control = (genes < 0).all(1)
        if self.training:
            self._update_control_latents(target_z, group, is_control)
        control_z = self.control_latent[group]  # the base point: target space, where the shift is measured
        online_z = control_z
        if bool(is_control.any()):  # matched control cells of the minibatch, through the online encoder
            sums = torch.zeros_like(self.control_latent).index_add(0, group[is_control], z[is_control])
            counts = torch.zeros_like(self.control_seen).index_add(0, group[is_control], is_control[is_control].float())
            in_batch = counts[group] > 0
            batch_mean = sums[group] / counts[group].clamp(min=1.0)[:, None]
            online_z = torch.where(in_batch[:, None], batch_mean, control_z)
        context = self.perturbation_context(online_z, batch_index, cat_covs, cont_covs)
        gene_embedding = self.context_encoder.tokenizer.gene_embedding
        tokens = self.perturbation.tokens(gene_embedding, genes, ptype, self.vocabulary_features_of(genes))
        valid = genes >= 0
        gate = self.perturbation.gates(tokens, doses)
        multi = valid.sum(1) >= 2
        segment = None
        if bool(multi.any()):
            segment = self.predictor.perturbation_segment(context[multi], tokens[multi], valid[multi])
        strength = self.perturbation.interaction_gate(gate, valid)
        return {
            "effects": self.perturbation.additive(tokens, valid, context, gate),
            "interaction_gate": None if strength is None else strength[multi],
            "control_z": control_z,
            "rows": valid.any(1)
            & (self.control_seen[group] > 0)
            & ~self.condition_holdout[perturbation.long().view(-1)]
            & ~torch.isin(perturbation.long().view(-1) * self.n_groups + group, self.pair_holdout),
            "multi": multi,
            "segment": segment,
        }

    def vocabulary_features_of(self, genes: torch.Tensor) -> torch.Tensor | None:
        """Feature rows ``(B, K, n_features)`` of vocabulary indices (zeros at padding); ``None`` without features."""
        if self.vocabulary_features is None:
            return None
        rows = self.vocabulary_features[genes.clamp(min=0)]
        return torch.where((genes >= 0)[..., None], rows, 0.0)

    def perturbation_effect(self, genes, context, dose=None, ptype=None, features=None) -> dict[str, torch.Tensor]:
        """Latent shift of perturbation sets ``genes`` ``(B, K)`` in ``context``.

        See :class:`~biojepa.nn.PerturbationEffect`; ``features`` ``(B, K, n_features)`` default to the vocabulary's
        feature rows and must be given for ``FEATURES_ONLY`` entries.
        """

        def interaction(ctx, tokens, valid):
            segment = self.predictor.perturbation_segment(ctx, tokens, valid)
            return self.predictor.interaction_output(self.predictor([segment])[0], segment.lengths)

        if features is None:
            features = self.vocabulary_features_of(genes)
        gene_embedding = self.context_encoder.tokenizer.gene_embedding
        return self.perturbation(
            gene_embedding, genes, context, dose, ptype, interaction=interaction, features=features
        )

    def _time_samples(self, z, target_z, time, sample, group, perturbation, condition):
        """Time-series samples of the minibatch: sequences, queried points, targets and the smoothness term."""
        time = time.view(-1).float()
        with torch.no_grad():
            if self.paired and sample is not None:
                seqs = paired_sequences(sample, time)
            else:
                code = torch.zeros_like(time, dtype=torch.long) if group is None else group
                if perturbation is not None:  # never couple cells of different perturbations
                    code = code * (int(perturbation.max()) + 1) + perturbation.view(-1).long()
                seqs = coupled_sequences(time, code, target_z, epsilon=self.coupling_epsilon)
            if seqs.lengths.numel() == 0:
                return None
            query = split_queries(seqs)
            t = time[seqs.cells]
            seq_id = seqs.sequence_of_token()
            positions = (t - t[seqs.first_token()][seq_id]) / self.time_scale
        zs = z[seqs.cells]
        cond = condition[seqs.cells] if condition is not None else None
        segment = self.predictor.time_segment(zs, query, seqs.lengths, positions, cond)
        smooth = z.sum() * 0.0
        if self.smoothness_weight > 0:
            dt = positions[1:] - positions[:-1]
            pair = (seq_id[1:] == seq_id[:-1]) & (dt > 0)
            velocity = (zs[1:] - zs[:-1]) / dt.clamp(min=1e-6)[:, None]
            both = pair[1:] & pair[:-1]
            if bool(both.any()):
                smooth = (velocity[1:] - velocity[:-1])[both].pow(2).sum(1).mean()
        return {"segment": segment, "query": query, "target": target_z[seqs.cells[query]], "smoothness": smooth}

    @torch.no_grad()
    def _update_control_latents(self, target_z, group, is_control, momentum: float = 0.9) -> None:
        """Running mean of the target latents of control cells, per covariate group."""
        if not bool(is_control.any()):
            return
        g, zc = group[is_control], target_z[is_control]
        sums = torch.zeros_like(self.control_latent).index_add_(0, g, zc)
        counts = torch.zeros_like(self.control_seen).index_add_(0, g, torch.ones_like(g, dtype=zc.dtype))
        present = counts > 0
        means = sums[present] / counts[present, None]
        first = self.control_seen[present] == 0
        old = self.control_latent[present]
        self.control_latent[present] = torch.where(first[:, None], means, momentum * old + (1 - momentum) * means)
        self.control_seen[present] += counts[present]
