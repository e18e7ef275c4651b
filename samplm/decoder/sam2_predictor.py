"""``CustomSam2Predictor``: a drop-in ``SAM2ImagePredictor`` with named, hot-swappable adapters.

The adapter enters at one place, ``SAM2ImagePredictor._predict`` (which ``predict`` and ``predict_batch`` both
call): with no adapter active it is upstream's own method, so outputs are bit-identical to
``SAM2ImagePredictor``; with one, the prompt goes through :func:`~samplm.decoder.decode.decode_prompts` on a
:class:`~samplm.base.meta_sam2.Sam2Base` (SAM 2's prompt encoder, the PLM, SAM 2's frozen decoder, the
adapter's output adjustment) and is post-processed as upstream does it. The image features ``set_image``
computes are used as they are: switching adapters never re-encodes the image.

Frames: ``predict`` takes XY pixels and XYXY boxes in the original image (or normalised, as upstream with
``normalize_coords=False``); SAM 2 stretches images to its ``1024 x 1024`` input, and low-res logits are
``256 x 256`` over that square. What SAM 2 does with the object-score token and the single-mask output is
in :mod:`samplm.base.meta_sam2`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike
from PIL import Image
from sam2.sam2_image_predictor import SAM2ImagePredictor

from ..base.interface import DecoderOutput, ImageFeatures
from ..base.meta_sam2 import Sam2Base
from ..errors import SamplmError
from ..prompts.user_prompts import as_rgb_uint8
from . import predict_many as many
from .adapter_methods import AdapterMethods
from .adapters import AdapterRegistry, require_finite_outputs
from .decode import as_features, decode_prompts
from .image_state import ImageState


class CustomSam2Predictor(AdapterMethods, SAM2ImagePredictor):
    """``SAM2ImagePredictor`` with per-task prompt-learning adapters.

    Same constructor and method signatures as ``SAM2ImagePredictor``, plus the adapter methods of
    :class:`~samplm.CustomSamPredictor` (``load_adapter``, ``set_adapter``, ``disable_adapter``,
    ``use_adapter``, ``delete_adapter``, ``predict_many``). Adapters must be trained on the SAM 2 family.

    Args:
        sam_model: a ``sam2`` model (``build_sam2(...)`` or :func:`samplm.base.meta_sam2.build_sam2_model`).
        mask_threshold, max_hole_area, max_sprinkle_area: as ``SAM2ImagePredictor``.
        strict: default for :meth:`load_adapter`: raise (True) or warn (False) when an adapter's recorded
            fingerprint differs from ``sam_model``'s.

    Example::

        predictor = CustomSam2Predictor(build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt))
        predictor.load_adapter("./adapters/plate")
        predictor.set_image(image)
        masks, scores, logits = predictor.predict(point_coords=[[320, 200]], point_labels=[1])
    """

    def __init__(
        self,
        sam_model: Any,
        mask_threshold: float = 0.0,
        max_hole_area: float = 0.0,
        max_sprinkle_area: float = 0.0,
        *,
        strict: bool = False,
        **kwargs: Any,
    ) -> None:
        self.base = Sam2Base(sam_model)
        self._adapters = AdapterRegistry(self.base)
        self._images = ImageState(self.base, sam_model.image_encoder)
        self.strict = strict
        super().__init__(sam_model, mask_threshold, max_hole_area, max_sprinkle_area, **kwargs)
        self.base.mask_threshold = float(mask_threshold)  # the generator's stability uses the same

    def reset_predictor(self) -> None:
        """Reset the image and drop the per-image adapter caches."""
        super().reset_predictor()
        self._images.clear()

    # ------------------------------------------------------------------ the image
    def set_image(self, image: ArrayLike | Image.Image) -> None:
        """``SAM2ImagePredictor.set_image``, accepting the images users commonly have: ``H x W x 3`` uint8 RGB
        (bit-identical to upstream) or a PIL image, and ``H x W`` grayscale, ``H x W x 4`` RGBA or a float
        image in ``[0, 1]`` (converted as :meth:`samplm.CustomSamPredictor.set_image` converts them).

        Raises:
            ImageError: another layout, dtype or an empty image (names the shape).
        """
        super().set_image(image if isinstance(image, Image.Image) else as_rgb_uint8(image))

    def set_embedding(
        self,
        embedding: torch.Tensor | ImageFeatures,
        original_size: tuple[int, int],
        input_size: tuple[int, int] | None = None,
    ) -> None:
        """Start from precomputed features (as the embedding cache stores them) instead of the encoder.

        Args:
            embedding: the image's :class:`ImageFeatures` (embedding ``1 x 256 x 64 x 64`` and the two
                high-resolution maps SAM 2's decoder needs).
            original_size: ``(H, W)`` of the original image.
            input_size: its size in the input frame; SAM 2's is always the ``1024 x 1024`` square.

        Raises:
            ValueError: a bare embedding without the high-resolution maps the model uses, or a wrong size.
        """
        features = as_features(embedding)
        needs = 2 if self.model.use_high_res_features_in_sam else 0
        expected = (1, self.base.embed_dim, *self.base.embedding_size)
        if tuple(features.embedding.shape) != expected or len(features.high_res) != needs:
            raise ValueError(
                f"SAM 2 needs an embedding of {' x '.join(map(str, expected))} and {needs} high-resolution "
                f"maps, got {tuple(features.embedding.shape)} and {len(features.high_res)}"
            )
        if input_size is not None and tuple(input_size) != self.base.input_size(original_size):
            raise ValueError(
                f"input_size must be {self.base.input_size(original_size)} on SAM 2, got {input_size}"
            )
        self.reset_predictor()
        reference = self.base.decoder_parameter()
        features = features.to(device=reference.device, dtype=reference.dtype)
        self._features = {"image_embed": features.embedding, "high_res_feats": list(features.high_res)}
        self._orig_hw = [tuple(int(v) for v in original_size)]
        self._is_image_set = True

    @property
    def is_image_set(self) -> bool:
        """Whether an image (or its features) is set."""
        return self._is_image_set

    @property
    def features(self) -> torch.Tensor:
        """The current image's ``1 x 256 x 64 x 64`` embedding (``SamPredictor.features``'s counterpart)."""
        return self.image_features().embedding

    @property
    def original_size(self) -> tuple[int, int]:
        """``(H, W)`` of the current image."""
        return tuple(self._orig_hw[-1])

    @property
    def input_size(self) -> tuple[int, int]:
        """The current image's size in SAM 2's input frame: the whole ``1024 x 1024`` square."""
        return self.base.input_size(self.original_size)

    def encoder_key(self) -> str:
        """Key of this model's image encoder and preprocessing (the embedding cache's folder)."""
        return self._images.encoder_key()

    def image_features(self, img_idx: int = -1) -> ImageFeatures:
        """The current image's :class:`ImageFeatures` (batch 1): embedding ``1 x 256 x 64 x 64`` and the two
        high-resolution maps, as ``set_image`` computed them (image ``img_idx`` after ``set_image_batch``)."""
        if not self._is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        embed, high_res = self._features["image_embed"], self._features["high_res_feats"]
        if embed.shape[0] == 1:  # the stored tensors themselves: the adapters' contexts stay cached
            return ImageFeatures(embed, tuple(high_res))
        return ImageFeatures(embed[img_idx][None], tuple(level[img_idx][None] for level in high_res))

    @torch.no_grad()
    def _predict(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
        img_idx: int = -1,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``SAM2ImagePredictor._predict`` with the active adapter (arguments and returns as upstream:
        prompts in the ``1024 x 1024`` input frame, ``B`` of them)."""
        name = self.active_adapter
        if name is None:
            return super()._predict(
                point_coords, point_labels, boxes, mask_input, multimask_output, return_logits, img_idx
            )
        output = self.decode(point_coords, point_labels, boxes, mask_input, multimask_output, img_idx=img_idx)
        return self._finish(output.low_res_logits, output.iou_predictions, return_logits, img_idx)

    def decode(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        features: bool = False,
        img_idx: int = -1,
    ) -> DecoderOutput:
        """The active adapter's decoder outputs at low resolution (no upscaling), ``B`` prompts in the
        ``1024 x 1024`` input frame (``boxes``: ``B x 4`` XYXY); ``features`` also returns the decoder's
        image features (what the PMM samples). As :meth:`samplm.CustomSamPredictor.decode`.

        Returns:
            A :class:`DecoderOutput`: logits ``B x C x 256 x 256``, scores ``B x C``.
        """
        name = self.active_adapter
        adapter = self._placed(name) if name is not None else None
        image = self.image_features(img_idx)
        output = decode_prompts(
            self.base,
            image,
            point_coords=point_coords,
            point_labels=point_labels,
            boxes=boxes,
            mask_input=mask_input,
            multimask_output=multimask_output,
            plm=adapter.plm if adapter is not None else None,
            context=self._images.context(name, adapter, image.embedding) if adapter is not None else None,
            return_image_features=features,
        )
        if adapter is not None:
            require_finite_outputs(name, output.low_res_logits, output.iou_predictions)
        return output

    def _torch_prompts(
        self,
        point_coords: ArrayLike | None,
        point_labels: ArrayLike | None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        normalize_coords: bool = True,
    ) -> dict[str, torch.Tensor | None]:
        """One prompt of :meth:`predict`'s arguments (the original image's XY pixels, or normalised with
        ``normalize_coords=False`` as upstream) as :meth:`decode`'s keywords in the ``1024 x 1024`` input
        frame: ``point_coords`` ``B x N x 2``, ``point_labels`` ``B x N``, ``boxes`` ``B x 4``, ``mask_input``
        ``B x 1 x 256 x 256`` (upstream's ``_prep_prompts``)."""
        if not self._is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        mask, coords, labels, boxes = self._prep_prompts(
            point_coords, point_labels, box, mask_input, normalize_coords
        )
        return {
            "point_coords": coords,
            "point_labels": labels,
            "boxes": boxes.reshape(-1, 4) if boxes is not None else None,
            "mask_input": mask,
        }

    def upscale_logits(self, low_res_logits: torch.Tensor, return_logits: bool = False) -> torch.Tensor:
        """``B x C x 256 x 256`` logits of the current image -> ``B x C x H x W`` masks (or logits) at its
        original size, as upstream post-processes them."""
        return self._finish(low_res_logits, low_res_logits[:, :, 0, 0], return_logits)[0]

    def _finish(
        self, low_res: torch.Tensor, iou: torch.Tensor, return_logits: bool, img_idx: int = -1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Upstream's post-processing of ``B x C x 256 x 256`` logits: masks at the original size
        (thresholded unless ``return_logits``), the scores, the logits clamped to ``[-32, 32]``."""
        masks = self._transforms.postprocess_masks(low_res, self._orig_hw[img_idx])
        if not return_logits:
            masks = masks > self.mask_threshold
        return masks, iou, torch.clamp(low_res, -32.0, 32.0)

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
        normalize_coords: bool = True,
        refine: bool = False,
    ) -> dict[str | None, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """One prompt answered by several adapters (``None`` in the list: plain SAM 2) in batched decoder
        calls, equal to a loop of :meth:`set_adapter` + :meth:`predict` within float tolerance.

        Arguments as :meth:`predict`, plus ``adapters`` (default: every loaded adapter, in load order) and
        ``refine`` (masks of adapters with a Point Matching Module are their PMM polygon refinement, as in
        :meth:`samplm.CustomSamPredictor.predict_many`).

        Returns:
            ``{adapter name: (masks C x H x W, scores C, low_res_logits C x 256 x 256)}`` as :meth:`predict`
            returns them, in the order of ``adapters``.
        """
        names = many.adapter_names(adapters, self.adapters)
        placed = [self._placed(self._adapters.require(n)) if n is not None else None for n in names]
        if refine and return_logits:
            raise SamplmError("predict_many: refine=True returns refined masks, not logits")
        prompts = self._torch_prompts(point_coords, point_labels, box, mask_input, normalize_coords)
        answers = many.answer_rows(
            self.base,
            self.image_features(),
            [self._row(n, a, refine) for n, a in zip(names, placed, strict=True)],
            prompts,
            multimask_output=multimask_output,
            chunk=self._adapter_chunk(),
            upscale=lambda low_res: self.upscale_logits(low_res, return_logits),
            refine=self._refine,
        )
        return {n: (m, s, np.clip(low, -32.0, 32.0)) for n, (m, s, low) in answers.items()}
