"""Base models: the interface every family implements, building by type, safe checkpoint loading,
samplm's own small bases (lite, tiny)."""

from .bases import as_base, as_identity
from .interface import (
    FAMILY_NAMES,
    SAM2_FAMILY,
    SAM_FAMILY,
    BaseIdentity,
    DecoderOutput,
    ImageFeatures,
    PromptableBase,
)
from .lite import build_sam_lite, build_sam_lite_architecture
from .loading import (
    MODEL_TYPES,
    SAM_MODEL_TYPES,
    SMALL_MODEL_TYPES,
    build_sam,
    build_sam_without_image_encoder,
    load_state_dict,
)
from .meta_sam import SamBase
from .small_vit import build_small_vit_sam
from .tiny import build_sam_tiny, build_sam_tiny_architecture

__all__ = [
    "FAMILY_NAMES",
    "MODEL_TYPES",
    "SAM2_FAMILY",
    "SAM_FAMILY",
    "SAM_MODEL_TYPES",
    "SMALL_MODEL_TYPES",
    "BaseIdentity",
    "DecoderOutput",
    "ImageFeatures",
    "PromptableBase",
    "SamBase",
    "as_base",
    "as_identity",
    "build_sam",
    "build_sam_lite",
    "build_sam_lite_architecture",
    "build_sam_tiny",
    "build_sam_tiny_architecture",
    "build_sam_without_image_encoder",
    "build_small_vit_sam",
    "load_state_dict",
]
