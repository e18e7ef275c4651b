"""``samplm_tiny``: a small pretrained SAM that ships with samplm.

SAM's own prompt encoder and mask decoder at SAM's width (so adapters have exactly the shapes they have
on ``vit_h``) and a small CNN image encoder (256 px input, 16 x 16 embedding), pretrained with SAM's
recipe on a procedural corpus of objects with wholes and parts (``pretraining/tiny`` in the repository).
The weights (float16 safetensors) are package data; see ``docs/samplm-tiny.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

from segment_anything.modeling import Sam

from .cnn_encoder import TinyImageEncoder
from .parts import SAM_PIXEL_MEAN, SAM_PIXEL_STD, build_mask_decoder, build_prompt_encoder

TINY_IMAGE_SIZE = 256
TINY_GRID = 16
WEIGHTS_PATH = Path(__file__).parent / "weights" / "samplm_tiny.safetensors"


def build_sam_tiny_architecture() -> Sam:
    """The ``samplm_tiny`` architecture with random weights."""
    return Sam(
        image_encoder=TinyImageEncoder(TINY_IMAGE_SIZE),
        prompt_encoder=build_prompt_encoder(TINY_GRID, TINY_IMAGE_SIZE),
        mask_decoder=build_mask_decoder(),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def build_sam_tiny(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    """``samplm_tiny`` with its packaged pretrained weights (or ``checkpoint``), in eval mode, float32.

    Raises:
        FileNotFoundError: the packaged weights are missing (a broken install) and no checkpoint given.
    """
    from .loading import load_state_dict

    path = Path(checkpoint) if checkpoint is not None else WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(f"samplm_tiny weights not found at {path}")
    sam = build_sam_tiny_architecture()
    state = {k: v.float() for k, v in load_state_dict(path).items()}
    sam.load_state_dict(state, strict=True)
    return sam.eval()
