"""The small convolutional image encoder of ``samplm_tiny``: stride 16, 256 output channels.

A 256 x 256 input gives a 16 x 16 x 256 embedding (like SAM's 64 x 64 for 1024 px); dilated residual
blocks and a global-context branch let a click see the whole object.
"""

from __future__ import annotations

import torch
from segment_anything.modeling.common import LayerNorm2d
from torch import Tensor, nn


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.GroupNorm(8, cout),
        nn.GELU(),
    )


class _Residual(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(channels, channels, dilation=dilation), _conv(channels, channels))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class TinyImageEncoder(nn.Module):
    """``B x 3 x S x S`` (normalised, padded as SAM does) -> ``B x 256 x S/16 x S/16``.

    Attributes:
        img_size: the square input side (``Sam`` and ``SamPredictor`` read it).
    """

    def __init__(self, img_size: int = 256, width: int = 160, out_chans: int = 256) -> None:
        super().__init__()
        self.img_size = img_size
        self.stem = nn.Sequential(_conv(3, 32, 2), _conv(32, 64, 2), _conv(64, 96, 2), _conv(96, width, 2))
        self.blocks = nn.Sequential(*[_Residual(width, d) for d in (1, 2, 4, 1)])
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(width, width, 1), nn.GELU())
        self.neck = nn.Sequential(
            nn.Conv2d(2 * width, out_chans, 1, bias=False),
            LayerNorm2d(out_chans),
            nn.Conv2d(out_chans, out_chans, 3, padding=1, bias=False),
            LayerNorm2d(out_chans),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(self.stem(x))
        context = self.context(x).expand_as(x)
        return self.neck(torch.cat([x, context], dim=1))
