"""ONNX export: SAM's prompt encoder, an adapter's PLM and SAM's mask decoder as one graph.

The graph has exactly the inputs and outputs of ``segment_anything``'s ``SamOnnxModel`` (what
``scripts/export_onnx_model.py`` writes and SAM's web demos run with onnxruntime-web)::

    inputs:  image_embeddings 1 x 256 x h x w, point_coords 1 x N x 2 (input frame), point_labels 1 x N,
             mask_input 1 x 1 x 4h x 4w, has_mask_input 1, orig_im_size 2 (H, W)
    outputs: masks 1 x M x H x W (logits), iou_predictions 1 x M, low_res_masks 1 x M x 4h x 4w

so an existing SAM ONNX client loads it unchanged. It is built on ``SamOnnxModel`` (a subclass), with
two changes: the PLM adds its offset to the point tokens before the frozen decoder (inside the graph,
from the image embedding it is given), and the crop of the padded mask to the image is computed from
``orig_im_size`` with traceable operations, so the graph is exact for every image size (the original
crops to the size of the dummy image used when tracing).

:func:`export_encoder_onnx` writes the image encoder of samplm's small bases (``1 x 3 x S x S``
normalised, padded input -> embedding), so the whole model runs without PyTorch.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from segment_anything.modeling import Sam
from segment_anything.utils.onnx import SamOnnxModel
from torch import Tensor, nn
from torch.nn import functional as F

from ..adapter import PromptLearningModule
from ..adapter.prompt_adapter import PromptAdapter
from ..constants import WEB_MANIFEST_NAME
from ..decoder.adapters import require_finite_outputs
from ..errors import ConfigError
from ..utils.checks import shown
from ..utils.files import atomic_write, atomic_write_text
from ..utils.fingerprint import sam_fingerprint
from ..version import __version__

#: Opsets the export is checked with (the PLM's attention needs 14+; SAM's script uses 17).
SUPPORTED_OPSETS = range(14, 21)
INPUT_NAMES = [
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
]
OUTPUT_NAMES = ["masks", "iou_predictions", "low_res_masks"]
#: File names in a web bundle (:func:`write_web_bundle`): fixed, or numbered for adapters; never taken
#: from a task or label, so no adapter can overwrite the encoder, plain SAM or a file outside the folder.
WEB_ENCODER_FILE = "encoder.onnx"
WEB_PLAIN_SAM_FILE = "sam.onnx"
#: The page's label for plain SAM in ``samplm export --web``: not a task name, so no adapter takes it.
WEB_PLAIN_SAM_LABEL = "SAM (no adapter)"
#: torch's note that SAM's best-mask selection (advanced indexing, ``return_single_mask``) becomes
#: several ONNX operators; its indices are never negative, so the graph is exact.
ATEN_INDEX_WARNING = r"Exporting aten::index operator"
#: onnxruntime's advice before dynamic quantisation: its pre-processing (shape inference, graph
#: optimisation) changes nothing for the int8 MatMul weights :func:`_quantize` writes.
PREPROCESSING_ADVICE = "Please consider to run pre-processing before quantization"


class _AdaptedDecoder(nn.Module):
    """SAM's mask decoder with the PLM's offset added to the sparse prompt tokens first, and its mask mix,
    score offsets and score readout applied to all four outputs
    (:meth:`PromptLearningModule.adjust_outputs`)."""

    def __init__(self, decoder: nn.Module, plm: PromptLearningModule | None) -> None:
        super().__init__()
        self.decoder, self.plm = decoder, plm
        self.num_mask_tokens = decoder.num_mask_tokens

    def predict_masks(self, image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings):
        if self.plm is not None:
            sparse_prompt_embeddings = self.plm(sparse_prompt_embeddings, image_embeddings, image_pe)
        masks, scores = self.decoder.predict_masks(
            image_embeddings=image_embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse_prompt_embeddings,
            dense_prompt_embeddings=dense_prompt_embeddings,
        )
        if self.plm is not None:
            masks, scores = self.plm.adjust_outputs(masks, scores, True, image_embeddings)
        return masks, scores


class _AdaptedSam(nn.Module):
    """What ``SamOnnxModel`` reads of a ``Sam``, with the adapted decoder (the ``Sam`` is not changed)."""

    def __init__(self, sam: Sam, plm: PromptLearningModule | None) -> None:
        super().__init__()
        self.prompt_encoder = sam.prompt_encoder
        self.mask_decoder = _AdaptedDecoder(sam.mask_decoder, plm)
        self.image_encoder = sam.image_encoder
        self.mask_threshold = sam.mask_threshold


class AdapterOnnxModel(SamOnnxModel):
    """``SamOnnxModel`` with an adapter's PLM inside and an exact crop for any ``orig_im_size``.

    Args:
        sam: the frozen SAM.
        adapter: the adapter (``None``: plain SAM, the same graph as ``SamOnnxModel`` but exact for every
            image size).
        return_single_mask, use_stability_score, return_extra_metrics: as ``SamOnnxModel``.
    """

    def __init__(
        self,
        sam: Sam,
        adapter: PromptAdapter | None,
        return_single_mask: bool,
        use_stability_score: bool = False,
        return_extra_metrics: bool = False,
    ) -> None:
        plm = adapter.plm if adapter is not None else None
        super().__init__(_AdaptedSam(sam, plm), return_single_mask, use_stability_score, return_extra_metrics)

    def mask_postprocessing(self, masks: Tensor, orig_im_size: Tensor) -> Tensor:
        """Upscale to the padded square, crop to the resized image, resize to ``orig_im_size``; the crop
        is an index selection whose length is computed in the graph (not a traced constant)."""
        masks = F.interpolate(
            masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False
        )
        prepadded = self.resize_longest_image_size(orig_im_size, self.img_size)
        rows = torch.arange(prepadded[0], device=masks.device)
        cols = torch.arange(prepadded[1], device=masks.device)
        masks = masks.index_select(2, rows).index_select(3, cols)
        size = orig_im_size.to(torch.int64)
        return F.interpolate(masks, size=(size[0], size[1]), mode="bilinear", align_corners=False)


def export_onnx(
    sam: Sam,
    out: str | os.PathLike[str],
    *,
    adapter: PromptAdapter | None = None,
    model_type: str | None = None,
    return_single_mask: bool = False,
    opset: int = 17,
    quantize: bool = False,
) -> Path:
    """Write the prompt encoder + PLM + mask decoder graph (see the module docstring).

    Args:
        sam: the SAM the adapter was trained against.
        out: the ``.onnx`` file to write (atomically).
        adapter: the adapter to put inside (``None``: plain SAM).
        model_type: recorded in the metadata.
        return_single_mask: one mask per prompt (SAM's rule: the best of three for one click, the
            single-mask output for more) instead of all four mask outputs.
        opset: ONNX opset, one of :data:`SUPPORTED_OPSETS`.
        quantize: also apply onnxruntime's dynamic quantisation (int8 weights) to the written file.

    Returns:
        The file written. Its metadata holds ``samplm_adapter`` (task), ``samplm_adapter_fingerprint``
        (the adapter's weights SHA-256, if known), ``samplm_base`` (model type and SAM fingerprint) and
        ``samplm_version``.

    Raises:
        ConfigError: an unsupported opset.
        AdapterOutputError: the adapter makes the graph's outputs NaN or infinite (its weights overflow;
            checked on a probe prompt before anything is written, as ``predict`` checks them).
    """
    _check_opset(opset)
    if adapter is not None:
        adapter.check_width(sam)
        adapter = adapter.eval()
    model = AdapterOnnxModel(sam.eval(), adapter, return_single_mask=return_single_mask).eval()
    dummy = _dummy_inputs(sam)
    if adapter is not None:
        _check_outputs(model, dummy, adapter.task)
    metadata = {
        "samplm_adapter": adapter.task if adapter is not None else "",
        "samplm_adapter_fingerprint": (adapter.config.weights_sha256 or "") if adapter is not None else "",
        "samplm_base": json.dumps({"model_type": model_type, "fingerprint": sam_fingerprint(sam)}),
        "samplm_version": __version__,
    }
    return _write(
        model,
        dummy,
        out,
        opset,
        metadata,
        quantize,
        dynamic={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}},
    )


def export_encoder_onnx(
    sam: Sam, out: str | os.PathLike[str], *, opset: int = 17, model_type: str | None = None
) -> Path:
    """Write the image encoder: ``1 x 3 x S x S`` float input (SAM's ``preprocess``: normalised, padded
    bottom/right to ``S`` = ``img_size``) -> ``1 x 256 x h x w`` embedding. Meant for samplm's small
    bases; ViT-H's encoder exports too but is large."""
    _check_opset(opset)
    size = int(sam.image_encoder.img_size)
    dummy = {"image": torch.zeros(1, 3, size, size)}
    metadata = {
        "samplm_base": json.dumps({"model_type": model_type, "img_size": size}),
        "samplm_version": __version__,
    }
    return _write(
        sam.image_encoder.eval(),
        dummy,
        out,
        opset,
        metadata,
        False,
        dynamic=None,
        outputs=["image_embeddings"],
    )


