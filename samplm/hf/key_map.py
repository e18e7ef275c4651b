"""SAM 1 weights between ``segment_anything`` and transformers: the ``Sam`` <-> ``SamModel`` key map.

The two libraries hold the same tensors under different names (the shapes are the same, so no tensor is
reshaped or split). ``segment_anything`` name -> transformers name::

    image_encoder.                      -> vision_encoder.
        patch_embed.proj.*                  patch_embed.projection.*
        pos_embed                           pos_embed
        blocks.{i}.norm1 / norm2.*          layers.{i}.layer_norm1 / layer_norm2.*
        blocks.{i}.attn.*, mlp.*            layers.{i}.attn.* (fused qkv, proj, rel_pos_h/w), mlp.*
        neck.0 / 1 / 2 / 3.*                neck.conv1 / layer_norm1 / conv2 / layer_norm2.*
    prompt_encoder.pe_layer.positional_encoding_gaussian_matrix
                                        -> shared_image_embedding.positional_embedding
                                           (tied: prompt_encoder.shared_embedding.positional_embedding)
    prompt_encoder.                     -> prompt_encoder.
        point_embeddings.{i}.*              point_embed.{i}.*
        mask_downscaling.0 / 1 / 3.*        mask_embed.conv1 / layer_norm1 / conv2.*
        mask_downscaling.4 / 6.*            mask_embed.layer_norm2 / conv3.*
    mask_decoder.                       -> mask_decoder.
        transformer.layers.{i}.norm{k}.*    transformer.layers.{i}.layer_norm{k}.*
        transformer.norm_final_attn.*       transformer.layer_norm_final_attn.*
        output_upscaling.0 / 1 / 3.*        upscale_conv1 / upscale_layer_norm / upscale_conv2.*
        <mlp>.layers.0 / 1..d-2 / d-1.*     <mlp>.proj_in / layers.0..d-3 / proj_out.*

``<mlp>`` is ``output_hypernetworks_mlps.{i}`` or ``iou_prediction_head`` (``d`` layers); every other key
(attention projections, ``iou_token``, ``mask_tokens``, ``not_a_point_embed``, ``no_mask_embed``) has the
same name in both. Converted models agree within float tolerance, not bit for bit: transformers'
two-way blocks use LayerNorm eps ``1e-6`` where ``segment_anything`` uses ``1e-5``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import partial
from typing import Any

from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from torch import Tensor, nn

#: ``(segment_anything name, transformers name)`` templates, the first that matches wins (both ways).
#: ``{i}``/``{k}`` stand for an index, ``{rest}`` for the remainder of the name.
_RULES: tuple[tuple[str, str], ...] = (
    ("image_encoder.patch_embed.proj.{rest}", "vision_encoder.patch_embed.projection.{rest}"),
    ("image_encoder.blocks.{i}.norm{k}.{rest}", "vision_encoder.layers.{i}.layer_norm{k}.{rest}"),
    ("image_encoder.blocks.{rest}", "vision_encoder.layers.{rest}"),
    ("image_encoder.neck.0.{rest}", "vision_encoder.neck.conv1.{rest}"),
    ("image_encoder.neck.1.{rest}", "vision_encoder.neck.layer_norm1.{rest}"),
    ("image_encoder.neck.2.{rest}", "vision_encoder.neck.conv2.{rest}"),
    ("image_encoder.neck.3.{rest}", "vision_encoder.neck.layer_norm2.{rest}"),
    ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
    (
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "shared_image_embedding.positional_embedding",
    ),
    ("prompt_encoder.point_embeddings.{rest}", "prompt_encoder.point_embed.{rest}"),
    ("prompt_encoder.mask_downscaling.0.{rest}", "prompt_encoder.mask_embed.conv1.{rest}"),
    ("prompt_encoder.mask_downscaling.1.{rest}", "prompt_encoder.mask_embed.layer_norm1.{rest}"),
    ("prompt_encoder.mask_downscaling.3.{rest}", "prompt_encoder.mask_embed.conv2.{rest}"),
    ("prompt_encoder.mask_downscaling.4.{rest}", "prompt_encoder.mask_embed.layer_norm2.{rest}"),
    ("prompt_encoder.mask_downscaling.6.{rest}", "prompt_encoder.mask_embed.conv3.{rest}"),
    ("prompt_encoder.not_a_point_embed.{rest}", "prompt_encoder.not_a_point_embed.{rest}"),
    ("prompt_encoder.no_mask_embed.{rest}", "prompt_encoder.no_mask_embed.{rest}"),
    (
        "mask_decoder.transformer.layers.{i}.norm{k}.{rest}",
        "mask_decoder.transformer.layers.{i}.layer_norm{k}.{rest}",
    ),
    (
        "mask_decoder.transformer.norm_final_attn.{rest}",
        "mask_decoder.transformer.layer_norm_final_attn.{rest}",
    ),
    ("mask_decoder.output_upscaling.0.{rest}", "mask_decoder.upscale_conv1.{rest}"),
    ("mask_decoder.output_upscaling.1.{rest}", "mask_decoder.upscale_layer_norm.{rest}"),
    ("mask_decoder.output_upscaling.3.{rest}", "mask_decoder.upscale_conv2.{rest}"),
    ("mask_decoder.{rest}", "mask_decoder.{rest}"),
)
#: transformers' copy of the point-encoding matrix: the same parameter as ``shared_image_embedding``'s.
_TIED_HF_KEY = "prompt_encoder.shared_embedding.positional_embedding"
_TIED_HF_SOURCE = "shared_image_embedding.positional_embedding"
_PLACEHOLDERS = {"i": r"\d+", "k": r"\d+", "rest": r".+"}
# The decoder's MLPs: segment_anything numbers all d linear layers, transformers names the first and last.
_SAM_MLP = re.compile(
    r"^(?P<mlp>mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(?P<n>\d+)\.(?P<p>.+)$"
)
_HF_MLP = re.compile(
    r"^(?P<mlp>mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))"
    r"\.(?P<layer>proj_in|proj_out|layers\.(?P<n>\d+))\.(?P<p>.+)$"
)


def _compile(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(
        re.escape(part) if j % 2 == 0 else f"(?P<{part}>{_PLACEHOLDERS[part]})"
        for j, part in enumerate(parts)
    )
    return re.compile(f"^{pattern}$")


_SAM_PATTERNS = [(_compile(sam), hf) for sam, hf in _RULES]
_HF_PATTERNS = [(_compile(hf), sam) for sam, hf in _RULES]


def _rename(key: str, patterns: list[tuple[re.Pattern[str], str]], source: str) -> str:
    for pattern, template in patterns:
        match = pattern.match(key)
        if match:
            return template.format(**match.groupdict())
    raise KeyError(f"{source} key {key!r} has no counterpart in the SAM key map")


def _mlp_depths(state: Mapping[str, Tensor], pattern: re.Pattern[str]) -> dict[str, int]:
    """Per decoder MLP prefix: the highest ``layers.{n}`` index in ``state`` (``-1``: none)."""
    depths: dict[str, int] = {}
    for key in state:
        match = pattern.match(key)
        if match:
            n = int(match["n"]) if match["n"] is not None else -1
            depths[match["mlp"]] = max(depths.get(match["mlp"], -1), n)
    return depths


def _sam_mlp_key(key: str, depths: dict[str, int]) -> str | None:
    """A ``segment_anything`` decoder-MLP key in transformers' naming (``None``: not an MLP key)."""
    match = _SAM_MLP.match(key)
    if match is None:
        return None
    n, last = int(match["n"]), depths[match["mlp"]]
    layer = "proj_in" if n == 0 else "proj_out" if n == last else f"layers.{n - 1}"
    return f"{match['mlp']}.{layer}.{match['p']}"


