"""The transformers SAM classes :class:`~samplm.hf.SamAdapterModel` wraps: one record per family, holding how
that class's ``forward`` runs each step, so the wrapper can run the same steps with the PLM in between.

==========================  ================  ==========================================================
transformers class          family            image embeddings the decoder takes
==========================  ================  ==========================================================
``SamModel``                ``sam``           ``b x C x h x w``
``Sam2Model``               ``sam2``          ``[b x C/8 x 4h x 4w, b x C/4 x 2h x 2w, b x C x h x w]``
``Sam3TrackerModel``        ``sam3_tracker``  as ``Sam2Model``
==========================  ================  ==========================================================

``SamHQModel`` is not wrapped: its decoder returns the multimask outputs sorted by predicted IoU and summed
with the HQ token's mask (or that mask alone), so the per-token outputs an adapter's score offsets and mask
mix are defined on (:meth:`~samplm.adapter.plm.PromptLearningModule.adjust_outputs`) no longer exist when it
returns.

Prompt tensors are the transformers ones: points ``b x P x K x 2`` (XY pixels in the processor's resized
frame), labels ``b x P x K``, boxes ``b x P x 4`` (XYXY); the prompt encoder's sparse tokens are
``b x P x N x C``; the decoder returns ``b x P x M x 4h x 4w`` logits and ``b x P x M`` IoU predictions.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..base.interface import SAM2_FAMILY, SAM3_TRACKER_FAMILY, SAM_FAMILY
from ..utils.fingerprint import parts_fingerprint
from .key_map import hf_to_sam_state


@dataclass(frozen=True)
class Encoded:
    """The image side of one forward call.

    Attributes:
        embeddings: the image embeddings as the family's decoder takes them (see the module docstring).
        hidden_states, attentions: the vision encoder's, when asked for (``None`` from given embeddings).
    """

    embeddings: Any
    hidden_states: tuple[Tensor, ...] | None = None
    attentions: tuple[Tensor, ...] | None = None


@dataclass(frozen=True)
class Prompts:
    """The prompt arguments of one forward call, as the family's prompt encoder takes them."""

    points: Tensor | None
    labels: Tensor | None
    boxes: Tensor | None
    masks: Tensor | None


