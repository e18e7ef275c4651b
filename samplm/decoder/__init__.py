"""Prompt encoder -> PLM -> frozen mask decoder -> masks.

``decode.py`` is the one forward path (prediction, training, evaluation and several adapters at once);
``predictor.py`` is :class:`CustomSamPredictor`, a drop-in ``SamPredictor`` that hot-swaps adapters,
composed of ``adapters.py`` (the registry of named adapters), ``image_state.py`` (the image-state cache:
identical pixels skip the encoder, the encoder key, per-image adapter contexts) and ``predict_many.py``
(one prompt through several adapters); ``adapter_methods.py`` holds the adapter methods every predictor
shares, and ``sam2_predictor.py`` is :class:`CustomSam2Predictor`, the same over ``sam2``'s
``SAM2ImagePredictor`` (imported on use: ``sam2`` is optional); ``sam2_video.py`` the video predictor's.
"""

from .decode import DecoderOutput, decode_prompts, decode_with_adapters
from .predictor import CustomSamPredictor

__all__ = ["CustomSamPredictor", "DecoderOutput", "decode_prompts", "decode_with_adapters"]