def _hf_mlp_key(key: str, depths: dict[str, int]) -> str | None:
    """A transformers decoder-MLP key in ``segment_anything``'s naming (``None``: not an MLP key)."""
    match = _HF_MLP.match(key)
    if match is None:
        return None
    layer = match["layer"]
    n = 0 if layer == "proj_in" else depths[match["mlp"]] + 2 if layer == "proj_out" else int(match["n"]) + 1
    return f"{match['mlp']}.layers.{n}.{match['p']}"


def sam_to_hf_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``segment_anything`` ``Sam`` state dict (whole or any part of it) in transformers' ``SamModel``
    names. The point-encoding matrix appears under both of transformers' tied names.

    Raises:
        KeyError: a key the map does not know (names the key).
    """
    depths = _mlp_depths(state, _SAM_MLP)
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        out[_sam_mlp_key(key, depths) or _rename(key, _SAM_PATTERNS, "segment_anything")] = value
    if _TIED_HF_SOURCE in out:
        out[_TIED_HF_KEY] = out[_TIED_HF_SOURCE]
    return out


def hf_to_sam_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A transformers ``SamModel`` state dict (whole or any part of it) in ``segment_anything``'s ``Sam``
    names. ``prompt_encoder.shared_embedding.positional_embedding`` is the tied copy of
    ``shared_image_embedding.positional_embedding`` and is used only when that one is absent.

    Raises:
        KeyError: a key the map does not know (names the key).
        ValueError: the two tied copies hold different values.
    """
    state = dict(state)
    tied = state.pop(_TIED_HF_KEY, None)
    if tied is not None:
        source = state.setdefault(_TIED_HF_SOURCE, tied)
        if source is not tied and not source.equal(tied):
            raise ValueError(f"{_TIED_HF_KEY} and {_TIED_HF_SOURCE} are tied in SamModel but differ here")
    depths = _mlp_depths(state, _HF_MLP)
    return {
        _hf_mlp_key(key, depths) or _rename(key, _HF_PATTERNS, "transformers"): value
        for key, value in state.items()
    }