def _check_opset(opset: int) -> None:
    if opset not in SUPPORTED_OPSETS:
        raise ConfigError(
            "--opset", f"must be in {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}, got {opset}"
        )


def _check_outputs(model: AdapterOnnxModel, probe: dict[str, Tensor], task: str) -> None:
    """Run the graph's module on the ``probe`` inputs: an adapter whose weights overflow is refused with
    the :class:`~samplm.errors.AdapterOutputError` that ``predict`` raises for it."""
    with torch.no_grad():
        masks, scores, low_res = model(*probe.values())
    require_finite_outputs(task, torch.cat([masks.flatten(), low_res.flatten()]), scores)


def _dummy_inputs(sam: Sam) -> dict[str, Tensor]:
    """Inputs of the right shapes for tracing (SAM's export script's), also the probe of
    :func:`_check_outputs`; seeded, so an export is repeatable."""
    h, w = sam.prompt_encoder.image_embedding_size
    dim = sam.prompt_encoder.embed_dim
    seed = torch.Generator().manual_seed(0)
    return {
        "image_embeddings": torch.randn(1, dim, h, w, dtype=torch.float, generator=seed),
        "point_coords": torch.randint(
            low=0, high=int(sam.image_encoder.img_size), size=(1, 5, 2), dtype=torch.float, generator=seed
        ),
        "point_labels": torch.randint(low=0, high=4, size=(1, 5), dtype=torch.float, generator=seed),
        "mask_input": torch.randn(1, 1, 4 * h, 4 * w, dtype=torch.float, generator=seed),
        "has_mask_input": torch.tensor([1], dtype=torch.float),
        "orig_im_size": torch.tensor([500, 600], dtype=torch.float),
    }


