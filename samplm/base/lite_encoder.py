"""The image encoder of ``samplm_lite``: an EfficientNet-Lite0 trunk and a light multi-scale neck.

``B x 3 x 512 x 512`` (normalised and padded as SAM does) -> ``B x 256 x 32 x 32`` (stride 16, like
SAM's ``1024 px -> 64 x 64``). The trunk is timm's ``tf_efficientnet_lite0`` (TF "same" padding, the
padding its ImageNet weights were trained with) cut after its stride-32 stage; its stride 8, 16 and 32
features (40, 112 and 320 channels) are projected to 256 channels, resampled to the stride-16 grid,
concatenated and fused by two 3 x 3 convolutions with SAM's ``LayerNorm2d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn

TRUNK_NAME = "tf_efficientnet_lite0"
TRUNK_STAGES = (2, 3, 4)  # timm feature indices of the stride 8, 16 and 32 outputs
TRUNK_CHANNELS = (40, 112, 320)


def build_trunk() -> nn.Module:
    """EfficientNet-Lite0 as a timm feature extractor returning its stride 8/16/32 maps (random weights)."""
    import timm

    return timm.create_model(TRUNK_NAME, pretrained=False, features_only=True, out_indices=TRUNK_STAGES)


class MultiScaleNeck(nn.Module):
    """Fuses ``[B x 40 x 2h x 2w, B x 112 x h x w, B x 320 x h/2 x w/2]`` into ``B x 256 x h x w``."""

    def __init__(self, in_channels: tuple[int, ...] = TRUNK_CHANNELS, out_chans: int = 256) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_chans, 1) for c in in_channels)
        self.fuse = nn.Sequential(
            nn.Conv2d(out_chans * len(in_channels), out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.GELU(),
            nn.Conv2d(out_chans, out_chans, 3, padding=2, dilation=2, bias=False),
            LayerNorm2d(out_chans),
            nn.GELU(),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )
        # antialiased bilinear halving as a depthwise convolution (not a weight: not in the state dict)
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0]) / 8
        self.register_buffer(
            "halve", (taps[:, None] * taps[None, :]).expand(out_chans, 1, 4, 4).clone(), False
        )

    def forward(self, features: list[Tensor]) -> Tensor:
        size = features[1].shape[-2:]
        resampled = []
        for lateral, feature in zip(self.lateral, features, strict=True):
            resampled.append(self._resample(lateral(feature), tuple(size)))
        return self.fuse(torch.cat(resampled, dim=1))

    def _resample(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        """Antialiased bilinear resampling of ``B x C x H x W`` to ``size``, with operations ONNX has.

        Halving (the stride-8 map to the stride-16 grid) is antialiased bilinear's exact filter: a
        4 x 4 ``[1, 3, 3, 1] / 8`` kernel at stride 2, renormalised at the borders where taps fall
        outside. Upsampling is plain bilinear (antialiasing changes nothing there). Other ratios use
        ``F.interpolate(..., antialias=True)`` itself. All agree with it within float rounding.
        """
        h, w = x.shape[-2:]
        if (h, w) == size:
            return x
        if (h, w) == (2 * size[0], 2 * size[1]):
            kernel = self.halve.to(x.dtype)
            total = F.conv2d(x, kernel, stride=2, padding=1, groups=kernel.shape[0])
            weight = F.conv2d(torch.ones_like(x[:1, :1]), kernel[:1], stride=2, padding=1)
            return total / weight
        if h <= size[0] and w <= size[1]:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


class LiteImageEncoder(nn.Module):
    """``B x 3 x S x S`` -> ``B x 256 x S/16 x S/16``.

    Attributes:
        img_size: the square input side (``Sam`` and ``SamPredictor`` read it).
        trunk: the EfficientNet-Lite0 feature extractor.
        neck: the :class:`MultiScaleNeck`.
    """

    def __init__(self, img_size: int = 512, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        self.trunk = build_trunk()
        self.neck = MultiScaleNeck(out_chans=out_chans)

    def forward(self, x: Tensor) -> Tensor:
        return self.neck(self.trunk(x))
