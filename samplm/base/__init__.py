"""SAM models: building by type, safe checkpoint loading, samplm's own small bases (lite, tiny)."""

from .lite import build_sam_lite, build_sam_lite_architecture
from .loading import (
    MODEL_TYPES,
    SAM_MODEL_TYPES,
    SMALL_MODEL_TYPES,
    build_sam,
    build_sam_without_image_encoder,
    load_state_dict,
)
from .small_vit import build_small_vit_sam
from .tiny import build_sam_tiny, build_sam_tiny_architecture

__all__ = [
    "MODEL_TYPES",
    "SAM_MODEL_TYPES",
    "SMALL_MODEL_TYPES",
    "build_sam",
    "build_sam_lite",
    "build_sam_lite_architecture",
    "build_sam_tiny",
    "build_sam_tiny_architecture",
    "build_sam_without_image_encoder",
    "build_small_vit_sam",
    "load_state_dict",
]
