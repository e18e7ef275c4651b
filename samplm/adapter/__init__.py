"""The adapter: what samplm learns beside a frozen SAM, and the folder it lives in.

``plm.py`` (Prompt Learning Module: an offset on the prompt tokens, score offsets and readout, the mask mix),
``pmm.py`` (Point Matching Module: boundary points for the auxiliary loss and refinement),
``config.py`` (the adapter's ``config.json``), ``prompt_adapter.py`` (:class:`PromptAdapter`, the one owner
of an adapter folder), ``prototype.py`` (``prototype.safetensors``, for click-free segmentation),
``hub.py`` (short names and Hub repos), ``model_card.py`` (``README.md``).
"""

from .config import AdapterConfig, BaseModelInfo, PLMConfig, PMMConfig
from .plm import ImageContext, PromptLearningModule
from .pmm import PointMatchingModule, sample_point_features
from .prompt_adapter import PromptAdapter

__all__ = [
    "AdapterConfig",
    "BaseModelInfo",
    "ImageContext",
    "PLMConfig",
    "PMMConfig",
    "PointMatchingModule",
    "PromptAdapter",
    "PromptLearningModule",
    "sample_point_features",
]
