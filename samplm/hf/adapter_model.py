"""``SamAdapterModel``: a transformers SAM with samplm's named, hot-swappable adapters.

The wrapper runs the wrapped model's own ``forward`` steps (:mod:`samplm.hf.families`) with the active
adapter's PLM between the prompt encoder and the frozen mask decoder::

    pixel_values ─> vision encoder ─> image embeddings ─┐           (or image_embeddings given)
    points, labels, boxes, masks ─> prompt encoder ─> sparse b x P x N x C ─> PLM ─> mask decoder
                                                  └─> dense b x C x h x w ──────────┘     │
          adjust_outputs (score offsets and readout, mask mix) <─ b x P x M x 4h x 4w logits, IoU

and returns the wrapped model's own output class, so the processor's ``post_process_masks`` takes it. The
wrapped model is not changed: no hook, no patched method; with no adapter active the outputs are exactly
the wrapped model's.

Called again with the same ``image_embeddings`` tensor (not modified in place since), an adapter reuses its
per-image context (the PLM's keys and values of the image), as the predictors do per ``set_image``.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from ..adapter import ImageContext, PromptAdapter, PromptLearningModule
from ..decoder.adapters import AdapterRegistry, require_finite_outputs
from ..decoder.image_state import tensor_version
from .families import Encoded, Prompts, family_of


class SamAdapterModel(nn.Module):
    """A transformers ``SamModel``, ``Sam2Model`` or ``Sam3TrackerModel`` with prompt-learning adapters.

    Call it as the wrapped model (the same keyword arguments, the same output class). It is also a samplm
    base (:class:`~samplm.base.interface.BaseIdentity`): adapters are checked against its :attr:`family`,
    :attr:`embed_dim` and :meth:`fingerprint` when loaded.

    Args:
        model: the transformers model (it becomes the ``model`` submodule; its weights are not copied).
        strict: default for :meth:`load_adapter`: raise (True) or warn (False) when an adapter's recorded
            fingerprint differs from this model's.

    Attributes:
        family: ``"sam"`` (``SamModel``), ``"sam2"`` (``Sam2Model``) or ``"sam3_tracker"``.

    Raises:
        TypeError: ``model`` is not one of the supported classes (``SamHQModel``: see
            :mod:`samplm.hf.families`).

    Example::

        model = SamAdapterModel(SamModel.from_pretrained("facebook/sam-vit-base"))
        model.load_adapter("./adapters/banner")          # the first adapter loaded becomes active
        outputs = model(**processor(image, input_points=[[[450, 600]]], return_tensors="pt"))
    """

    def __init__(self, model: nn.Module, *, strict: bool = False) -> None:
        super().__init__()
        self._family = family_of(model)
        self.model = model
        self.family: str = self._family.name
        self.strict = strict
        self._adapters = AdapterRegistry(self)
        self._contexts: dict[str, _CachedContext] = {}

    # ------------------------------------------------------------------ base identity
    @property
    def embed_dim(self) -> int:
        """Width ``C`` of the prompt tokens (256 for Meta's checkpoints)."""
        return int(self.model.config.prompt_encoder_config.hidden_size)

    def fingerprint(self) -> str:
        """``"sha256:<hex>"`` of the prompt encoder + mask decoder weights (float16-rounded). For a
        ``SamModel`` it equals :func:`~samplm.utils.fingerprint.sam_fingerprint` of the ``segment_anything``
        ``Sam`` holding the same weights."""
        return self._family.fingerprint(self.model)

    def decoder_parameter(self) -> Tensor:
        """A parameter of the mask decoder: adapters are kept on its device and dtype."""
        return next(self.model.mask_decoder.parameters())

    # ------------------------------------------------------------------ adapters
    @property
    def adapters(self) -> list[str]:
        """Names of the loaded adapters, in load order."""
        return self._adapters.names

    @property
    def active_adapter(self) -> str | None:
        """Name of the adapter the next call uses (``None``: the wrapped model alone)."""
        return self._adapters.active

    def get_adapter(self, name: str) -> PromptAdapter:
        """The loaded :class:`~samplm.adapter.PromptAdapter` called ``name`` (the wrapper's own copy)."""
        return self._adapters.get(name)

    def load_adapter(
        self,
        adapter: str | os.PathLike[str] | PromptAdapter,
        name: str | None = None,
        *,
        activate: bool | None = None,
        replace: bool = False,
        strict: bool | None = None,
        **load_kwargs: Any,
    ) -> str:
        """Load an adapter (or add a frozen copy of an in-memory one) under a name.

        The adapter is checked against this model (``PromptAdapter.check_compatible``): another family is
        refused, a different fingerprint warns (or raises with ``strict``). It is kept on the decoder's
        device and dtype, in eval mode and frozen, and follows the model if it is moved later.

        Args:
            adapter: short name, local directory / ``.safetensors`` file, ``"org/repo[@revision]"``, or a
                :class:`~samplm.adapter.PromptAdapter`.
            name: name to register it under (default: the adapter's ``task``).
            activate: make it active. Default: only if none is active yet (the first one loaded is used).
            replace: allow replacing an adapter already loaded under ``name``.
            strict: raise instead of warn on a fingerprint mismatch (default: ``self.strict``).
            **load_kwargs: forwarded to :meth:`PromptAdapter.load` (``revision``, ``token``, ...).

        Returns:
            The name it was registered under.

        Raises:
            AdapterCompatibilityError: another family, another token width, or (``strict``) a
                fingerprint mismatch.
        """
        name = self._adapters.add(
            adapter,
            name,
            activate=activate,
            replace=replace,
            strict=self.strict if strict is None else strict,
            load_kwargs=load_kwargs,
        )
        self._contexts.pop(name, None)  # (a replaced adapter's)
        return name

    def set_adapter(self, name: str) -> None:
        """Make the loaded adapter ``name`` active."""
        self._adapters.activate(name)

    def unload_adapter(self, name: str) -> None:
        """Remove the adapter ``name``; if it was active, no adapter is active afterwards."""
        self._adapters.remove(name)
        self._contexts.pop(name, None)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Context manager: calls inside it run the wrapped model alone (nestable, exception-safe)."""
        with self._adapters.disabled():
            yield

    @contextlib.contextmanager
    def use_adapter(self, name: str | None) -> Iterator[None]:
        """Context manager: calls inside it use ``name`` (``None``: no adapter); the previously active
        adapter (and any :meth:`disable_adapter`) comes back on exit."""
        with self._adapters.using(name):
            yield

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        pixel_values: Tensor | None = None,
        input_points: Tensor | None = None,
        input_labels: Tensor | None = None,
        input_boxes: Tensor | None = None,
        input_masks: Tensor | None = None,
        image_embeddings: Tensor | list[Tensor] | None = None,
        multimask_output: bool = True,
        attention_similarity: Tensor | None = None,
        target_embedding: Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        """The wrapped model's ``forward`` with the active adapter (arguments and output as there).

        Args:
            pixel_values: ``b x 3 x S x S`` from the processor, or ``None`` with ``image_embeddings``.
            input_points: ``b x P x K x 2`` XY pixels in the processor's resized frame (``P`` prompts of
                ``K`` points each per image).
            input_labels: ``b x P x K`` (1 foreground, 0 background, -1 ignored, -10 padding); all 1 if
                ``None``.
            input_boxes: ``b x P x 4`` XYXY in the same frame.
            input_masks: low-resolution mask logits as the wrapped model takes them.
            image_embeddings: the wrapped model's ``get_image_embeddings`` output (``b x C x h x w``; for
                SAM 2 and the SAM 3 tracker the list of its three levels).
            multimask_output: three masks per prompt (True) or one (False).
            attention_similarity, target_embedding: the decoder's PerSAM inputs, passed on.
            **kwargs: passed on as the wrapped model passes them (``output_hidden_states``, ...).

        Returns:
            The wrapped model's output (``SamImageSegmentationOutput``, ...): ``pred_masks``
            ``b x P x M x 4h x 4w`` logits and ``iou_scores`` ``b x P x M`` as the adapter gives them.
            ``mask_decoder_attentions`` stays ``None``.
        """
        encoded, batch = self._encoded(pixel_values, image_embeddings, kwargs)
        _check_prompt_shapes(input_points, input_boxes, batch)
        sparse, dense = self._encode_prompts(
            encoded, batch, Prompts(input_points, input_labels, input_boxes, input_masks)
        )
        image_pe = self.model.get_image_wide_positional_embeddings()
        name = self._adapters.active
        plm = None if name is None else self._placed_plm(name)
        embedding = self._family.image_embedding(encoded.embeddings)
        if plm is not None and sparse is not None:
            context = self._image_context(name, plm, embedding, image_pe, reuse=pixel_values is None)
            sparse = _shifted_tokens(plm, sparse, context)
        logits, iou, further = self._family.decode(
            self.model,
            encoded,
            image_pe.repeat(batch, 1, 1, 1),
            sparse,
            dense,
            multimask_output=multimask_output,
            attention_similarity=attention_similarity,
            target_embedding=target_embedding,
            **kwargs,
        )
        if plm is not None:
            logits, iou = _adjusted(plm, logits, iou, multimask_output, embedding)
            require_finite_outputs(name, logits, iou)
        return self._family.output(logits, iou, further, encoded)

    def _encode_prompts(self, encoded: Encoded, batch: int, prompts: Prompts) -> tuple[Tensor | None, Tensor]:
        """The wrapped model's prompt encoder on ``prompts`` completed as its ``forward`` completes them:
        ``(sparse b x P x N x C or None, dense b x C x h x w)``."""
        prompts = self._family.prompts(self.model, batch, encoded.embeddings, prompts)
        return self.model.prompt_encoder(
            input_points=prompts.points,
            input_labels=prompts.labels,
            input_boxes=prompts.boxes,
            input_masks=prompts.masks,
        )

    def _placed_plm(self, name: str) -> PromptLearningModule:
        """The PLM of adapter ``name`` on the decoder's current device and dtype (moved there, and its
        cached context dropped, if the model moved since)."""
        adapter, moved = self._adapters.place(name)
        if moved:
            self._contexts.pop(name, None)
        return adapter.plm

    def _image_context(
        self, name: str, plm: PromptLearningModule, embedding: Tensor, image_pe: Tensor, *, reuse: bool
    ) -> ImageContext:
        """``plm.image_context`` of the ``b x C x h x w`` embedding, reused while the same tensor comes back
        unmodified (``reuse``: the caller's own ``image_embeddings``; a tensor that needs gradients is never
        kept)."""
        cached = self._contexts.get(name)
        if cached is not None and cached.matches(plm, embedding):
            return cached.context
        context = plm.image_context(embedding, image_pe)
        if reuse and not embedding.requires_grad:
            version = tensor_version(embedding)
            self._contexts[name] = _CachedContext(weakref.ref(embedding), version, plm, context)
        return context

    def _encoded(
        self,
        pixel_values: Tensor | None,
        image_embeddings: Tensor | list[Tensor] | None,
        kwargs: dict[str, Any],
    ) -> tuple[Encoded, int]:
        """The image side (the vision encoder on ``pixel_values``, or the given embeddings) and the image
        batch ``b``."""
        if (pixel_values is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of pixel_values and image_embeddings")
        if pixel_values is not None:
            return self._family.encode(self.model, pixel_values, **kwargs), pixel_values.shape[0]
        return Encoded(image_embeddings), self._family.image_embedding(image_embeddings).shape[0]


def _check_prompt_shapes(points: Tensor | None, boxes: Tensor | None, batch: int) -> None:
    """The wrapped models' checks: points ``b x P x K x 2``, boxes ``b x P x 4``, the same ``b`` and ``P``.

    Raises:
        ValueError: a shape does not fit (one line naming it).
    """
    if points is not None and (points.dim() != 4 or points.shape[0] != batch):
        raise ValueError(f"input_points must be {batch} x P x K x 2 (b images), got {tuple(points.shape)}")
    if boxes is not None and (boxes.dim() != 3 or boxes.shape[0] != batch):
        raise ValueError(f"input_boxes must be {batch} x P x 4 (b images), got {tuple(boxes.shape)}")
    if points is not None and boxes is not None and points.shape[1] != boxes.shape[1]:
        raise ValueError(
            f"input_points and input_boxes must hold as many prompts per image, got {points.shape[1]} and "
            f"{boxes.shape[1]}"
        )


@dataclass(frozen=True)
class _CachedContext:
    """An adapter's context of one image embedding, and what it was computed from."""

    embedding: weakref.ref[Tensor]
    version: int | None  # the embedding's in-place modification counter then (None: an inference tensor)
    plm: PromptLearningModule
    context: ImageContext

    def matches(self, plm: PromptLearningModule, embedding: Tensor) -> bool:
        return self.plm is plm and self.embedding() is embedding and tensor_version(embedding) == self.version


