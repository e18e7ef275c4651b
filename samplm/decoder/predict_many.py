"""One prompt through several adapters: the work behind ``CustomSamPredictor.predict_many``.

SAM's prompt encoder runs once, each adapter's PLM turns the prompt's tokens into its own
(:func:`~samplm.decoder.decode.decode_with_adapters`), the mask decoder runs on batches of adapters, then
each adapter's masks are checked, upscaled and (where asked) PMM-refined one adapter at a time.

Frames: the prompt is given in SAM's resized input frame (batch of one); each answer is in the original
image, as ``SamPredictor.predict`` returns it: masks ``C x H x W``, scores ``C``, low-res logits
``C x 4h x 4w`` (SAM: ``C x 256 x 256``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..adapter import ImageContext
from ..adapter.prompt_adapter import PromptAdapter
from ..base.bases import as_base
from ..base.interface import ImageFeatures
from ..errors import AdapterNameError
from ..utils.checks import shown
from .adapters import require_finite_outputs
from .decode import DecoderOutput, decode_with_adapters

if TYPE_CHECKING:
    from ..refine.polygons import RefinedMask

# Image-side cells per decoder call in predict_many on a CPU (two of SAM's 64 x 64 grids).
CPU_DECODER_CELLS = 2 * 64 * 64

Answer = tuple[np.ndarray, np.ndarray, np.ndarray]
"""``(masks C x H x W, scores C, low_res_logits C x 4h x 4w)`` of one adapter, as ``predict`` returns them."""


@dataclass(frozen=True)
class AdapterRow:
    """One adapter of a several-adapter call (one row of the decoder's batch).

    Attributes:
        name: the adapter's name, ``None`` for plain SAM.
        adapter: the adapter, on the SAM's device and dtype (``None`` for plain SAM).
        context: its PLM's per-image keys/values on the current image (``None`` for plain SAM).
        refine: replace its masks by their PMM polygon refinement (only for an adapter with a PMM).
    """

    name: str | None
    adapter: PromptAdapter | None
    context: ImageContext | None
    refine: bool = False


def adapter_names(adapters: Any, loaded: Sequence[str]) -> list[str | None]:
    """The ``adapters`` argument of ``predict_many`` as a list (``None``: every ``loaded`` name, in order);
    the names themselves are checked when they are looked up.

    Raises:
        AdapterNameError: ``adapters`` is a bare string, or not a sequence at all.
    """
    if isinstance(adapters, str):
        raise AdapterNameError(
            f"predict_many takes a list of adapter names, got the string {shown(adapters)}: pass "
            f"[{shown(adapters)}]"
        )
    try:
        return list(loaded if adapters is None else adapters)
    except TypeError as exc:  # a number, or another object that is not a list
        message = f"predict_many takes a list of adapter names, got {shown(adapters)}"
        raise AdapterNameError(message) from exc


def adapter_chunk(sam: Any, device: torch.device) -> int | None:
    """Adapters per decoder call: all (``None``) on an accelerator; on a CPU as many as keep the batch's
    image-side activations near :data:`CPU_DECODER_CELLS` cells (2 for SAM's 64 x 64 grid, 8 for 32 x 32)."""
    if device.type != "cpu":
        return None
    h, w = as_base(sam).embedding_size
    return max(1, CPU_DECODER_CELLS // (h * w))


def answer_rows(
    sam: Any,
    features: torch.Tensor | ImageFeatures,
    rows: Sequence[AdapterRow],
    prompts: dict[str, torch.Tensor | None],
    *,
    multimask_output: bool,
    chunk: int | None,
    upscale: Callable[[torch.Tensor], torch.Tensor],
    refine: Callable[[PromptAdapter, np.ndarray, torch.Tensor], list[RefinedMask]],
) -> dict[str | None, Answer]:
    """Decode one prompt through every row's adapter and return each row's answer.

    Args:
        sam: the base (a ``Sam``, a ``sam2`` model or a :class:`~samplm.base.interface.PromptableBase`).
        features: ``1 x 256 x h x w`` embedding of the current image, or its :class:`ImageFeatures`.
        rows: the adapters, in the order of the result.
        prompts: ``point_coords`` ``1 x N x 2``, ``point_labels`` ``1 x N``, ``boxes`` ``1 x 4`` (XY pixels
            in the resized input frame) and ``mask_input`` ``1 x 1 x 4h x 4w``, each possibly ``None``.
        multimask_output: three masks per adapter (True) or one (False).
        chunk: adapters per decoder call (``None``: all at once), see :func:`adapter_chunk`.
        upscale: ``1 x C x 4h x 4w`` low-res logits -> ``1 x C x H x W`` masks (or logits) of the image.
        refine: ``(adapter, masks C x H x W, its 1 x 256 x h x w decoder features)`` -> refined masks.

    Returns:
        ``{row name: (masks C x H x W, scores C, low_res_logits C x 4h x 4w)}`` in row order.

    Raises:
        AdapterOutputError: an adapter made the decoder output NaN or infinite logits.
    """
    output = decode_with_adapters(
        sam,
        features,
        [row.adapter.plm if row.adapter is not None else None for row in rows],
        [row.context for row in rows],
        **prompts,
        multimask_output=multimask_output,
        return_image_features=any(row.refine for row in rows),
        chunk=chunk,
    )
    masks = _row_masks(rows, output, upscale, refine)
    scores, low_res = output.iou_predictions.cpu().numpy(), output.low_res_logits.cpu().numpy()
    return {row.name: (masks[i], scores[i], low_res[i]) for i, row in enumerate(rows)}


def _row_masks(
    rows: Sequence[AdapterRow],
    output: DecoderOutput,
    upscale: Callable[[torch.Tensor], torch.Tensor],
    refine: Callable[[PromptAdapter, np.ndarray, torch.Tensor], list[RefinedMask]],
) -> list[np.ndarray]:
    """Each row's ``C x H x W`` masks: checked finite (adapter rows, as ``decode`` checks them), upscaled
    one adapter at a time (its ``C`` full-size masks stay in cache, where all ``A x C`` would not),
    PMM-refined where the row asks for it."""
    masks = []
    for i, (row, low_res) in enumerate(zip(rows, output.low_res_logits, strict=True)):
        if row.name is not None:
            require_finite_outputs(row.name, low_res, output.iou_predictions[i])
        mask = upscale(low_res[None])[0].cpu().numpy()
        if row.refine:
            parts = refine(row.adapter, mask, output.image_features[i : i + 1])
            mask = np.stack([r.mask for r in parts])
        masks.append(mask)
    return masks
