"""samplm: customize a frozen Segment Anything Model to your task with prompt-learning adapters.

Data flow::

    image -> SAM image encoder -> (cached embedding) -> SAM prompt encoder -> PLM offset
          -> frozen SAM mask decoder -> masks (-> optional PMM polygon refinement)

Public API: :class:`PromptAdapter`, :class:`CustomSamPredictor`, :class:`AdapterConfig`,
:func:`build_sam`, :class:`AdapterMaskGenerator`; with ``samplm[sam2]`` :class:`CustomSam2Predictor` (SAM 2 /
2.1), with ``samplm[hf]`` :mod:`samplm.hf` (transformers' SAM, SAM 2, SAM 3 tracker). Bases are in
:mod:`samplm.base`.
"""

from typing import Any

from .adapter.config import AdapterConfig, BaseModelInfo, PLMConfig, PMMConfig
from .adapter.prompt_adapter import PromptAdapter
from .base import build_sam
from .decoder.decode import DecoderOutput, decode_prompts
from .decoder.predictor import CustomSamPredictor
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
from .segment.generator import AdapterMaskGenerator
from .utils.fingerprint import sam_fingerprint
from .version import __version__

__all__ = [
    "AdapterCompatibilityError",
    "AdapterConfig",
    "AdapterFormatError",
    "AdapterMaskGenerator",
    "AdapterNotFoundError",
    "BaseModelInfo",
    "CustomSam2Predictor",
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


def __getattr__(name: str) -> Any:
    """``CustomSam2Predictor`` is imported on first use: it needs the optional ``sam2`` package."""
    if name == "CustomSam2Predictor":
        from .decoder.sam2_predictor import CustomSam2Predictor

        return CustomSam2Predictor
    raise AttributeError(f"module 'samplm' has no attribute {name!r}")
