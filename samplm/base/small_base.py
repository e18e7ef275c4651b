"""samplm's own small bases: a record per base (name, geometry, image encoder) and how to build one.

Each base is SAM's prompt encoder and mask decoder at SAM's width on a small image encoder, with
float16 weights shipped as package data in ``weights/<name>.safetensors``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segment_anything.modeling import Sam
from torch import nn

from .checkpoint import load_state_dict
from .parts import SAM_PIXEL_MEAN, SAM_PIXEL_STD, build_mask_decoder, build_prompt_encoder

WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass(frozen=True)
class SmallBase:
    """One of samplm's small bases.

    Attributes:
        name: its model type (``samplm_lite``, ``samplm_tiny``).
        image_size: square input side ``S`` (images are resized to it on their longest side, then padded).
        grid: embedding side: the encoder maps ``B x 3 x S x S`` to ``B x 256 x grid x grid``.
        encoder: builds the image encoder for ``image_size``.
    """

    name: str
    image_size: int
    grid: int
    encoder: Callable[[int], nn.Module]

    @property
    def weights(self) -> Path:
        return WEIGHTS_DIR / f"{self.name}.safetensors"

    def architecture(self) -> Sam:
        """The base with random weights, SAM's pixel normalisation."""
        return Sam(
            image_encoder=self.encoder(self.image_size),
            prompt_encoder=build_prompt_encoder(self.grid, self.image_size),
            mask_decoder=build_mask_decoder(),
            pixel_mean=list(SAM_PIXEL_MEAN),
            pixel_std=list(SAM_PIXEL_STD),
        )

    def build(self, checkpoint: str | os.PathLike[str] | None = None) -> Sam:
        """The base with its packaged weights (or ``checkpoint``) loaded strictly; eval mode, float32.

        Raises:
            FileNotFoundError: the file is missing (for the packaged weights: a broken install).
        """
        path = Path(checkpoint) if checkpoint is not None else self.weights
        if not path.is_file():
            raise FileNotFoundError(
                f"{self.name} weights not found at {path}; reinstall samplm or pass a checkpoint"
            )
        sam = self.architecture()
        sam.load_state_dict({k: v.float() for k, v in load_state_dict(path).items()}, strict=True)
        return sam.eval()
