"""samplm: customize a frozen Segment Anything Model to your task with prompt-learning adapters.

Data flow::

    image -> SAM image encoder -> (cached embedding) -> SAM prompt encoder -> PLM offset
          -> frozen SAM mask decoder -> masks (-> optional PMM polygon refinement)

Public API: :class:`PromptAdapter`, :class:`CustomSamPredictor`, :class:`AdapterConfig`,
:func:`build_sam`, :class:`AdapterMaskGenerator`.
"""

from .adapter import PromptAdapter
from .auto_masks import AdapterMaskGenerator
from .base import build_sam
from .config import AdapterConfig, BaseModelInfo, PLMConfig, PMMConfig
from .decode import DecoderOutput, decode_prompts
from .errors import (
    AdapterCompatibilityError,
    AdapterFormatError,
    AdapterNotFoundError,
    DataError,
    FingerprintMismatchWarning,
    ImageNotSetError,
    PromptError,
    SamplmError,
    SkippedDataWarning,
    UnknownAdapterError,
)
from .fingerprint import sam_fingerprint
from .predictor import CustomSamPredictor
from .version import __version__

__all__ = [
    "AdapterCompatibilityError",
    "AdapterConfig",
    "AdapterFormatError",
    "AdapterMaskGenerator",
    "AdapterNotFoundError",
    "BaseModelInfo",
    "CustomSamPredictor",
    "DataError",
    "DecoderOutput",
    "FingerprintMismatchWarning",
    "ImageNotSetError",
    "PLMConfig",
    "PMMConfig",
    "PromptAdapter",
    "PromptError",
    "SamplmError",
    "SkippedDataWarning",
    "UnknownAdapterError",
    "__version__",
    "build_sam",
    "decode_prompts",
    "sam_fingerprint",
]
