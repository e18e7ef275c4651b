"""``samplm export``: the adapter's ONNX graph, the image encoder or the example page's models, with the
options of :class:`~samplm.export.settings.ExportSettings`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..base.meta_sam2 import SAM2_MODEL_TYPES
from ..errors import ConfigError
from ..export.settings import ExportSettings
from ..workspace import build_full_sam
from .common import CONFIG_HELP, add_model_options, model_settings
from .options import add_settings, require, settings_from


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """``samplm export``: the export options, then the model options."""
    export = sub.add_parser(
        "export",
        help="write an adapter (with SAM's prompt encoder and mask decoder) as one ONNX graph",
        description="Write SAM's prompt encoder + the adapter's PLM + SAM's mask decoder as one ONNX graph "
        "with the inputs and outputs of segment_anything's SamOnnxModel (SAM's ONNX clients load it "
        "unchanged), exact for every image size. --encoder also writes the image encoder (small bases).",
    )
    add_settings(export, ExportSettings)
    add_model_options(export, cache=False)
    export.add_argument("--config", help=CONFIG_HELP)
    return export


def run(options: dict[str, Any]) -> int:
    """``samplm export``: the adapter's ONNX graph (and the image encoder with ``--encoder``)."""
    from ..adapter.prompt_adapter import PromptAdapter
    from ..export.onnx import WEB_PLAIN_SAM_LABEL, export_encoder_onnx, export_onnx, write_web_bundle

    require(options, "model_type")
    settings, model_type = settings_from(ExportSettings, options), options["model_type"]
    if model_type in SAM2_MODEL_TYPES:
        raise ConfigError(
            f"--model-type {model_type}",
            "has no ONNX export: samplm exports SAM 1 bases (segment_anything's SamOnnxModel path); run "
            "SAM 2 adapters with CustomSam2Predictor",
        )
    check_files(settings)
    sam = build_full_sam(model_type, model_settings(options).checkpoint).eval()
    adapter = PromptAdapter.load(settings.adapter) if settings.adapter else None
    if adapter is not None:
        adapter.check_compatible(sam, strict=True)  # a base mismatch is an error here, not a warning
    if settings.web:
        adapters = {WEB_PLAIN_SAM_LABEL: None, **({adapter.task: adapter} if adapter is not None else {})}
        folder = write_web_bundle(sam, adapters, settings.web, model_type=model_type, opset=settings.opset)
        print(f"wrote the page's models to {folder}; serve the page: samplm serve-web --models {folder}")
        return 0
    written = export_onnx(
        sam,
        settings.out,
        adapter=adapter,
        model_type=model_type,
        return_single_mask=settings.return_single_mask,
        opset=settings.opset,
        quantize=settings.quantize,
    )
    print(f"wrote {written} ({written.stat().st_size / 2**20:.1f} MiB)")
    if settings.encoder:
        encoder = export_encoder_onnx(sam, settings.encoder, opset=settings.opset, model_type=model_type)
        print(f"wrote {encoder} ({encoder.stat().st_size / 2**20:.1f} MiB)")
    return 0


def check_files(settings: ExportSettings) -> None:
    """``--out`` or ``--web`` (not both); ``--out`` and ``--encoder`` are two files, neither a folder;
    ``--web`` is not a file."""
    out, encoder, web = settings.out, settings.encoder, settings.web
    if not out and not web:
        raise ValueError("missing required option: --out (or --web)")
    if web and (out or encoder):
        raise ConfigError(
            "--web", "writes the encoder, the decoders and models.json; leave out --out and --encoder"
        )
    if web and Path(web).expanduser().is_file():
        raise ConfigError("--web", f"{web} is a file; give a folder (it is created if missing)")
    for flag, path in (("--out", out), ("--encoder", encoder)):
        if path and Path(path).expanduser().is_dir():
            raise ConfigError(flag, f"{path} is a folder; give the .onnx file to write")
    if out and encoder and Path(out).expanduser().resolve() == Path(encoder).expanduser().resolve():
        raise ConfigError(
            "--out and --encoder", f"name the same file ({out}, {encoder}); give two different files"
        )
