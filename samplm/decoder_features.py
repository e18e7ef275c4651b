"""Access to the mask decoder's two-way-transformer image-side output, without modifying SAM's code."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from segment_anything.modeling import Sam
from torch import Tensor


class DecoderFeatures:
    """Holds the last image-side tokens of the two-way transformer (``B x HW x 256``)."""

    image_tokens: Tensor | None = None

    def as_map(self, height: int, width: int) -> Tensor:
        """The tokens as a ``B x 256 x h x w`` feature map."""
        if self.image_tokens is None:
            raise RuntimeError("no decoder forward pass was captured")
        b, _, c = self.image_tokens.shape
        return self.image_tokens.transpose(1, 2).reshape(b, c, height, width)


@contextlib.contextmanager
def capture_decoder_features(sam: Sam) -> Iterator[DecoderFeatures]:
    """Within the block, record the two-way transformer's image-side output of each decoder call.

    A forward hook is registered on ``sam.mask_decoder.transformer`` and removed on exit, so use it on
    the training model only (a predictor sharing the same ``Sam`` would run the hook meanwhile).
    """
    holder = DecoderFeatures()

    def hook(module, inputs, output) -> None:
        holder.image_tokens = output[1]

    handle = sam.mask_decoder.transformer.register_forward_hook(hook)
    try:
        yield holder
    finally:
        handle.remove()
