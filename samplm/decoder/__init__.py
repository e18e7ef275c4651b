"""Prompt encoder -> PLM -> frozen mask decoder -> masks.

``decode.py`` is the one forward path (prediction, training, evaluation and several adapters at once);
``predictor.py`` is :class:`CustomSamPredictor`, a drop-in ``SamPredictor`` that hot-swaps adapters,
composed of ``adapters.py`` (the registry of named adapters), ``image_state.py`` (the image-state cache:
identical pixels skip the encoder, the encoder key, per-image adapter contexts) and ``predict_many.py``
(one prompt through several adapters).
"""

from .decode import DecoderOutput, decode_prompts, decode_with_adapters
from .predictor import CustomSamPredictor

__all__ = ["CustomSamPredictor", "DecoderOutput", "decode_prompts", "decode_with_adapters"]
