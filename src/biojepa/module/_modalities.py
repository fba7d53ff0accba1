"""Several modalities in one latent: per-modality normalization, missing modalities, cross-modal masking, heads."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .._constants import INPUT_SCALES, MODULE_KEYS
from ..data import Modality
from ..nn import ExpressionHead, masked_mse


class ModalityMixin:
    """Multi-modal parts of :class:`~biojepa.module.BioJEPAModule` (inactive with a single modality).

    The features of every modality are concatenated (RNA first) and tokenized by one tokenizer whose modules never
    mix modalities, so each modality has its own tokens in the shared token space and one encoder reads them all.
    A modality missing in a cell (an all-NaN row) is masked: its tokens are neither attended to, pooled, nor
    predicted. With probability ``cross_modal_prob`` a training step hides one whole modality from the context
    encoder; the predictor must then predict that modality's target tokens from the others (cross-modal JEPA),
    and the latent of the remaining modalities is regressed on the full cell's target latent so that cells
    measured with fewer modalities land where they would with all of them.
    """

    def _init_modalities(
        self,
        modalities: Sequence | None,
        n_input: int,
        module_index: torch.Tensor,
        cross_modal_prob: float,
        cross_modal_weight: float,
        modality_weight: float,
    ) -> None:
        self.modalities = [Modality(*m) for m in modalities] if modalities else None
        if self.modalities is None:
            return
        sizes = [m.n_features for m in self.modalities]
        if sum(sizes) != n_input:
            raise ValueError(f"Modality sizes {sizes} do not add up to the {n_input} input features.")
        offsets = torch.cumsum(torch.tensor([0, *sizes]), 0)
        first = torch.as_tensor(module_index)[:, 0].long()  # a module's features all belong to one modality
        self.register_buffer("module_modality", torch.bucketize(first, offsets[1:], right=True))
        self.modality_offsets = offsets.tolist()
        self.cross_modal_prob, self.cross_modal_weight = cross_modal_prob, cross_modal_weight
        self.modality_weight = modality_weight
        self.modality_heads = nn.ModuleDict(
            {m.kind: ExpressionHead(self.n_latent, m.n_features) for m in self.modalities[1:]}
        )

    def modality_index(self, kind: str) -> int:
        """Position of modality ``kind`` among the registered ones."""
        kinds = [m.kind for m in self.modalities or []]
        if kind not in kinds:
            raise ValueError(f"Modality {kind!r} is not registered with this model (registered: {kinds}).")
        return kinds.index(kind)

    def normalize_inputs(self, x, size_factor=None, protein=None, atac=None):
        """Normalized, standardized features of every modality ``(B, G)`` and which modalities each cell has."""
        if self.modalities is None:
            return self.normalize(x, size_factor), None
        data = {"rna": x, "protein": protein, "atac": atac}
        parts, present = [], []
        for mod in self.modalities:
            v = data[mod.kind].float()
            has = ~torch.isnan(v).all(1)
            v = torch.nan_to_num(v, nan=0.0)
            if mod.input_scale == INPUT_SCALES.COUNTS:
                if mod.kind == "protein":  # centred log-ratio
                    v = torch.log1p(v)
                    v = v - v.mean(1, keepdim=True)
                else:
                    lib = v.sum(1, keepdim=True)
                    if mod.kind == "rna" and size_factor is not None:
                        lib = size_factor.view(-1, 1).float()
                    v = torch.log1p(v * (1e4 / lib.clamp(min=1e-8)))
            parts.append(v)
            present.append(has)
        x = (torch.cat(parts, 1) - self.gene_mean).div_(self.gene_std).clamp_(-10.0, 10.0)
        return x, torch.stack(present, 1)

    def token_mask(self, present: torch.Tensor | None, drop: Sequence[str] = ()) -> torch.Tensor | None:
        """``(B, T)`` modules each cell has, without the modalities in ``drop``; ``None`` with one modality."""
        if present is None:
            return None
        mask = present[:, self.module_modality]
        for kind in drop:
            mask = mask & (self.module_modality != self.modality_index(kind))
        return mask

    def cross_modal_masks(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """With probability ``cross_modal_prob`` in training: hide one whole modality (context, target, index)."""
        if self.modalities is None or len(self.modalities) < 2 or not self.training:
            return None
        if float(torch.rand(())) >= self.cross_modal_prob:
            return None
        m = int(torch.randint(len(self.modalities), ()))
        hidden = self.module_modality == m
        masks_pred = hidden.nonzero().view(1, -1).expand(batch_size, -1)
        masks_enc = (~hidden).nonzero().view(1, -1).expand(batch_size, -1)
        return masks_enc, masks_pred, m

    def modality_losses(self, inference_outputs, generative_outputs, z, target_z) -> dict[str, torch.Tensor]:
        """Cross-modal latent regression (on cross-modal steps) and the modality heads' losses."""
        present = inference_outputs[MODULE_KEYS.PRESENT]
        cross = z.sum() * 0.0
        if MODULE_KEYS.CROSS in inference_outputs:
            m = int(inference_outputs[MODULE_KEYS.CROSS])
            rows = present[:, m] & inference_outputs[MODULE_KEYS.PRED_WEIGHT].any(1)
            rows = rows & present[:, [i for i in range(present.shape[1]) if i != m]].any(1)
            cross = masked_mse(z, target_z.detach(), rows)
        heads = z.sum() * 0.0
        x = inference_outputs[MODULE_KEYS.X_NORM]
        hidden = int(inference_outputs[MODULE_KEYS.CROSS]) if MODULE_KEYS.CROSS in inference_outputs else -1
        for kind, pred in generative_outputs.get(MODULE_KEYS.MODALITY_PRED, {}).items():
            i = self.modality_index(kind)
            start, stop = self.modality_offsets[i], self.modality_offsets[i + 1]
            heads = heads + masked_mse(pred, x[:, start:stop], present[:, i])
            if i == hidden:  # also read the modality from a latent that never saw it, as at prediction time
                from_others = self.modality_heads[kind](z.detach())
                heads = heads + masked_mse(from_others, x[:, start:stop], present[:, i])
        return {"cross": cross, "heads": heads}