def segment_anything_from_hf(model: Any) -> Sam:
    """The ``segment_anything`` ``Sam`` holding a transformers ``SamModel``'s weights.

    The ``Sam`` is built from the model's config (any ViT size: ``vit_b``/``vit_l``/``vit_h`` or a custom
    one), gets SAM's pixel mean and std (transformers keeps them in the processor, not the model), and loads
    the converted weights strictly. Eval mode, on the CPU.

    Raises:
        TypeError: ``model`` is not a ``SamModel``.
    """
    from transformers import SamModel

    if not isinstance(model, SamModel):
        raise TypeError(f"expected a transformers SamModel, got {type(model).__name__}")
    sam = _sam_from_config(model.config)
    state = {key: value.detach().to("cpu") for key, value in model.state_dict().items()}
    sam.load_state_dict(hf_to_sam_state(state), strict=True)
    return sam.eval()


def hf_from_segment_anything(sam: Sam, config: Any) -> Any:
    """A transformers ``SamModel`` of ``config`` (a ``SamConfig`` whose sizes match ``sam``) holding the
    weights of a ``segment_anything`` ``Sam``, loaded strictly. Eval mode, on the CPU."""
    from transformers import SamModel

    model = SamModel(config)
    state = {key: value.detach().to("cpu") for key, value in sam.state_dict().items()}
    model.load_state_dict(sam_to_hf_state(state), strict=True)
    return model.eval()


def _sam_from_config(config: Any) -> Sam:
    """An untrained ``segment_anything`` ``Sam`` with the sizes of a transformers ``SamConfig``."""
    from ..base.parts import SAM_PIXEL_MEAN, SAM_PIXEL_STD

    vision, prompt, decoder = config.vision_config, config.prompt_encoder_config, config.mask_decoder_config
    if 2 * vision.num_pos_feats != prompt.hidden_size:
        raise ValueError(
            f"vision_config.num_pos_feats ({vision.num_pos_feats}) must be half of the prompt width "
            f"({prompt.hidden_size}) for a segment_anything Sam"
        )
    grid = prompt.image_embedding_size
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=vision.image_size,
            patch_size=vision.patch_size,
            in_chans=vision.num_channels,
            embed_dim=vision.hidden_size,
            depth=vision.num_hidden_layers,
            num_heads=vision.num_attention_heads,
            mlp_ratio=vision.mlp_dim / vision.hidden_size,
            out_chans=vision.output_channels,
            qkv_bias=vision.qkv_bias,
            norm_layer=partial(nn.LayerNorm, eps=vision.layer_norm_eps),
            use_abs_pos=vision.use_abs_pos,
            use_rel_pos=vision.use_rel_pos,
            window_size=vision.window_size,
            global_attn_indexes=tuple(vision.global_attn_indexes),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt.hidden_size,
            image_embedding_size=(grid, grid),
            input_image_size=(prompt.image_size, prompt.image_size),
            mask_in_chans=prompt.mask_input_channels,
        ),
        mask_decoder=MaskDecoder(
            transformer_dim=decoder.hidden_size,
            transformer=TwoWayTransformer(
                depth=decoder.num_hidden_layers,
                embedding_dim=decoder.hidden_size,
                num_heads=decoder.num_attention_heads,
                mlp_dim=decoder.mlp_dim,
                attention_downsample_rate=decoder.attention_downsample_rate,
            ),
            num_multimask_outputs=decoder.num_multimask_outputs,
            iou_head_depth=decoder.iou_head_depth,
            iou_head_hidden_dim=decoder.iou_head_hidden_dim,
        ),
        pixel_mean=list(SAM_PIXEL_MEAN),
        pixel_std=list(SAM_PIXEL_STD),
    )
