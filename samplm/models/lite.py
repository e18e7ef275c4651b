"""``samplm_lite``: a small SAM that sees real photos, shipped with samplm.

SAM's own prompt encoder and mask decoder at SAM's width (adapters have exactly the shapes they have on
``vit_h``) on an ImageNet-pretrained EfficientNet-Lite0 trunk with a multi-scale neck
(:mod:`samplm.models.lite_encoder`): 512 px input, 32 x 32 x 256 embedding. Pretrained with SAM's
recipe on real photos with multi-granularity pseudo-masks (``pretraining/lite`` in the repository).
The weights (float16 safetensors) are package data; see ``docs/samplm-lite.md``.
"""

from __future__ import annotations

import os
from pathlib import Path

from segment_anything.modeling import Sam

from .lite_encoder import LiteImageEncoder
from .parts import SAM_PIXEL_MEAN, SAM_PIXEL_STD, build_mask_decoder, build_prompt_encoder

LITE_IMAGE_SIZE = 512
LITE_GRID = 32
LITE_WEIGHTS_PATH = Path(__file__).parent / "weights" / "samplm_lite.safetensors"


def build_sam_lite_architecture() -> Sam:
    """The ``samplm_lite`` architecture with random weights."""
    return Sam(
        image_encoder=LiteImageEncoder(LITE_IMAGE_SIZE),
        prompt_encoder=build_prompt_encoder(LITE_GRID, LITE_IMAGE_SIZE),
        mask_decoder=build_mask_decoder(),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )


def build_sam_lite(checkpoint: str | os.PathLike[str] | None = None) -> Sam:
    """``samplm_lite`` with its packaged pretrained weights (or ``checkpoint``), in eval mode, float32.

    Raises:
        FileNotFoundError: the packaged weights are missing (a broken install) and no checkpoint given.
    """
    from .loading import load_state_dict

    path = Path(checkpoint) if checkpoint is not None else LITE_WEIGHTS_PATH
    if not path.is_file():
        raise FileNotFoundError(
            f"samplm_lite weights not found at {path}; reinstall samplm or pass a checkpoint"
        )
    sam = build_sam_lite_architecture()
    state = {k: v.float() for k, v in load_state_dict(path).items()}
    sam.load_state_dict(state, strict=True)
    return sam.eval()
