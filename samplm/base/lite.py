"""``samplm_lite``: a small SAM that sees real photos.

An ImageNet-pretrained EfficientNet-Lite0 trunk with a multi-scale neck
(:mod:`samplm.base.lite_encoder`): 512 px input, 32 x 32 x 256 embedding (SAM's stride 16), pretrained
with SAM's recipe on real photos with multi-granularity pseudo-masks (``pretraining/lite`` in the
repository); see ``docs/samplm-lite.md``.
"""

from __future__ import annotations

from .lite_encoder import LiteImageEncoder
from .small_base import SmallBase

LITE = SmallBase("samplm_lite", image_size=512, grid=32, encoder=LiteImageEncoder)
LITE_IMAGE_SIZE, LITE_GRID, LITE_WEIGHTS_PATH = LITE.image_size, LITE.grid, LITE.weights
# ``build_sam_lite_architecture()``: random weights; ``build_sam_lite(checkpoint=None)``: the packaged
# weights (or ``checkpoint``), strict, eval mode, float32 (see :meth:`SmallBase.build`).
build_sam_lite_architecture = LITE.architecture
build_sam_lite = LITE.build
