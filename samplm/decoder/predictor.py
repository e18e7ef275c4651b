"""``CustomSamPredictor``: a drop-in ``SamPredictor`` with named, hot-swappable adapters.

The image encoder runs once per ``set_image``; switching adapters only changes the prompt tokens
given to the frozen decoder. Nothing in ``segment_anything`` or the shared ``Sam`` object is
modified, so other predictors on the same ``Sam`` are unaffected.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import weakref
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from ..adapter import ImageContext
from ..adapter.prompt_adapter import PromptAdapter, check_finite
from ..cache.embeddings import sam_encoder_key
from ..errors import (
    AdapterNameError,
    AdapterOutputError,
    ImageError,
    ImageNotSetError,
    SamplmError,
    UnknownAdapterError,
)
from ..prompts.validation import as_rgb_uint8, check_numpy_prompts, check_torch_prompts, require_tensors
from ..utils.checks import shown
from ..utils.fingerprint import sam_fingerprint, value_bytes
from .decode import DecoderOutput, decode_prompts, decode_with_adapters

if TYPE_CHECKING:
    from ..refine.polygons import RefinedMask

# Image-side cells per decoder call in predict_many on a CPU (two of SAM's 64 x 64 grids).
CPU_DECODER_CELLS = 2 * 64 * 64


class CustomSamPredictor(SamPredictor):
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
        self._adapters: dict[str, PromptAdapter] = {}
        self._active: str | None = None
        self._disabled_depth = 0
        self._contexts: dict[str, tuple[tuple[int, ...], ImageContext]] = {}
        self._fingerprint: str | None = None
        # (digest of the pixels, the embedding, its version, the image encoder's state) of the last image
        self._image_state: tuple[str, weakref.ref[torch.Tensor], int | None, tuple[Any, ...]] | None = None
        self._encoder_key: tuple[tuple[Any, ...], str] | None = None
        self.strict = strict
        super().__init__(sam_model)

    # ------------------------------------------------------------------ adapter management
    @property
    def adapters(self) -> list[str]:
        """Names of the loaded adapters, in load order."""
        return list(self._adapters)

    @property
    def active_adapter(self) -> str | None:
        """Name of the adapter the next prediction uses (``None``: plain SAM)."""
        return None if self._disabled_depth else self._active

    def get_adapter(self, adapter_name: str) -> PromptAdapter:
        """The loaded :class:`PromptAdapter` called ``adapter_name``."""
        self._require(adapter_name)
        return self._adapters[adapter_name]

    def load_adapter(
        self,
        adapter: str | os.PathLike[str] | PromptAdapter,
        adapter_name: str | None = None,
        *,
        activate: bool | None = None,
        replace: bool = False,
        strict: bool | None = None,
        **load_kwargs: Any,
    ) -> str:
        """Load an adapter (or add a copy of an in-memory one) under a name.

        The predictor keeps its own copy, on the SAM's device and dtype, in eval mode and frozen; a
        :class:`PromptAdapter` passed in is deep-copied and left as it was (reach the predictor's copy
        with :meth:`get_adapter`). If the SAM is moved or cast later (``sam.to(...)``, ``sam.double()``),
        the adapters follow on the next prediction.

        Args:
            adapter: short name (``"nose"``), local directory / ``.safetensors`` file,
                ``"org/repo[@revision]"``, or a :class:`PromptAdapter` instance.
            adapter_name: name to register it under (default: the adapter's ``task``).
            activate: make it the active adapter. Default: only if no adapter is active yet, so the
                first adapter loaded is used right away and later ones wait for :meth:`set_adapter`.
            replace: allow replacing an adapter already loaded under the same name.
            strict: raise instead of warn on a SAM fingerprint mismatch (default: ``self.strict``).
            **load_kwargs: forwarded to :meth:`PromptAdapter.load` (``revision``, ``token``, ...).

        Returns:
            The name it was registered under.

        Raises:
            AdapterFormatError: an in-memory adapter holds NaN or infinite weights (files are checked
                by :meth:`PromptAdapter.load`).
            AdapterNameError: ``adapter_name`` is given but is not a non-empty string.
        """
        if adapter_name is not None:
            check_adapter_name(adapter_name)
        if isinstance(adapter, PromptAdapter):
            if load_kwargs:
                raise TypeError(f"load options {sorted(load_kwargs)} only apply when loading by name")
            check_finite(adapter.state_dict(), f"adapter {adapter.task!r} (in memory)")
            module = copy.deepcopy(adapter)
        else:
            module = PromptAdapter.load(adapter, **load_kwargs)
        name = check_adapter_name(adapter_name if adapter_name is not None else module.task)
        if name in self._adapters and not replace:
            raise ValueError(f"an adapter named {name!r} is already loaded; pass replace=True to replace it")
        if self._fingerprint is None:
            self._fingerprint = sam_fingerprint(self.model)
        module.check_compatible(
            self.model, strict=self.strict if strict is None else strict, fingerprint=self._fingerprint
        )
        module.eval().requires_grad_(False)
        self._adapters[name] = module
        self._contexts.pop(name, None)
        self._placed(name)
        if activate or (activate is None and self._active is None):
            self._active = name
        return name

    def set_adapter(self, adapter_name: str) -> None:
        """Make a loaded adapter active. Costs no recomputation of the image embedding."""
        self._require(adapter_name)
        self._active = adapter_name

    def delete_adapter(self, adapter_name: str) -> None:
        """Unload an adapter; if it was active, plain SAM is used until another is set."""
        self._require(adapter_name)
        del self._adapters[adapter_name]
        self._contexts.pop(adapter_name, None)
        if self._active == adapter_name:
            self._active = None

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Context manager: predictions inside it use plain SAM (nestable, exception-safe)."""
        self._disabled_depth += 1
        try:
            yield
        finally:
            self._disabled_depth -= 1

    @contextlib.contextmanager
    def use_adapter(self, adapter_name: str | None) -> Iterator[None]:
        """Context manager: predictions inside it use ``adapter_name`` (``None``: plain SAM); the
        previously active adapter (and any :meth:`disable_adapter`) is restored on exit."""
        if adapter_name is not None:
            self._require(adapter_name)
        state = (self._active, self._disabled_depth)
        self._active, self._disabled_depth = adapter_name, 0
        try:
            yield
        finally:
            previous = state[0] if state[0] in self._adapters else None  # (unless deleted meanwhile)
            self._active, self._disabled_depth = previous, state[1]

    def _require(self, adapter_name: str) -> str:
        if check_adapter_name(adapter_name) not in self._adapters:
            raise UnknownAdapterError(adapter_name, self.adapters)
        return adapter_name

    def _placed(self, name: str) -> PromptAdapter:
        """The adapter ``name``, moved to the SAM's current device and dtype if the SAM moved since."""
        adapter = self._adapters[name]
        reference = next(self.model.mask_decoder.parameters())
        current = next(adapter.parameters())
        if (current.device, current.dtype) != (reference.device, reference.dtype):
            adapter.to(device=reference.device, dtype=reference.dtype)
            self._contexts.pop(name, None)
        return adapter

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
        self._check_resizable(pixels.shape[:2])
        digest = _image_digest(pixels, image_format)
        if self._holds(digest):
            return  # the same pixels, the same encoder: the embedding is still valid
        super().set_image(pixels, image_format)
        if _version(self.features) is not None:  # (an inference tensor cannot tell if it was changed)
            self._image_state = (
                digest,
                weakref.ref(self.features),
                _version(self.features),
                self._encoder_state(),
            )

    def _check_resizable(self, size: tuple[int, int]) -> None:
        """Raise :class:`ImageError` naming the ``(H, W)`` of an image whose shorter side rounds to 0 pixels
        when ``ResizeLongestSide`` scales its longer side to the encoder's input."""
        target = self.transform.target_length
        resized = self.transform.get_preprocess_shape(*size, target)
        if min(resized) < 1:
            raise ImageError(
                f"image of shape {size[0]} x {size[1]} (H x W) becomes {resized[0]} x {resized[1]} when "
                f"resized to SAM's {target} px input: its aspect ratio is too extreme; crop or pad it"
            )

    def encoder_key(self) -> str:
        """:func:`~samplm.cache.embeddings.sam_encoder_key` of this SAM (which image encoder and
        preprocessing make the embeddings), computed once while the encoder's weights stay as they are."""
        state = self._encoder_state()
        if self._encoder_key is None or self._encoder_key[0] != state:
            self._encoder_key = (state, sam_encoder_key(self.model))
        return self._encoder_key[1]

    def _encoder_state(self) -> tuple[Any, ...]:
        """Where the image encoder's weights are and whether they changed (moved, cast, loaded)."""
        p = next(self.model.image_encoder.parameters(), None)
        return (None,) if p is None else (p.device, p.dtype, p.data_ptr(), _version(p))

    def _holds(self, digest: str) -> bool:
        """Whether the current embedding was computed from an image with this digest by the current image
        encoder, and was not changed since."""
        state, features = self._image_state, self.features if self.is_image_set else None
        if state is None or features is None or state[0] != digest or state[1]() is not features:
            return False
        return state[2] == _version(features) and state[3] == self._encoder_state()

    def reset_image(self) -> None:
        """Reset the current image and drop the per-image adapter caches."""
        super().reset_image()
        self._contexts.clear()
        self._image_state = None

    def set_embedding(
        self,
        embedding: torch.Tensor,
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
        if embedding.dim() == 3:
            embedding = embedding[None]
        grid = tuple(self.model.prompt_encoder.image_embedding_size)
        expected = (1, self.model.prompt_encoder.embed_dim, *grid)
        if tuple(embedding.shape) != expected:
            raise ValueError(
                f"embedding must be {' x '.join(map(str, expected))}, got {tuple(embedding.shape)}"
            )
        resized = self.transform.get_preprocess_shape(*original_size, self.transform.target_length)
        if input_size is not None and tuple(input_size) != tuple(resized):
            raise ValueError(
                f"input_size {tuple(input_size)} does not match original_size {tuple(original_size)} "
                f"resized to {self.transform.target_length} ({resized})"
            )
        self.reset_image()
        reference = next(self.model.mask_decoder.parameters())
        self.features = embedding.to(device=reference.device, dtype=reference.dtype)
        self.original_size = tuple(int(v) for v in original_size)
        self.input_size = tuple(int(v) for v in resized)
        self.is_image_set = True

    def _image_context(self, name: str, adapter: PromptAdapter) -> ImageContext:
        """The PLM's per-image keys/values for the current image, computed once per image and adapter."""
        projections = (adapter.plm.cross_attn.k_proj, adapter.plm.cross_attn.v_proj)
        key = (
            id(self.features),
            _version(self.features),
            id(adapter),
            *(_version(p) for proj in projections for p in proj.parameters()),
        )
        cached = self._contexts.get(name)
        if cached is None or cached[0] != key:
            context = adapter.plm.image_context(self.features, self.model.prompt_encoder.get_dense_pe())
            self._contexts[name] = (key, context)
            return context
        return cached[1]

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
            context=self._image_context(name, adapter) if adapter is not None else None,
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
        if isinstance(adapters, str):
            raise AdapterNameError(
                f"predict_many takes a list of adapter names, got the string {shown(adapters)}: pass "
                f"[{shown(adapters)}]"
            )
        try:
            names = list(self.adapters if adapters is None else adapters)
        except TypeError as exc:  # a number, or another object that is not a list
            message = f"predict_many takes a list of adapter names, got {shown(adapters)}"
            raise AdapterNameError(message) from exc
        placed = [self._placed(self._require(n)) if n is not None else None for n in names]
        if refine and return_logits:
            raise SamplmError("predict_many: refine=True returns refined masks, not logits")
        prompts = self._torch_prompts(point_coords, point_labels, box, mask_input)  # checks the image too
        if not names:
            return {}
        refined = [refine and a is not None and a.pmm is not None for a in placed]
        output = decode_with_adapters(
            self.model,
            self.features,
            [a.plm if a is not None else None for a in placed],
            [
                self._image_context(n, a) if a is not None else None
                for n, a in zip(names, placed, strict=True)
            ],
            **prompts,
            multimask_output=multimask_output,
            return_image_features=any(refined),
            chunk=self._adapter_chunk(),
        )
        masks = self._many_masks(names, placed, output, return_logits, refined)
        scores, low_res = output.iou_predictions.cpu().numpy(), output.low_res_logits.cpu().numpy()
        return {name: (masks[i], scores[i], low_res[i]) for i, name in enumerate(names)}

    def _many_masks(
        self,
        names: list[str | None],
        placed: list[PromptAdapter | None],
        output: DecoderOutput,
        return_logits: bool,
        refined: list[bool],
    ) -> list[np.ndarray]:
        """:meth:`predict_many`'s ``C x H x W`` masks per row: checked finite (adapter rows, as
        :meth:`decode` checks them), upscaled one adapter at a time (its ``C`` full-size masks stay in
        cache, where all ``A x C`` would not), PMM-refined where ``refined[i]``."""
        masks = []
        for i, (name, row) in enumerate(zip(names, output.low_res_logits, strict=True)):
            if name is not None:
                require_finite_outputs(name, row, output.iou_predictions[i])
            mask = self.upscale_logits(row[None], return_logits)[0].cpu().numpy()
            if refined[i]:
                parts = self._refine(placed[i], mask, output.image_features[i : i + 1])
                mask = np.stack([r.mask for r in parts])
            masks.append(mask)
        return masks

    def _adapter_chunk(self) -> int | None:
        """Adapters per decoder call in :meth:`predict_many`: all on an accelerator; on a CPU as many as keep
        the batch's image-side activations near two 64 x 64 grids (2 for SAM, 8 for a 32 x 32 grid)."""
        if self.device.type != "cpu":
            return None
        h, w = self.model.prompt_encoder.image_embedding_size
        return max(1, CPU_DECODER_CELLS // (h * w))

    def _torch_prompts(self, point_coords, point_labels, box, mask_input) -> dict[str, torch.Tensor | None]:
        """Original-frame prompts of one instance (numpy arrays or lists), checked, -> batch-of-one
        tensors in the input frame, converted as ``SamPredictor.predict`` converts them."""
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

    @torch.no_grad()
    def predict_refined(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """:meth:`predict`, then PMM polygon refinement of every returned mask (paper Fig. 5).

        Needs an active adapter that carries PMM weights. Arguments as :meth:`predict`.

        Returns:
            ``(refined masks C x H x W bool, scores C, low_res_logits C x 256 x 256, polygons)`` where
            ``polygons[i]`` lists the ``K x 2`` XY refined polygons of mask ``i``'s parts, largest
            first (original frame; empty for an empty mask).
        """
        from ..refine.polygons import require_pmm

        name = self.active_adapter
        if name is None:
            raise SamplmError("predict_refined needs an active adapter with a Point Matching Module")
        adapter = self._adapters[name]
        require_pmm(adapter.pmm, f"adapter {name!r}")
        prompts = self._torch_prompts(point_coords, point_labels, box, mask_input)
        output = self.decode(**prompts, multimask_output=multimask_output, features=True)
        masks = self.upscale_logits(output.low_res_logits)[0].cpu().numpy()
        refined = self._refine(adapter, masks, output.image_features)
        scores = output.iou_predictions[0].cpu().numpy()
        low_res = output.low_res_logits[0].cpu().numpy()
        return np.stack([r.mask for r in refined]), scores, low_res, [r.polygons for r in refined]

    def _refine(
        self, adapter: PromptAdapter, masks: np.ndarray, image_features: torch.Tensor
    ) -> list[RefinedMask]:
        """PMM refinement of one prompt's ``C x H x W`` masks (``image_features``: its ``1 x 256 x h x w``
        decoder features) -> one :class:`samplm.refine.polygons.RefinedMask` per mask."""
        from ..refine.polygons import refine_masks

        return refine_masks(
            adapter.pmm,
            masks,
            image_features,
            original_size=tuple(self.original_size),
            input_size=tuple(self.input_size),
            image_size=self.model.image_encoder.img_size,
        )

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise ImageNotSetError("An image must be set with .set_image(...) before mask prediction.")

    def _mask_size(self) -> tuple[int, int]:
        h, w = self.model.prompt_encoder.image_embedding_size
        return (4 * h, 4 * w)


def check_adapter_name(name: Any) -> str:
    """``name`` if it is a non-empty string, else :class:`AdapterNameError` (one line)."""
    if not isinstance(name, str) or not name:
        raise AdapterNameError(f"an adapter name must be a non-empty string, got {shown(name)}")
    return name


def _image_digest(pixels: np.ndarray, image_format: str) -> str:
    """A short digest of an image's pixels, shape and channel order."""
    digest = hashlib.blake2b(value_bytes(pixels), digest_size=16)
    digest.update(f"{pixels.shape}{image_format}".encode())
    return digest.hexdigest()


def require_finite_outputs(name: str, logits: torch.Tensor, scores: torch.Tensor) -> None:
    """Stop when the adapter ``name`` made the decoder's mask ``logits`` or the ``scores`` NaN or infinite
    (the one check of adapter outputs: prediction, several-adapter decoding and the ONNX export use it)."""
    if not (torch.isfinite(logits).all() and torch.isfinite(scores).all()):
        raise AdapterOutputError(
            f"adapter {name!r} made SAM's decoder output NaN or infinite mask logits or scores: its weights "
            "overflow (corrupted, or training diverged); retrain it, or predict without it "
            "(disable_adapter(), or leave it out of predict_many)"
        )


def _version(tensor: torch.Tensor) -> int | None:
    """The tensor's in-place change counter (``None`` for inference tensors, which have none)."""
    return None if tensor.is_inference() else tensor._version
