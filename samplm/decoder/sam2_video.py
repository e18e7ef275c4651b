"""``CustomSam2VideoPredictor``: sam2's ``SAM2VideoPredictor`` whose answers to a user's clicks come from the
active adapter; propagation then carries that mask through the video as usual.

SAM 2's video predictor answers clicks and tracks in one method, ``SAM2Base._forward_sam_heads``: with point
prompts (a frame the user clicked or boxed) it runs the prompt encoder and the mask decoder on the frame's
features; without them (frames reached by propagation) the decoder sees only the memory-conditioned
features. With an adapter active, a call that carries the user's prompts runs the decoder as
:class:`AdaptedSam2Decoder`: the adapter's PLM shifts the sparse tokens, the frozen decoder runs, and
:meth:`~samplm.adapter.plm.PromptLearningModule.adjust_outputs` adjusts its masks and scores, the same rule
as every other path. Everything after the decoder (object-score gating, the best mask by the adjusted
scores, the object pointer, memory encoding) is upstream's. Propagated frames use plain SAM 2.

On the first clicked frame the features are the image features plus ``no_mem_embed``, as in the image
predictor, so the adapter's mask there is :class:`~samplm.decoder.sam2_predictor.CustomSam2Predictor`'s.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from sam2.build_sam import build_sam2_video_predictor
from sam2.sam2_video_predictor import SAM2VideoPredictor
from torch import Tensor, nn

from ..adapter.plm import PromptLearningModule
from ..base.checkpoint import load_state_dict
from ..base.meta_sam2 import SAM2_CONFIGS, SAM2_MODEL_TYPES, Sam2Base
from .adapter_methods import AdapterMethods
from .adapters import AdapterRegistry, require_finite_outputs
from .image_state import ImageState


class AdaptedSam2Decoder(nn.Module):
    """SAM 2's mask decoder with an adapter in front (same call and returns as ``MaskDecoder.forward``).

    The PLM's context and the score readout read the ``image_embeddings`` the decoder is given: on a
    clicked frame after the first, SAM 2's memory-conditioned features, not the plain image embedding the
    adapter was trained and its readout fitted on.

    Args:
        decoder: the frozen ``sam2`` ``MaskDecoder``.
        plm: the adapter's prompt learning module.
        name: the adapter's name (in the error when its outputs are not finite).
    """

    def __init__(self, decoder: nn.Module, plm: PromptLearningModule, name: str) -> None:
        super().__init__()
        self.decoder, self.plm, self.name = decoder, plm, name

    def forward(
        self,
        image_embeddings: Tensor,
        image_pe: Tensor,
        sparse_prompt_embeddings: Tensor,
        dense_prompt_embeddings: Tensor,
        multimask_output: bool,
        repeat_image: bool,
        high_res_features: list[Tensor] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(masks B x C x 4h x 4w, scores B x C, output tokens, object-score logits B x 1)``."""
        sparse = self.plm(sparse_prompt_embeddings, image_embeddings, image_pe)
        masks, scores, tokens, object_scores = self.decoder(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense_prompt_embeddings,
            multimask_output=multimask_output,
            repeat_image=repeat_image,
            high_res_features=high_res_features,
        )
        masks, scores = self.plm.adjust_outputs(masks, scores, multimask_output, image_embeddings)
        require_finite_outputs(self.name, masks, scores)
        return masks, scores, tokens, object_scores


class CustomSam2VideoPredictor(AdapterMethods, SAM2VideoPredictor):
    """``SAM2VideoPredictor`` with the adapter methods of the image predictors; build it with
    :func:`build_sam2_video_adapter_predictor` (or hydra, ``model._target_`` set to this class).

    Clicks and boxes given with ``add_new_points_or_box`` are answered by the active adapter;
    ``propagate_in_video`` is upstream's.
    """

    def __init__(self, *args: Any, strict: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        base = Sam2Base(self)
        self._adapters = AdapterRegistry(base)
        self._images = ImageState(base, self.image_encoder)
        self.strict = strict

    def _forward_sam_heads(
        self,
        backbone_features: Tensor,
        point_inputs: dict[str, Tensor] | None = None,
        mask_inputs: Tensor | None = None,
        high_res_features: list[Tensor] | None = None,
        multimask_output: bool = False,
    ) -> tuple[Tensor, ...]:
        """Upstream's method, with the active adapter in the decoder when the user's prompts are given."""
        name = self.active_adapter
        with self._decoder_for(name if point_inputs is not None else None):
            return super()._forward_sam_heads(
                backbone_features, point_inputs, mask_inputs, high_res_features, multimask_output
            )

    @contextlib.contextmanager
    def _decoder_for(self, name: str | None) -> Iterator[None]:
        """Inside, ``sam_mask_decoder`` is the adapter ``name``'s :class:`AdaptedSam2Decoder` (``None``: as
        it is); the frozen decoder is back on exit, also after an error."""
        if name is None:
            yield
            return
        decoder = self.sam_mask_decoder
        self.sam_mask_decoder = AdaptedSam2Decoder(decoder, self._placed(name).plm, name)
        try:
            yield
        finally:
            self.sam_mask_decoder = decoder


def build_sam2_video_adapter_predictor(
    model_type: str, checkpoint: str | os.PathLike[str] | None = None, *, strict: bool = False
) -> CustomSam2VideoPredictor:
    """:class:`CustomSam2VideoPredictor` of ``model_type`` (:data:`~samplm.base.meta_sam2.SAM2_MODEL_TYPES`)
    from sam2's own config and ``build_sam2_video_predictor`` (its video post-processing settings),
    ``checkpoint`` (Meta's ``.pt``, read with ``weights_only=True``) loaded strictly; random weights when
    ``None``. Eval mode, on the CPU."""
    if model_type not in SAM2_CONFIGS:
        raise ValueError(f"unknown SAM 2 model type {model_type!r}; choose one of {SAM2_MODEL_TYPES}")
    target = f"{CustomSam2VideoPredictor.__module__}.{CustomSam2VideoPredictor.__qualname__}"
    overrides = [f"++model._target_={target}", f"++model.strict={strict}"]
    model = build_sam2_video_predictor(SAM2_CONFIGS[model_type], None, "cpu", hydra_overrides_extra=overrides)
    if checkpoint is not None:
        model.load_state_dict(load_state_dict(checkpoint), strict=True)
    return model.eval()
