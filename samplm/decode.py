"""The one forward path: prompt encoder -> PLM -> frozen mask decoder.

The predictor, training and evaluation all call :func:`decode_prompts`; only gradients and caching
differ. With ``plm=None`` it performs exactly the calls ``SamPredictor.predict_torch`` performs, so
its outputs are bit-identical to plain SAM.
"""

from __future__ import annotations

from dataclasses import dataclass

from segment_anything.modeling import Sam
from torch import Tensor

from .modeling import ImageContext, PromptLearningModule


@dataclass(frozen=True)
class DecoderOutput:
    """Raw decoder outputs for B prompts on one image.

    Attributes:
        low_res_logits: ``B x C x 4h x 4w`` mask logits (SAM: ``B x C x 256 x 256``), C = 3 with
            multimask output else 1.
        iou_predictions: ``B x C`` predicted IoU of each mask.
        sparse_embeddings: ``B x N x 256`` prompt tokens given to the decoder (after the PLM).
    """

    low_res_logits: Tensor
    iou_predictions: Tensor
    sparse_embeddings: Tensor


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

    Returns:
        A :class:`DecoderOutput`.
    """
    points = (point_coords, point_labels) if point_coords is not None else None
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    image_pe = sam.prompt_encoder.get_dense_pe()
    if plm is not None:
        if context is None:
            context = plm.image_context(image_embedding, image_pe)
        sparse = plm(sparse, context=context)
    low_res, iou = sam.mask_decoder(
        image_embeddings=image_embedding,
        image_pe=image_pe,
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
    )
    return DecoderOutput(low_res_logits=low_res, iou_predictions=iou, sparse_embeddings=sparse)
