"""Building SAM models by type, loading checkpoints safely, and a SAM without its image encoder.

Checkpoints are read with ``map_location="cpu"`` and ``weights_only=True`` (or from safetensors), so
CUDA-saved checkpoints load on CPU machines and no arbitrary pickled code runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam
from torch import nn

from ..errors import ConfigError
from .checkpoint import load_state_dict
from .lite import build_sam_lite
from .meta_sam2 import SAM2_MODEL_TYPES, build_sam2_model
from .parts import SAM_PIXEL_MEAN, SAM_PIXEL_STD, build_mask_decoder, build_prompt_encoder
from .tiny import build_sam_tiny

SAM_MODEL_TYPES = ("vit_h", "vit_l", "vit_b")
SMALL_MODEL_TYPES = ("samplm_lite", "samplm_tiny")
HF_MODEL_TYPE = "hf"  # a transformers SamModel folder or Hub id (--checkpoint), run as the same Sam
MODEL_TYPES = (*SAM_MODEL_TYPES, *SMALL_MODEL_TYPES, *SAM2_MODEL_TYPES, HF_MODEL_TYPE)
#: Model types whose weights are not bundled: ``--checkpoint`` is required.
CHECKPOINT_MODEL_TYPES = (*SAM_MODEL_TYPES, *SAM2_MODEL_TYPES, HF_MODEL_TYPE)
_DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")


def build_sam(model_type: str, checkpoint: str | os.PathLike[str] | None = None) -> Sam | Any:
    """A full SAM of ``model_type`` (``vit_h``/``vit_l``/``vit_b`` via ``sam_model_registry``, or one
    of samplm's own bases ``samplm_lite``/``samplm_tiny``, whose packaged weights are used when
    ``checkpoint`` is ``None``), with ``checkpoint`` loaded strictly if given. Eval mode, on CPU.

    ``sam2.1_hiera_*`` / ``sam2_hiera_*``: a ``sam2`` ``SAM2Base`` from the package's own config with Meta's
    checkpoint (:func:`samplm.base.meta_sam2.build_sam2_model`; needs ``pip install "samplm[sam2]"``).

    ``hf``: ``checkpoint`` is a transformers ``SamModel`` folder or Hub id (``facebook/sam-vit-base``); its
    weights become the ``segment_anything`` ``Sam`` they are (:func:`build_sam_from_transformers`)."""
    if model_type == HF_MODEL_TYPE:
        return build_sam_from_transformers(checkpoint)
    if model_type in SAM2_MODEL_TYPES:
        return build_sam2_model(model_type, checkpoint)
    if model_type == "samplm_tiny":
        return build_sam_tiny(checkpoint)
    if model_type == "samplm_lite":
        return build_sam_lite(checkpoint)
    elif model_type in sam_model_registry:
        sam = sam_model_registry[model_type](checkpoint=None)
    else:
        raise ValueError(f"unknown model type {model_type!r}; choose one of {MODEL_TYPES}")
    if checkpoint is not None:
        sam.load_state_dict(load_state_dict(checkpoint), strict=True)
    return sam.eval()


def build_sam_from_transformers(checkpoint: str | os.PathLike[str] | None) -> Sam:
    """The ``segment_anything`` ``Sam`` holding the weights of a transformers ``SamModel`` (a folder saved
    with ``save_pretrained``, or a Hub id), read from safetensors only and converted by samplm's key map
    (:func:`samplm.hf.key_map.segment_anything_from_hf`): the same masks, the same fingerprint.

    Raises:
        ConfigError: no ``checkpoint``, or it holds another transformers model (SAM 2, SAM 3 tracker, ...:
            wrap those with :class:`samplm.hf.SamAdapterModel` instead).
        ImportError: transformers is not installed (``pip install "samplm[hf]"``).
    """
    if checkpoint is None:
        raise ConfigError(
            "--checkpoint", "is required for --model-type hf: a transformers SamModel folder or Hub id"
        )
    try:
        from transformers import AutoConfig, SamModel
    except ImportError as exc:
        raise ImportError("--model-type hf needs transformers: pip install 'samplm[hf]'") from exc
    from ..hf.key_map import segment_anything_from_hf

    kind = AutoConfig.from_pretrained(os.fspath(checkpoint)).model_type
    if kind != "sam":
        raise ConfigError(
            f"--checkpoint {os.fspath(checkpoint)}",
            f"holds a transformers {kind!r} model; --model-type hf takes SamModel (SAM 1) folders: wrap "
            "other models with samplm.hf.SamAdapterModel",
        )
    model = SamModel.from_pretrained(os.fspath(checkpoint), use_safetensors=True)
    return segment_anything_from_hf(model)


class ImageEncoderPlaceholder(nn.Module):
    """Stands in for SAM's image encoder when only cached embeddings are used (keeps ``img_size``)."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError(
            "this SAM was built without its image encoder (cached embeddings only); "
            "build the full model to encode images"
        )


SAM_IMAGE_SIZE = 1024


def build_sam_without_image_encoder(
    model_type: str,
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    state_dict: Mapping[str, torch.Tensor] | None = None,
) -> Sam:
    """SAM's prompt encoder and mask decoder only, for training/evaluating from cached embeddings.

    For ``vit_h``/``vit_l``/``vit_b`` the two parts are identical in architecture (256 wide, 64 x 64
    embedding, 1024 px input); only their weights are read from ``checkpoint``. The image encoder is
    never built, which saves its memory (2.5 GB for ``vit_h``). ``state_dict`` may be passed instead
    of ``checkpoint`` when it is already loaded.
    """
    if model_type not in SAM_MODEL_TYPES:
        full = build_sam(model_type, checkpoint)
        full.image_encoder = ImageEncoderPlaceholder(full.image_encoder.img_size)
        return full
    sam = Sam(
        image_encoder=ImageEncoderPlaceholder(SAM_IMAGE_SIZE),
        prompt_encoder=build_prompt_encoder(64, SAM_IMAGE_SIZE),
        mask_decoder=build_mask_decoder(),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )
    if checkpoint is not None and state_dict is None:
        state_dict = load_state_dict(checkpoint)
    if state_dict is not None:
        state = {k: v for k, v in state_dict.items() if k.startswith(_DECODER_PREFIXES)}
        sam.load_state_dict(state, strict=False)
        missing = [k for k in sam.state_dict() if k.startswith(_DECODER_PREFIXES) and k not in state]
        if missing:
            raise ValueError(
                f"checkpoint {checkpoint} lacks {len(missing)} decoder weights, e.g. {missing[:3]}"
            )
    return sam.eval()
