"""The adapter-aware predictor of a base model: :class:`~samplm.CustomSamPredictor` for a
``segment_anything`` ``Sam`` (SAM 1, ``samplm_lite``, a converted transformers ``SamModel``),
:class:`~samplm.CustomSam2Predictor` for a ``sam2`` model.

The commands (``eval``, ``segment``, ``train``'s report) build their predictor here, so a new base family
adds one branch here and its predictor module, not edits in every command.
"""

from __future__ import annotations

from typing import Any

from segment_anything.modeling import Sam

from ..base.bases import as_base
from ..base.interface import SAM2_FAMILY
from .predictor import CustomSamPredictor


def predictor_for(model: Any, *, strict: bool = False) -> Any:
    """An adapter-aware predictor on ``model`` (shared, not copied), ``strict`` as the predictors take it.

    Both predictors offer ``set_image``, ``set_embedding``, ``predict``, ``predict_many``, ``decode``,
    ``upscale_logits`` and the adapter methods; ``predictor.base`` is the model behind
    :class:`~samplm.base.interface.PromptableBase` (its input frame, mask threshold and grid).

    Raises:
        TypeError: ``model`` is neither a ``Sam`` nor a ``sam2`` model.
    """
    if isinstance(model, Sam):
        return CustomSamPredictor(model, strict=strict)
    if as_base(model).family == SAM2_FAMILY:
        from .sam2_predictor import CustomSam2Predictor

        return CustomSam2Predictor(model, strict=strict)
    raise TypeError(f"no samplm predictor for a {type(model).__name__} base")
