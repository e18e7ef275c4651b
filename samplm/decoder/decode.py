"""The one forward path: prompt encoder -> PLM -> frozen mask decoder.

The predictor, training and evaluation all call :func:`decode_prompts`; only gradients and caching
differ. With ``plm=None`` it performs exactly the calls ``SamPredictor.predict_torch`` performs, so
its outputs are bit-identical to plain SAM. Asked for the decoder's image features (the PMM's input),
it runs the mask decoder's sub-modules itself, in the order ``MaskDecoder.predict_masks`` does, so the
masks stay bit-identical and no hook is installed on the shared ``Sam``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from segment_anything.modeling import MaskDecoder, Sam
from torch import Tensor

from ..adapter import ImageContext, PromptLearningModule


@dataclass(frozen=True)
class DecoderOutput:
    """Raw decoder outputs for B prompts on one image.

    Attributes:
        low_res_logits: ``B x C x 4h x 4w`` mask logits (SAM: ``B x C x 256 x 256``), C = 3 with
            multimask output else 1.
        iou_predictions: ``B x C`` predicted IoU of each mask (with a PLM, plus its score offsets).
        sparse_embeddings: ``B x N x 256`` prompt tokens given to the decoder (after the PLM).
        image_features: ``B x 256 x h x w`` image-side output of the decoder's two-way transformer
            (on the embedding's grid, covering the padded input square), when asked for; else ``None``.
    """

    low_res_logits: Tensor
    iou_predictions: Tensor
    sparse_embeddings: Tensor
    image_features: Tensor | None = None


def decode_prompts(
    sam: Sam,
    image_embedding: Tensor,
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
        sam: the (frozen) SAM.
        image_embedding: ``1 x 256 x h x w`` embedding of the image (SAM: ``1 x 256 x 64 x 64``).
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
    sparse, dense, image_pe = _encode_prompts(sam, point_coords, point_labels, boxes, mask_input)
    if plm is not None:
        if context is None:
            context = plm.image_context(image_embedding, image_pe)
        sparse = plm(sparse, context=context)
    output = _run_decoder(
        sam.mask_decoder, image_embedding, image_pe, sparse, dense, multimask_output, return_image_features
    )
    if plm is None:
        return output
    logits, scores = plm.adjust_outputs(output.low_res_logits, output.iou_predictions, multimask_output)
    return dataclasses.replace(output, low_res_logits=logits, iou_predictions=scores)


def decode_with_adapters(
    sam: Sam,
    image_embedding: Tensor,
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
    sparse, dense, image_pe = _encode_prompts(sam, point_coords, point_labels, boxes, mask_input)
    if sparse.shape[0] != 1:
        raise ValueError(f"decode_with_adapters answers one prompt; got a batch of {sparse.shape[0]}")
    if chunk is not None and chunk < 1:
        raise ValueError(f"chunk must be a positive number of adapters per decoder call, got {chunk}")
    stacked = _adapter_tokens(plms, contexts, sparse, image_embedding, image_pe)
    parts = [
        _run_decoder(
            sam.mask_decoder,
            image_embedding,
            image_pe,
            rows,
            dense.expand(len(rows), -1, -1, -1),
            multimask_output,
            return_image_features,
        )
        for rows in stacked.split(chunk or len(plms))
    ]
    features = torch.cat([p.image_features for p in parts]) if return_image_features else None
    logits, scores = _adjusted_outputs(
        plms,
        torch.cat([p.low_res_logits for p in parts]),
        torch.cat([p.iou_predictions for p in parts]),
        multimask_output,
    )
    return DecoderOutput(logits, scores, stacked, features)


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
    plms: Sequence[PromptLearningModule | None], logits: Tensor, iou: Tensor, multimask_output: bool
) -> tuple[Tensor, Tensor]:
    """Row ``a`` of the ``A x C x h x w`` logits and ``A x C`` IoU predictions as ``plms[a]`` gives them
    (:meth:`PromptLearningModule.adjust_outputs`; unchanged for plain SAM)."""
    rows = [
        (row_logits, row_iou) if plm is None else plm.adjust_outputs(row_logits, row_iou, multimask_output)
        for plm, row_logits, row_iou in zip(plms, logits.split(1), iou.split(1), strict=True)
    ]
    return torch.cat([row[0] for row in rows]), torch.cat([row[1] for row in rows])


def _run_decoder(
    decoder: MaskDecoder,
    image_embedding: Tensor,
    image_pe: Tensor,
    sparse: Tensor,
    dense: Tensor,
    multimask_output: bool,
    return_image_features: bool,
) -> DecoderOutput:
    """SAM's mask decoder on ``B`` token sets; through its sub-modules when the features are asked for."""
    if not return_image_features:
        low_res, iou = decoder(
            image_embeddings=image_embedding,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
        )
        return DecoderOutput(low_res, iou, sparse)
    low_res, iou, features = _decode_with_features(decoder, image_embedding, image_pe, sparse, dense)
    chosen = slice(1, None) if multimask_output else slice(0, 1)
    return DecoderOutput(low_res[:, chosen], iou[:, chosen], sparse, features)


def _encode_prompts(
    sam: Sam,
    point_coords: Tensor | None,
    point_labels: Tensor | None,
    boxes: Tensor | None,
    mask_input: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor]:
    """SAM's prompt encoder: ``(sparse B x N x C, dense B x C x h x w, dense positional encoding)``."""
    points = (point_coords, point_labels) if point_coords is not None else None
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    return sparse, dense, sam.prompt_encoder.get_dense_pe()


def _decode_with_features(
    decoder: MaskDecoder, image_embedding: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``MaskDecoder.predict_masks`` step by step, keeping the transformer's image-side output.

    Returns:
        ``(masks B x (1 + M) x 4h x 4w, iou B x (1 + M), image features B x 256 x h x w)`` for all
        ``1 + M`` mask tokens (single-mask output first).
    """
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    src = torch.repeat_interleave(image_embedding, tokens.shape[0], dim=0) + dense
    pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    features = src.transpose(1, 2).view(b, c, h, w)
    upscaled = decoder.output_upscaling(features)
    hyper_in = torch.stack(
        [mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, h4, w4 = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h4 * w4)).view(b, -1, h4, w4)
    return masks, decoder.iou_prediction_head(hs[:, 0, :]), features
