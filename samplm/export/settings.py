"""``ExportSettings``: the options of ``samplm export``: what :func:`~samplm.export.onnx.export_onnx`,
:func:`~samplm.export.onnx.export_encoder_onnx` and :func:`~samplm.export.onnx.write_web_bundle` get."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..utils.checks import Limit
from ..utils.settings import about
from .onnx import SUPPORTED_OPSETS


@dataclass(frozen=True)
class ExportSettings:
    """The adapter, the files or web folder to write, and how the graph is written."""

    adapter: str | None = field(
        default=None,
        metadata=about("adapter: directory, .safetensors, org/repo[@rev] or name (default: plain SAM)"),
    )
    out: str | None = field(default=None, metadata=about("the .onnx file to write"))
    return_single_mask: bool = field(default=False, metadata=about("one mask per prompt (SAM's rule)"))
    opset: int = field(
        default=17,
        metadata=about(
            "ONNX opset (default 17; 14 to 20)",
            limit=Limit(int, SUPPORTED_OPSETS.start, SUPPORTED_OPSETS.stop - 1),
        ),
    )
    quantize: bool = field(default=False, metadata=about("onnxruntime dynamic quantisation (int8)"))
    encoder: str | None = field(
        default=None,
        metadata=about("also write the image encoder to this .onnx file (samplm_tiny, samplm_lite)"),
    )
    web: str | None = field(
        default=None,
        metadata=about(
            "instead: write the browser page's models (encoder, plain SAM and --adapter decoders, "
            "models.json) into this folder, e.g. web-models (serve: samplm serve-web --models web-models)"
        ),
    )
