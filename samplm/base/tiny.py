"""``samplm_tiny``: a small pretrained SAM for tests and the synthetic banner task.

A small CNN image encoder (256 px input, 16 x 16 embedding) pretrained with SAM's recipe on a
procedural corpus of objects with wholes and parts (``pretraining/tiny`` in the repository);
see ``docs/samplm-tiny.md``.
"""

from __future__ import annotations

from .cnn_encoder import TinyImageEncoder
from .small_base import SmallBase

TINY = SmallBase("samplm_tiny", image_size=256, grid=16, encoder=TinyImageEncoder)
TINY_IMAGE_SIZE, TINY_GRID, WEIGHTS_PATH = TINY.image_size, TINY.grid, TINY.weights
# ``build_sam_tiny_architecture()``: random weights; ``build_sam_tiny(checkpoint=None)``: the packaged
# weights (or ``checkpoint``), strict, eval mode, float32 (see :meth:`SmallBase.build`).
build_sam_tiny_architecture = TINY.architecture
build_sam_tiny = TINY.build