@contextlib.contextmanager
def quiet_export() -> Iterator[None]:
    """Within the block, the export's notes about itself do not reach the user; every other warning and
    log record does, and the filters end with the block.

    Silenced: torch's ``TracerWarning`` (the models' Python shape checks hold for every input the graph
    accepts; tracing warns that they become constants, as in segment_anything's own export script),
    torch's ``aten::index`` note (:data:`ATEN_INDEX_WARNING`) and onnxruntime's pre-processing advice
    (:data:`PREPROCESSING_ADVICE`). onnxruntime's quantisation logs through Python's root logger, which
    it configures (``logging.basicConfig``) when it has no handler: here the root logger gets a filter
    dropping that one message and, if it has no handler, Python's last-resort handler for the block
    (what an unconfigured logger prints with), so the user's logging is left as it was.
    """
    root = logging.getLogger()
    advice = _DropMessage(PREPROCESSING_ADVICE)
    borrowed = None if root.handlers or logging.lastResort is None else logging.lastResort
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=ATEN_INDEX_WARNING, category=UserWarning)
        root.addFilter(advice)
        if borrowed is not None:
            root.addHandler(borrowed)
        try:
            yield
        finally:
            root.removeFilter(advice)
            if borrowed is not None:
                root.removeHandler(borrowed)


