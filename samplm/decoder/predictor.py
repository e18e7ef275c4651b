"""``CustomSamPredictor``: a drop-in ``SamPredictor`` with named, hot-swappable adapters.

The image encoder runs once per ``set_image``; switching adapters only changes the prompt tokens
given to the frozen decoder. Nothing in ``segment_anything`` or the shared ``Sam`` object is
modified, so other predictors on the same ``Sam`` are unaffected.

The predictor holds two plain objects and composes the ``SamPredictor`` API from them:
:class:`~samplm.decoder.adapters.AdapterRegistry` (the named adapters, which one is active) and
:class:`~samplm.decoder.image_state.ImageState` (which pixels made the embedding, the encoder key, each
adapter's per-image context). Several adapters at once are in :mod:`samplm.decoder.predict_many`, the
forward path in :mod:`samplm.decoder.decode`, PMM refinement in :mod:`samplm.refine.polygons`.

Frames: ``predict`` / ``predict_many`` / ``predict_refined`` take XY pixels and XYXY boxes in the original
image (``H x W``); ``predict_torch`` / ``decode`` take them in SAM's resized input frame (``H' x W'``, after
``ResizeLongestSide``); low-res logits are ``4h x 4w`` (SAM: 256 x 256) over the padded input square.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from numpy.typing import ArrayLike
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from ..base.meta_sam import SamBase
from ..errors import ImageError, ImageNotSetError, SamplmError
from ..prompts.user_prompts import as_rgb_uint8, check_numpy_prompts, check_torch_prompts, require_tensors
from . import predict_many as many
from .adapter_methods import AdapterMethods
from .adapters import AdapterRegistry, require_finite_outputs
from .decode import DecoderOutput, ImageFeatures, as_features, decode_prompts
from .image_state import ImageState, check_resizable, checked_embedding, image_digest

if TYPE_CHECKING:
    pass


class CustomSamPredictor(AdapterMethods, SamPredictor):
    """``SamPredictor`` with per-task prompt-learning adapters.

    Same constructor and method signatures as ``SamPredictor``. With no adapter active (none loaded,
    or inside :meth:`disable_adapter`) outputs are bit-identical to ``SamPredictor``.

    Args:
        sam_model: a ``segment_anything`` ``Sam`` (any registry type, or a custom one with 256-d prompts).
        strict: default for :meth:`load_adapter`: raise (True) or warn (False) when an adapter's
            recorded SAM fingerprint differs from ``sam_model``.

    Example::

        predictor = CustomSamPredictor(sam)
        predictor.load_adapter("nose")                    # first adapter loaded becomes active
        predictor.load_adapter("./adapters/banner", adapter_name="banner")
        predictor.set_image(image)                        # encoder runs once
        predictor.set_adapter("banner")
        masks, scores, logits = predictor.predict(point_coords=pts, point_labels=lbl)
    """

    def __init__(self, sam_model: Sam, *, strict: bool = False) -> None:
        self._adapters = AdapterRegistry(sam_model)
        self.base = SamBase(sam_model)
        # before SamPredictor.__init__, which resets the image
        self._images = ImageState(self.base, sam_model.image_encoder)
        self.strict = strict
        super().__init__(sam_model)

    # ------------------------------------------------------------------ image state
    def set_image(self, image: ArrayLike, image_format: str = "RGB") -> None:
        """``SamPredictor.set_image``, accepting the images users commonly have.

        Setting the image that is already set (the same pixels and format) keeps its embedding instead
        of running the image encoder again.

        Args:
            image: ``H x W x 3`` uint8 (bit-identical to ``SamPredictor``), ``H x W`` or ``H x W x 1``
                grayscale (replicated), ``H x W x 4`` RGBA (alpha dropped), or a float image with values
                in ``[0, 1]`` (scaled to 0..255 and rounded).
            image_format: channel order of ``image``, ``"RGB"`` or ``"BGR"``.

        Raises:
            ImageError: another layout (channels first, ...) or dtype (uint16, int64, floats above 1),
                an empty image, NaN values, an unknown ``image_format``, or an aspect ratio so extreme
                that a side vanishes when the image is resized to SAM's input (names the shape).
        """
        if image_format not in ("RGB", "BGR"):
            raise ImageError(f"image_format must be 'RGB' or 'BGR', got {image_format!r}")
        pixels = as_rgb_uint8(image)
        check_resizable(self.transform, pixels.shape[:2])
        digest = image_digest(pixels, image_format)
        if self._images.holds(digest, self.features if self.is_image_set else None):
            return  # the same pixels, the same encoder: the embedding is still valid
        super().set_image(pixels, image_format)
        self._images.remember(digest, self.features)

    def encoder_key(self) -> str:
        """:func:`~samplm.cache.embeddings.sam_encoder_key` of this SAM (which image encoder and
        preprocessing make the embeddings), computed once while the encoder's weights stay as they are."""
        return self._images.encoder_key()

    def reset_image(self) -> None:
        """Reset the current image and drop the per-image adapter caches."""
        super().reset_image()
        self._images.clear()

    def set_embedding(
        self,
        embedding: torch.Tensor | ImageFeatures,
        original_size: tuple[int, int],
        input_size: tuple[int, int] | None = None,
    ) -> None:
        """Start from a precomputed image embedding instead of running the image encoder.

        Afterwards every prediction method works as after :meth:`set_image` on that image.

        Args:
            embedding: ``1 x 256 x h x w`` (or ``256 x h x w``) embedding of the image, as
                ``get_image_embedding()`` returns it or :class:`~samplm.cache.EmbeddingCache` stores it;
                ``h x w`` must be the model's grid (SAM: 64 x 64).
            original_size: ``(H, W)`` of the original image.
            input_size: ``(H', W')`` after ``ResizeLongestSide`` (default: computed from
                ``original_size``; when given it must agree).
        """
        embedding, resized = checked_embedding(
            self.model, self.transform, as_features(embedding).embedding, original_size, input_size
        )
        self.reset_image()
        reference = next(self.model.mask_decoder.parameters())
        self.features = embedding.to(device=reference.device, dtype=reference.dtype)
        self.original_size = tuple(int(v) for v in original_size)
        self.input_size = tuple(int(v) for v in resized)
        self.is_image_set = True

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``SamPredictor.predict`` with the active adapter (same arguments and returns; prompts may
        also be plain lists).

        Args:
            point_coords: ``N x 2`` XY pixels in the original image.
            point_labels: ``N`` labels (1 foreground, 0 background).
            box: ``4`` XYXY pixels in the original image.
            mask_input: ``1 x 256 x 256`` low-resolution logits from a previous call.
            multimask_output: three masks (True) or one (False).
            return_logits: return logits instead of boolean masks.

        Returns:
            ``(masks C x H x W, scores C, low_res_logits C x 256 x 256)`` as numpy arrays.
        """
        prompts = self._torch_prompts(point_coords, point_labels, box, mask_input)
        masks, scores, low_res = self.predict_torch(
            **prompts, multimask_output=multimask_output, return_logits=return_logits
        )
        return masks[0].cpu().numpy(), scores[0].cpu().numpy(), low_res[0].cpu().numpy()

    @torch.no_grad()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``SamPredictor.predict_torch`` with the active adapter: B prompts on the current image.

        Args:
            point_coords: ``B x N x 2`` XY pixels in the resized input frame
                (``predictor.transform.apply_coords``).
            point_labels: ``B x N``.
            boxes: ``B x 4`` XYXY in the resized input frame.
            mask_input: ``B x 1 x 256 x 256``.
            multimask_output: three masks (True) or one (False).
            return_logits: return logits instead of boolean masks.

        Returns:
            ``(masks B x C x H x W, iou_predictions B x C, low_res_logits B x C x 256 x 256)``.
        """
        self._require_image()
        check_torch_prompts(
            point_coords,
            point_labels,
            boxes,
            mask_input,
            input_size=tuple(self.input_size),
            mask_size=self._mask_size(),
        )
        output = self.decode(point_coords, point_labels, boxes, mask_input, multimask_output)
        return (
            self.upscale_logits(output.low_res_logits, return_logits),
            output.iou_predictions,
            output.low_res_logits,
        )

    def upscale_logits(self, low_res_logits: torch.Tensor, return_logits: bool = False) -> torch.Tensor:
        """Low-res logits of the current image -> masks at its original size.

        Args:
            low_res_logits: ``B x C x 4h x 4w`` (SAM: ``B x C x 256 x 256``), e.g. a blend of outputs.
            return_logits: return logits instead of boolean masks (``> model.mask_threshold``).

        Returns:
            ``B x C x H x W`` masks (or logits) in the original frame.
        """
        self._require_image()
        masks = self.model.postprocess_masks(low_res_logits, self.input_size, self.original_size)
        return masks if return_logits else masks > self.model.mask_threshold

    def decode(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        features: bool = False,
    ) -> DecoderOutput:
        """:meth:`predict_torch` without upscaling: the active adapter's decoder outputs at low resolution.

        Arguments as :meth:`predict_torch` (input-frame prompts, ``B`` of them); ``features`` also returns
        the decoder's image features (what the PMM samples). Choose masks at low resolution, then
        :meth:`upscale_logits` only the chosen ones.

        Returns:
            A :class:`~samplm.decoder.decode.DecoderOutput`: low-res logits ``B x C x 4h x 4w``, scores
            ``B x C`` and, with ``features``, image features ``B x 256 x h x w``.

        Raises:
            PromptError: a prompt is not a torch tensor.
            AdapterOutputError: the active adapter made the decoder output NaN or infinite logits.
        """
        self._require_image()
        require_tensors(
            point_coords=point_coords, point_labels=point_labels, boxes=boxes, mask_input=mask_input
        )
        name = self.active_adapter
        adapter = self._placed(name) if name is not None else None
        output = decode_prompts(
            self.model,
            self.features,
            point_coords=point_coords,
            point_labels=point_labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=multimask_output,
            plm=adapter.plm if adapter is not None else None,
            context=self._images.context(name, adapter, self.features) if adapter is not None else None,
            return_image_features=features,
        )
        if adapter is not None:
            require_finite_outputs(name, output.low_res_logits, output.iou_predictions)
        return output

    @torch.no_grad()
    def predict_many(
        self,
        adapters: Sequence[str | None] | None = None,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        refine: bool = False,
    ) -> dict[str | None, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One prompt answered by several adapters in batched decoder calls over the current image.

        Equal to a loop of :meth:`set_adapter` + :meth:`predict` within float tolerance, without the
        loop: SAM's prompt encoder runs once, each adapter's PLM turns the prompt's tokens into its own,
        and the mask decoder and the upscaling run on batches of adapters (all of them at once on a GPU;
        a few per call on a CPU, see :func:`samplm.decoder.decode.decode_with_adapters`).

        Args:
            adapters: names of loaded adapters, ``None`` in the list for plain SAM (default: every
                loaded adapter, in load order).
            point_coords ... return_logits: one prompt, as :meth:`predict`.
            refine: masks of the adapters that carry a Point Matching Module are their PMM polygon
                refinement, as the first output of :meth:`predict_refined` (the low-res logits stay the
                decoder's); other rows are unchanged. Not with ``return_logits``.

        Returns:
            ``{adapter name: (masks C x H x W, scores C, low_res_logits C x 4h x 4w)}`` as :meth:`predict`
            returns them, in the order of ``adapters``.

        Raises:
            AdapterNameError: ``adapters`` is a bare string (pass a list), or holds a name that is not
                a non-empty string.
            UnknownAdapterError: a name is not loaded.
            ImageNotSetError: no image is set.
            AdapterOutputError: an adapter made the decoder output NaN or infinite logits.
            SamplmError: ``refine`` with ``return_logits``.
        """
        names = many.adapter_names(adapters, self.adapters)
        placed = [self._placed(self._adapters.require(n)) if n is not None else None for n in names]
        if refine and return_logits:
            raise SamplmError("predict_many: refine=True returns refined masks, not logits")
        prompts = self._torch_prompts(point_coords, point_labels, box, mask_input)  # checks the image too
        if not names:
            return {}
        rows = [self._row(n, a, refine) for n, a in zip(names, placed, strict=True)]
        return many.answer_rows(
            self.model,
            self.features,
            rows,
            prompts,
            multimask_output=multimask_output,
            chunk=self._adapter_chunk(),
            upscale=lambda low_res: self.upscale_logits(low_res, return_logits),
            refine=self._refine,
        )

    def _torch_prompts(
        self,
        point_coords: ArrayLike | None,
        point_labels: ArrayLike | None,
        box: ArrayLike | None,
        mask_input: ArrayLike | None,
    ) -> dict[str, torch.Tensor | None]:
        """Original-frame prompts of one instance (numpy arrays or lists), checked, -> batch-of-one
        tensors in the input frame, converted as ``SamPredictor.predict`` converts them.

        Returns:
            ``point_coords`` ``1 x N x 2`` float (XY, input frame), ``point_labels`` ``1 x N`` int,
            ``boxes`` ``1 x 4`` float (XYXY, input frame), ``mask_input`` ``1 x 1 x 4h x 4w`` float;
            ``None`` where not given.
        """
        self._require_image()
        coords, labels, boxes, mask = check_numpy_prompts(
            point_coords,
            point_labels,
            box,
            mask_input,
            image_size=tuple(self.original_size),
            mask_size=self._mask_size(),
        )
        out: dict[str, torch.Tensor | None] = {"point_coords": None, "point_labels": None}
        out["boxes"] = out["mask_input"] = None
        if coords is not None:
            coords = self.transform.apply_coords(coords, self.original_size)
            out["point_coords"] = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            out["point_labels"] = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        if boxes is not None:
            boxes = self.transform.apply_boxes(boxes, self.original_size)
            out["boxes"] = torch.as_tensor(boxes, dtype=torch.float, device=self.device)[None, :]
        if mask is not None:
            out["mask_input"] = torch.as_tensor(mask, dtype=torch.float, device=self.device)[None]
        return out

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise ImageNotSetError("An image must be set with .set_image(...) before mask prediction.")

    def _mask_size(self) -> tuple[int, int]:
        """``(4h, 4w)``: the size of low-res logits and ``mask_input`` (SAM: 256 x 256)."""
        h, w = self.model.prompt_encoder.image_embedding_size
        return (4 * h, 4 * w)
