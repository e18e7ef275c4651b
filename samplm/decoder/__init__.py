"""Prompt encoder -> PLM -> frozen mask decoder -> masks.

``decode.py`` is the one forward path (prediction, training, evaluation and several adapters at once);
``predictor.py`` is :class:`CustomSamPredictor`, a drop-in ``SamPredictor`` that hot-swaps adapters.
"""

from .decode import DecoderOutput, decode_prompts, decode_with_adapters
from .predictor import CustomSamPredictor

__all__ = ["CustomSamPredictor", "DecoderOutput", "decode_prompts", "decode_with_adapters"]