class _DropMessage(logging.Filter):
    """Drops the log records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def _write(model, dummy, out, opset, metadata, quantize, *, dynamic, outputs=OUTPUT_NAMES) -> Path:
    import onnx

    def export(tmp: Path) -> None:
        with torch.no_grad(), quiet_export():
            torch.onnx.export(
                model,
                tuple(dummy.values()),
                str(tmp),
                input_names=list(dummy),
                output_names=outputs,
                dynamic_axes=dynamic,
                opset_version=opset,
                do_constant_folding=True,
                dynamo=False,
            )
        graph = onnx.load(str(tmp))
        for key, value in metadata.items():
            entry = graph.metadata_props.add()
            entry.key, entry.value = key, str(value)
        onnx.save(graph, str(tmp))
        if quantize:
            with quiet_export():
                _quantize(tmp, graph)

    return atomic_write(out, export)


def write_web_bundle(
    sam: Sam,
    adapters: dict[str, PromptAdapter | None],
    folder: str | os.PathLike[str],
    *,
    model_type: str | None = None,
    opset: int = 17,
) -> Path:
    """The models of samplm's browser page (``samplm serve-web``): ``encoder.onnx``, one decoder graph per
    adapter and ``models.json`` naming them with the base's preprocessing.

    Args:
        adapters: ``{label shown on the page: adapter}`` (``None``: plain SAM). Labels are text only:
            the graphs are ``sam.onnx`` (plain SAM) and ``adapter-<i>.onnx`` (``i``: the entry's index).

    Returns:
        The folder.

    Raises:
        ConfigError: a label is not a non-empty string; an unsupported opset.
        AdapterOutputError: an adapter's outputs overflow (checked for every adapter before the first
            file is written).
    """
    folder = Path(folder)
    _check_opset(opset)
    files = _web_files(sam, adapters)
    export_encoder_onnx(sam, folder / WEB_ENCODER_FILE, opset=opset, model_type=model_type)
    for file, adapter in {files[label]: adapter for label, adapter in adapters.items()}.items():
        export_onnx(sam, folder / file, adapter=adapter, model_type=model_type, opset=opset)
    manifest = {
        "model_type": model_type,
        "img_size": int(sam.image_encoder.img_size),
        "pixel_mean": sam.pixel_mean.flatten().tolist(),
        "pixel_std": sam.pixel_std.flatten().tolist(),
        "encoder": WEB_ENCODER_FILE,
        "adapters": [
            {"name": label, "task": adapter.task if adapter is not None else None, "decoder": files[label]}
            for label, adapter in adapters.items()
        ],
    }
    atomic_write_text(folder / WEB_MANIFEST_NAME, json.dumps(manifest, indent=1))
    return folder


def _web_files(sam: Sam, adapters: dict[str, PromptAdapter | None]) -> dict[str, str]:
    """``{label: graph file}`` of a web bundle, after checking every label and adapter (width, outputs)."""
    files = {}
    for index, (label, adapter) in enumerate(adapters.items()):
        if not isinstance(label, str) or not label:
            raise ConfigError("web bundle label", f"must be a non-empty string, got {shown(label)}")
        if adapter is not None:
            adapter.check_width(sam)
            model = AdapterOnnxModel(sam.eval(), adapter.eval(), return_single_mask=False)
            _check_outputs(model, _dummy_inputs(sam), adapter.task)
        files[label] = WEB_PLAIN_SAM_FILE if adapter is None else f"adapter-{index}.onnx"
    return files


def _quantize(path: Path, model) -> None:
    """onnxruntime's dynamic quantisation of the matrix products' weights (int8, per channel), except
    the products with SAM's positional encoding: its ``2 x C`` random Fourier matrix turns click
    coordinates into features, and rounding it moves every click."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    coordinates = [
        node.name
        for node in model.graph.node
        if node.op_type == "MatMul"
        and any(len(shapes.get(name, ())) == 2 and shapes[name][0] == 2 for name in node.input)
    ]
    quantize_dynamic(
        str(path),
        str(path),
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["MatMul"],
        nodes_to_exclude=coordinates,
    )
