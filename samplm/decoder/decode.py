"""The one forward path: prompt encoder -> PLM -> frozen mask decoder, on any base.

The predictors, training and evaluation all call :func:`decode_prompts`; only gradients and caching
differ. The base (:class:`~samplm.base.interface.PromptableBase`; a bare ``Sam`` or ``sam2`` model is taken
too) supplies the prompt encoder and the raw decoder; here the PLM shifts the sparse tokens between them
and :meth:`~samplm.adapter.plm.PromptLearningModule.adjust_outputs` adjusts what the decoder returns. With
``plm=None`` the base's calls are exactly its upstream predictor's, so outputs are bit-identical.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from ..adapter import ImageContext, PromptLearningModule
from ..base.bases import as_base
from ..base.interface import DecoderOutput, ImageFeatures

__all__ = ["DecoderOutput", "ImageFeatures", "as_features", "decode_prompts", "decode_with_adapters"]


def as_features(features: Tensor | ImageFeatures) -> ImageFeatures:
    """An image embedding (``b x C x h x w``) or :class:`ImageFeatures` as :class:`ImageFeatures`."""
    return features if isinstance(features, ImageFeatures) else ImageFeatures(features)


def decode_prompts(
    sam: Any,
    image_embedding: Tensor | ImageFeatures,
    *,
    point_coords: Tensor | None = None,
    point_labels: Tensor | None = None,
    boxes: Tensor | None = None,
    mask_input: Tensor | None = None,
    multimask_output: bool = True,
    plm: PromptLearningModule | None = None,
    context: ImageContext | None = None,
    return_image_features: bool = False,
) -> DecoderOutput:
    """Run SAM's prompt encoder, the PLM (if any) and SAM's mask decoder for one image.

    Coordinates are in SAM's resized input frame (after ``ResizeLongestSide``), not the original
    image: apply ``predictor.transform.apply_coords`` / ``apply_boxes`` first.

    Args:
        sam: the (frozen) base: a :class:`~samplm.base.interface.PromptableBase`, a ``Sam`` or a ``sam2``
            model.
        image_embedding: ``1 x 256 x h x w`` embedding of the image (SAM: ``1 x 256 x 64 x 64``), or the
            base's :class:`ImageFeatures` (SAM 2: with its high-resolution features).
        point_coords: ``B x N x 2`` XY pixel coordinates, or ``None``.
        point_labels: ``B x N`` labels (1 foreground, 0 background, -1 ignored).
        boxes: ``B x 4`` XYXY boxes, or ``None``.
        mask_input: ``B x 1 x 4h x 4w`` low-resolution mask logits, or ``None``.
        multimask_output: return SAM's three masks (True) or its single-mask output (False).
        plm: prompt learning module; ``None`` runs plain SAM.
        context: ``plm.image_context(image_embedding, dense_pe)`` if already computed.
        return_image_features: also return the two-way transformer's image-side output
            (:attr:`DecoderOutput.image_features`, what the PMM samples).

    Returns:
        A :class:`DecoderOutput`.
    """
    base, features = as_base(sam), as_features(image_embedding)
    sparse, dense = base.encode_prompts(point_coords, point_labels, boxes, mask_input)
    if plm is not None:
        if context is None:
            context = plm.image_context(features.embedding, base.dense_pe())
        sparse = plm(sparse, context=context)
    output = base.run_decoder(features, sparse, dense, multimask_output, return_image_features)
    if plm is None:
        return output
    logits, scores = plm.adjust_outputs(
        output.low_res_logits, output.iou_predictions, multimask_output, features.embedding
    )
    return dataclasses.replace(output, low_res_logits=logits, iou_predictions=scores)


def decode_with_adapters(
    sam: Any,
    image_embedding: Tensor | ImageFeatures,
    plms: Sequence[PromptLearningModule | None],
    contexts: Sequence[ImageContext | None],
    *,
    point_coords: Tensor | None = None,
    point_labels: Tensor | None = None,
    boxes: Tensor | None = None,
    mask_input: Tensor | None = None,
    multimask_output: bool = True,
    return_image_features: bool = False,
    chunk: int | None = None,
) -> DecoderOutput:
    """One prompt answered by ``A`` adapters in batched decoder calls.

    SAM's prompt encoder runs once; each PLM (``None``: plain SAM) turns its tokens into its own; the
    ``A`` token sets go through the mask decoder as a batch over the one image embedding, ``chunk`` of
    them per call (``None``: all in one call). Row ``a`` of the outputs equals :func:`decode_prompts`
    with ``plms[a]`` within float tolerance.

    Args:
        sam, image_embedding: as :func:`decode_prompts`.
        plms: the ``A`` prompt learning modules.
        contexts: ``plm.image_context(image_embedding, dense_pe)`` of each (``None``: computed here).
        point_coords ... mask_input: ONE prompt, as :func:`decode_prompts` with batch 1
            (``1 x N x 2``, ``1 x N``, ``1 x 4``, ``1 x 1 x 4h x 4w``).
        multimask_output: three masks (True) or one (False).
        return_image_features: also return each row's decoder image features (``A x 256 x h x w``).
        chunk: most token sets per decoder call. On a CPU the decoder's image-side work grows with the
            batch, and batches of a few keep its ``chunk x 256 x h x w`` activations in cache.

    Returns:
        A :class:`DecoderOutput` with batch ``A`` (``A x C x 4h x 4w`` logits).
    """
    base, features = as_base(sam), as_features(image_embedding)
    sparse, dense = base.encode_prompts(point_coords, point_labels, boxes, mask_input)
    if sparse.shape[0] != 1:
        raise ValueError(f"decode_with_adapters answers one prompt; got a batch of {sparse.shape[0]}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of adapters per decoder call, got {chunk}")
    stacked = _adapter_tokens(plms, contexts, sparse, features.embedding, base.dense_pe())
    parts = [
        base.run_decoder(
            features, rows, dense.expand(len(rows), -1, -1, -1), multimask_output, return_image_features
        )
        for rows in stacked.split(chunk or len(plms))
    ]
    image_features = torch.cat([p.image_features for p in parts]) if return_image_features else None
    logits, scores = _adjusted_outputs(
        plms,
        torch.cat([p.low_res_logits for p in parts]),
        torch.cat([p.iou_predictions for p in parts]),
        multimask_output,
        features.embedding,
    )
    return DecoderOutput(logits, scores, stacked, image_features)


def _adapter_tokens(
    plms: Sequence[PromptLearningModule | None],
    contexts: Sequence[ImageContext | None],
    sparse: Tensor,
    image_embedding: Tensor,
    image_pe: Tensor,
) -> Tensor:
    """``A x N x 256``: the ``1 x N x 256`` sparse tokens of one prompt as each PLM turns them (``None``:
    unchanged), with each PLM's image context (computed here where ``contexts`` has ``None``)."""
    return torch.cat(
        [
            sparse
            if plm is None
            else plm(sparse, context=context or plm.image_context(image_embedding, image_pe))
            for plm, context in zip(plms, contexts, strict=True)
        ]
    )


def _adjusted_outputs(
    plms: Sequence[PromptLearningModule | None],
    logits: Tensor,
    iou: Tensor,
    multimask_output: bool,
    image_embedding: Tensor,
) -> tuple[Tensor, Tensor]:
    """Row ``a`` of the ``A x C x h x w`` logits and ``A x C`` IoU predictions as ``plms[a]`` gives them
    (:meth:`PromptLearningModule.adjust_outputs` on the one ``1 x E x h' x w'`` image embedding;
    unchanged for plain SAM)."""
    rows = [
        (row_logits, row_iou)
        if plm is None
        else plm.adjust_outputs(row_logits, row_iou, multimask_output, image_embedding)
        for plm, row_logits, row_iou in zip(plms, logits.split(1), iou.split(1), strict=True)
    ]
    return torch.cat([row[0] for row in rows]), torch.cat([row[1] for row in rows])