class HFFamily(ABC):
    """How one transformers class runs its ``forward``, step by step (no step changes anything)."""

    name: str
    output_class: str  # "<module>.<class>" of the wrapped class's output

    @abstractmethod
    def encode(self, model: Any, pixel_values: Tensor, **kwargs: Any) -> Encoded:
        """The vision encoder on ``b x 3 x S x S`` pixels, as the class's ``forward`` runs it."""

    @abstractmethod
    def image_embedding(self, embeddings: Any) -> Tensor:
        """The ``b x C x h x w`` embedding the two-way transformer (and so the PLM) attends to."""

    @abstractmethod
    def prompts(self, model: Any, batch: int, embeddings: Any, prompts: Prompts) -> Prompts:
        """``prompts`` completed as the class's ``forward`` completes them before its prompt encoder."""

    @abstractmethod
    def decode(
        self, model: Any, encoded: Encoded, image_pe: Tensor, sparse: Tensor | None, dense: Tensor, **kw: Any
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        """The frozen mask decoder: ``(b x P x M x 4h x 4w logits, b x P x M IoU, further outputs)``.

        ``kw`` holds ``multimask_output``, ``attention_similarity``, ``target_embedding`` and the
        transformers keyword arguments, passed on as the class's ``forward`` passes them.
        """

    @abstractmethod
    def fingerprint(self, model: Any) -> str:
        """``"sha256:<hex>"`` of the prompt encoder + mask decoder weights."""

    def output(self, logits: Tensor, iou: Tensor, further: dict[str, Tensor], encoded: Encoded) -> Any:
        """The class's own output object (so the processors' ``post_process_masks`` take it)."""
        module, _, name = self.output_class.rpartition(".")
        return getattr(importlib.import_module(module), name)(
            iou_scores=iou,
            pred_masks=logits,
            vision_hidden_states=encoded.hidden_states,
            vision_attentions=encoded.attentions,
            **further,
        )


def _default_labels(prompts: Prompts) -> Prompts:
    """Every point a foreground click when no labels are given (as each class's ``forward``)."""
    if prompts.points is None or prompts.labels is not None:
        return prompts
    labels = torch.ones_like(prompts.points[:, :, :, 0], dtype=torch.int, device=prompts.points.device)
    return Prompts(prompts.points, labels, prompts.boxes, prompts.masks)


class SamFamily(HFFamily):
    """``SamModel``: SAM 1. Its fingerprint is ``segment_anything``'s (:func:`sam_fingerprint`) of the same
    weights: the state is hashed under ``segment_anything``'s names (:mod:`samplm.hf.key_map`)."""

    name = SAM_FAMILY
    output_class = "transformers.models.sam.modeling_sam.SamImageSegmentationOutput"

    def encode(self, model: Any, pixel_values: Tensor, **kwargs: Any) -> Encoded:
        outputs = model.vision_encoder(pixel_values, **kwargs)
        return Encoded(outputs.last_hidden_state, outputs.hidden_states, outputs.attentions)

    def image_embedding(self, embeddings: Any) -> Tensor:
        return embeddings

    def prompts(self, model: Any, batch: int, embeddings: Any, prompts: Prompts) -> Prompts:
        return _default_labels(prompts)

    def decode(
        self, model: Any, encoded: Encoded, image_pe: Tensor, sparse: Tensor | None, dense: Tensor, **kw: Any
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        logits, iou = model.mask_decoder(
            image_embeddings=encoded.embeddings,
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=kw["multimask_output"],
            attention_similarity=kw["attention_similarity"],
            target_embedding=kw["target_embedding"],
        )
        return logits, iou, {}

    def fingerprint(self, model: Any) -> str:
        state = {
            f"{part}.{key}": value
            for part in ("prompt_encoder", "mask_decoder")
            for key, value in getattr(model, part).state_dict().items()
        }
        named = hf_to_sam_state(state)
        return parts_fingerprint(
            {
                part: {
                    key[len(part) + 1 :]: value for key, value in named.items() if key.startswith(part + ".")
                }
                for part in ("prompt_encoder", "mask_decoder")
            }
        )


class Sam2Family(HFFamily):
    """``Sam2Model`` (and, with its own name and output class, ``Sam3TrackerModel``): SAM 2's decoder with
    high-resolution features and an object-score token. Fingerprint: its own prompt encoder + mask decoder
    state under transformers' names."""

    def __init__(self, name: str, output_class: str) -> None:
        self.name = name
        self.output_class = output_class

    def encode(self, model: Any, pixel_values: Tensor, **kwargs: Any) -> Encoded:
        outputs = model.get_image_features(pixel_values, return_dict=True, **kwargs)
        maps = outputs.fpn_hidden_states
        maps[-1] = maps[-1] + model.no_memory_embedding
        batch = pixel_values.shape[0]
        # as the class: one level per backbone feature size (SAM 3's neck makes one more, which is dropped)
        embeddings = [
            level.permute(1, 2, 0).view(batch, -1, *size)
            for level, size in zip(maps, model.backbone_feature_sizes, strict=False)
        ]
        return Encoded(embeddings, outputs.hidden_states, outputs.attentions)

    def image_embedding(self, embeddings: Any) -> Tensor:
        return embeddings[-1]

    def prompts(self, model: Any, batch: int, embeddings: Any, prompts: Prompts) -> Prompts:
        prompts = _default_labels(prompts)
        points, labels, masks = prompts.points, prompts.labels, prompts.masks
        if points is None and prompts.boxes is None:  # an empty point (label -1), as the class does
            reference = embeddings[-1]
            points = torch.zeros(batch, 1, 1, 2, dtype=reference.dtype, device=reference.device)
            labels = -torch.ones(batch, 1, 1, dtype=torch.int32, device=reference.device)
        size = model.prompt_encoder.mask_input_size
        if masks is not None and masks.shape[-2:] != size:
            resized = F.interpolate(
                masks.float(), size=size, align_corners=False, mode="bilinear", antialias=True
            )
            masks = resized.to(masks.dtype)
        return Prompts(points, labels, prompts.boxes, masks)

    def decode(
        self, model: Any, encoded: Encoded, image_pe: Tensor, sparse: Tensor | None, dense: Tensor, **kw: Any
    ) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
        embeddings = encoded.embeddings
        logits, iou, _, object_scores = model.mask_decoder(
            image_embeddings=embeddings[-1],
            image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            high_resolution_features=embeddings[:-1],
            **kw,
        )
        return logits, iou, {"object_score_logits": object_scores}

    def output(self, logits: Tensor, iou: Tensor, further: dict[str, Tensor], encoded: Encoded) -> Any:
        return super().output(logits, iou, {**further, "image_embeddings": encoded.embeddings}, encoded)

    def fingerprint(self, model: Any) -> str:
        return parts_fingerprint({"prompt_encoder": model.prompt_encoder, "mask_decoder": model.mask_decoder})


_FAMILIES: tuple[tuple[str, HFFamily], ...] = (
    ("SamModel", SamFamily()),
    (
        "Sam2Model",
        Sam2Family(SAM2_FAMILY, "transformers.models.sam2.modeling_sam2.Sam2ImageSegmentationOutput"),
    ),
    (
        "Sam3TrackerModel",
        Sam2Family(
            SAM3_TRACKER_FAMILY,
            "transformers.models.sam3_tracker.modeling_sam3_tracker.Sam3TrackerImageSegmentationOutput",
        ),
    ),
)
#: The transformers classes :class:`~samplm.hf.SamAdapterModel` wraps, and their families.
SUPPORTED_CLASSES = {class_name: family.name for class_name, family in _FAMILIES}


def family_of(model: Any) -> HFFamily:
    """The family record of a transformers model.

    Raises:
        TypeError: the model is none of :data:`SUPPORTED_CLASSES` (one line; for ``SamHQModel``, why).
    """
    import transformers

    for class_name, family in _FAMILIES:
        cls = getattr(transformers, class_name, None)
        if cls is not None and isinstance(model, cls):
            return family
    if type(model).__name__ == "SamHQModel":
        raise TypeError(
            "SamHQModel is not supported: its decoder sorts the multimask outputs by IoU and adds the HQ "
            "mask before returning, so an adapter's score offsets and mask mix have no outputs to apply to"
        )
    raise TypeError(
        f"expected one of transformers' {', '.join(SUPPORTED_CLASSES)}, got {type(model).__name__}"
    )