def _shifted_tokens(plm: PromptLearningModule, sparse: Tensor, context: ImageContext) -> Tensor:
    """``b x P x N x C`` sparse tokens through the PLM: each image's ``P`` prompts are ``P`` rows of the
    PLM's ``(b*P) x N x C`` batch, each attending to its image (``context``: ``b`` rows, one per image)."""
    b, p, n, c = sparse.shape
    if b > 1 and p > 1:
        context = ImageContext(context.keys.repeat_interleave(p, 0), context.values.repeat_interleave(p, 0))
    return plm(sparse.reshape(b * p, n, c), context=context).reshape(b, p, n, c)


def _adjusted(
    plm: PromptLearningModule, logits: Tensor, iou: Tensor, multimask_output: bool, embedding: Tensor
) -> tuple[Tensor, Tensor]:
    """The decoder's ``b x P x M x 4h x 4w`` logits and ``b x P x M`` IoU as the adapter gives them
    (:meth:`PromptLearningModule.adjust_outputs` on the ``(b*P)`` rows, each with its image's
    ``C x h x w`` embedding from the ``b x C x h x w`` ``embedding``)."""
    b, p, m, h, w = logits.shape
    adjusted, scores = plm.adjust_outputs(
        logits.reshape(b * p, m, h, w),
        iou.reshape(b * p, m),
        multimask_output,
        embedding.repeat_interleave(p, dim=0) if b > 1 else embedding,
    )
    return adjusted.reshape(b, p, m, h, w), scores.reshape(b, p, m)
