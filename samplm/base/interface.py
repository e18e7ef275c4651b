"""What samplm needs of a base model: the one small interface every base family implements.

A *base* is a frozen promptable segmenter: an image encoder, a prompt encoder whose sparse tokens the
PLM shifts, and a mask decoder whose outputs the adapter adjusts. Each family is one module behind this
interface (:mod:`samplm.base.meta_sam` for ``segment_anything``, :mod:`samplm.base.meta_sam2` for
``sam2``); adding the next one is a new module, not edits across the package.

Two parts:

- :class:`BaseIdentity`: what an adapter is checked against (family, token width, fingerprint) and where
  it runs (device and dtype). The transformers wrappers (:mod:`samplm.hf`) implement this part only.
- :class:`PromptableBase`: the decoding steps :func:`samplm.decoder.decode.decode_prompts` composes:
  encode prompts, the dense positional encoding, the raw decoder (no adapter), the image encoder.

Frames: coordinates are XY pixels in the base's resized input frame (longest side ``image_size``), boxes
XYXY; embeddings are ``b x C x h x w`` on the base's grid over the padded input square; low-res logits are
``4h x 4w``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
from torch import Tensor, nn

SAM_FAMILY = "sam"
SAM2_FAMILY = "sam2"
SAM3_TRACKER_FAMILY = "sam3_tracker"
SAM_HQ_FAMILY = "sam_hq"
# Families of bases an adapter can be trained on, and their names in errors and docs. SAM 1 is
# segment_anything's Sam, transformers' SamModel and samplm_lite; SAM 2 / 2.1 the sam2 package and
# transformers' Sam2Model; SAM 3 tracker transformers' Sam3TrackerModel; HQ-SAM its SamHQModel.
FAMILY_NAMES = {
    SAM_FAMILY: "SAM 1",
    SAM2_FAMILY: "SAM 2 / 2.1",
    SAM3_TRACKER_FAMILY: "SAM 3 tracker",
    SAM_HQ_FAMILY: "HQ-SAM",
}


@runtime_checkable
class BaseIdentity(Protocol):
    """What an adapter is checked against, and where it runs.

    Attributes:
        family: the base family (a key of :data:`FAMILY_NAMES`); an adapter of another family is refused.
        embed_dim: width ``C`` of the sparse prompt tokens (256 for every SAM).
    """

    family: str

    @property
    def embed_dim(self) -> int: ...

    def fingerprint(self) -> str:
        """``"sha256:<hex>"`` of the prompt encoder + mask decoder weights (float16-rounded)."""
        ...

    def decoder_parameter(self) -> Tensor:
        """A parameter of the mask decoder: adapters are kept on its device and dtype."""
        ...


@dataclass(frozen=True)
class ImageFeatures:
    """What a base's decoder needs of one image (or a batch of images).

    Attributes:
        embedding: ``b x C x h x w`` image embedding (SAM: ``1 x 256 x 64 x 64``); the PLM attends to it.
        high_res: further feature maps the decoder's upsampling uses, finest first (SAM 2:
            ``b x 32 x 4h x 4w`` and ``b x 64 x 2h x 2w``); empty for SAM 1.
    """

    embedding: Tensor
    high_res: tuple[Tensor, ...] = ()

    def select(self, index: int | slice) -> ImageFeatures:
        """The features of the images ``index`` selects (batch axis kept)."""
        rows = slice(index, index + 1) if isinstance(index, int) else index
        return ImageFeatures(self.embedding[rows], tuple(level[rows] for level in self.high_res))

    def to(self, *args, **kwargs) -> ImageFeatures:
        """Every tensor moved or cast as ``Tensor.to(*args, **kwargs)``."""
        return ImageFeatures(
            self.embedding.to(*args, **kwargs), tuple(level.to(*args, **kwargs) for level in self.high_res)
        )

    def named(self) -> dict[str, Tensor]:
        """The tensors by name (``"embedding"``, ``"high_res_0"``, ...), as the cache stores them."""
        named = {"embedding": self.embedding}
        named.update({f"high_res_{i}": level for i, level in enumerate(self.high_res)})
        return named

    @classmethod
    def from_named(cls, tensors: dict[str, Tensor]) -> ImageFeatures:
        """Inverse of :meth:`named`."""
        levels = sorted((k for k in tensors if k.startswith("high_res_")), key=lambda k: int(k[9:]))
        return cls(tensors["embedding"], tuple(tensors[k] for k in levels))


@dataclass(frozen=True)
class DecoderOutput:
    """Raw decoder outputs for B prompts on one image.

    Attributes:
        low_res_logits: ``B x C x 4h x 4w`` mask logits (SAM: ``B x C x 256 x 256``), C = 3 with
            multimask output else 1.
        iou_predictions: ``B x C`` predicted IoU of each mask (with a PLM, plus its score offsets and
            readout).
        sparse_embeddings: ``B x N x 256`` prompt tokens given to the decoder (after the PLM).
        image_features: ``B x 256 x h x w`` image-side output of the decoder's two-way transformer
            (on the embedding's grid, covering the padded input square), when asked for; else ``None``.
    """

    low_res_logits: Tensor
    iou_predictions: Tensor
    sparse_embeddings: Tensor
    image_features: Tensor | None = None


class PromptableBase(ABC):
    """One base family's decoding steps (see the module docstring for frames and shapes).

    Attributes:
        family: the family name (:data:`FAMILY_NAMES`).
        image_size: side of the square input the image encoder takes (1024 for Meta's models).
    """

    family: str
    image_size: int
    #: logits above this are the mask (``Sam.mask_threshold``, ``SAM2ImagePredictor.mask_threshold``)
    mask_threshold: float = 0.0

    @property
    @abstractmethod
    def module(self) -> nn.Module:
        """The whole model (to move, cast or freeze it)."""

    @property
    @abstractmethod
    def embed_dim(self) -> int:
        """Width ``C`` of the prompt tokens and of the image embedding."""

    @property
    @abstractmethod
    def embedding_size(self) -> tuple[int, int]:
        """``(h, w)`` of the image embedding grid (SAM: ``(64, 64)``)."""

    @abstractmethod
    def fingerprint(self) -> str:
        """``"sha256:<hex>"`` of the prompt encoder + mask decoder weights (float16-rounded)."""

    @abstractmethod
    def decoder_parameter(self) -> Tensor:
        """A parameter of the mask decoder (its device and dtype are the adapters')."""

    @abstractmethod
    def encode_prompts(
        self,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        boxes: Tensor | None,
        mask_input: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """The prompt encoder: ``(sparse B x N x C, dense B x C x h x w)``.

        Args:
            point_coords: ``B x K x 2`` XY pixels in the input frame, or ``None``.
            point_labels: ``B x K`` (1 foreground, 0 background, -1 ignored).
            boxes: ``B x 4`` XYXY in the input frame, or ``None``.
            mask_input: ``B x 1 x 4h x 4w`` low-res logits, or ``None``.
        """

    @abstractmethod
    def dense_pe(self) -> Tensor:
        """``1 x C x h x w`` dense positional encoding of the image grid."""

    @abstractmethod
    def run_decoder(
        self,
        features: ImageFeatures,
        sparse: Tensor,
        dense: Tensor,
        multimask_output: bool,
        return_image_features: bool = False,
    ) -> DecoderOutput:
        """The frozen mask decoder on ``B`` token sets over one image (no adapter here).

        Args:
            features: one image's :class:`ImageFeatures` (batch 1), shared by the ``B`` prompts.
            sparse: ``B x N x C`` tokens (after the PLM, if any).
            dense: ``B x C x h x w``.
            multimask_output: three masks (True) or one (False).
            return_image_features: also return the two-way transformer's image-side output.
        """

    @abstractmethod
    def preprocess(self, image: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
        """An ``H x W x 3`` uint8 RGB image as the encoder's ``1 x 3 x S x S`` input (on the encoder's
        device and dtype), and ``(H', W')``: the image's size in the input frame."""

    @abstractmethod
    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        """The image encoder on a preprocessed ``b x 3 x S x S`` batch."""

    @abstractmethod
    def encoder_key(self) -> str:
        """Short hex key of the image encoder's weights and preprocessing (the embedding cache's folder)."""

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        """``(H', W')``: the size an ``(H, W)`` image has in the input frame. SAM 1 scales the longer side
        to ``image_size`` and pads to a square (``ResizeLongestSide``); SAM 2 stretches to the square.
        XY points map to the input frame by the factors ``(W'/W, H'/H)``."""
        from segment_anything.utils.transforms import ResizeLongestSide

        return tuple(ResizeLongestSide.get_preprocess_shape(*original_size, self.image_size))

    def scale_coords(self, coords: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
        """``... x 2`` XY pixels of an ``(H, W)`` image in the input frame (float64; for SAM 1 exactly
        ``ResizeLongestSide.apply_coords``). Boxes: scale ``boxes.reshape(-1, 2, 2)``."""
        (h, w), (new_h, new_w) = original_size, self.input_size(original_size)
        scaled = np.array(coords, dtype=float)
        scaled[..., 0] = scaled[..., 0] * (new_w / w)
        scaled[..., 1] = scaled[..., 1] * (new_h / h)
        return scaled


def family_name(family: str | None) -> str:
    """``family`` as errors show it: ``"SAM 2 / 2.1 (family 'sam2')"``."""
    family = family or SAM_FAMILY
    return f"{FAMILY_NAMES.get(family, family)} (family {family!r})"
