"""SAM 2 / 2.1 as a base: the ``sam2`` package's ``SAM2Base`` (``sam2.1_hiera_{tiny,small,base_plus,large}``
and the ``sam2_`` ones), built from the package's own configs and Meta's checkpoints.

What differs from SAM 1, and how samplm handles it:

- **Input frame.** ``SAM2Transforms`` stretches the image to the ``1024 x 1024`` square (no padding), so an
  ``(H, W)`` image's input size is ``(1024, 1024)`` and points scale by ``(1024 / W, 1024 / H)``.
- **Image features.** The decoder also takes two high-resolution maps (``conv_s0``/``conv_s1`` of the
  backbone's finer levels, ``1 x 32 x 256 x 256`` and ``1 x 64 x 128 x 128``); they travel with the embedding
  in :class:`~samplm.base.interface.ImageFeatures`, and the embedding cache stores them.
- **Prompts.** As ``SAM2ImagePredictor._predict``: a box becomes two corner points (labels 2 and 3) placed
  before the clicks, and the prompt encoder always appends its padding point, so a box alone is three
  tokens. The PLM shifts all of them.
- **Object score.** SAM 2's decoder has an object-score token; samplm leaves it and its head as they are.
  The PLM's shifted prompt tokens reach it through the decoder's attention like any prompt, and the image
  predictor ignores it (as upstream); in video it gates masks as upstream.
- **Single-mask output.** With ``multimask_output=False`` SAM 2 picks by stability between its single-mask
  output and its best multimask output; the adapter's score offset for the single output applies to the
  mask picked.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..utils.fingerprint import parts_fingerprint
from .checkpoint import load_state_dict
from .interface import SAM2_FAMILY, DecoderOutput, ImageFeatures, PromptableBase

#: ``--model-type`` -> the ``sam2`` package's config (Meta's published checkpoints use the same names).
SAM2_CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
}
SAM2_MODEL_TYPES = tuple(SAM2_CONFIGS)
SAM2_PIXEL_MEAN, SAM2_PIXEL_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # SAM2Transforms', 0..1 scale
_BOX_LABELS = (2, 3)  # SAM 2's labels of a box's top-left and bottom-right corner points


def build_sam2_model(
    model_type: str, checkpoint: str | os.PathLike[str] | None = None, *, video: bool = False
) -> Any:
    """A ``sam2`` model of ``model_type`` (:data:`SAM2_MODEL_TYPES`) from the package's own config, with
    ``checkpoint`` (Meta's ``.pt``: a dict holding ``"model"``, read with ``weights_only=True``; or a
    ``.safetensors`` state dict) loaded strictly. Random weights when ``checkpoint`` is ``None``. Eval mode,
    on the CPU; with ``video`` a ``SAM2VideoPredictor``, else a ``SAM2Base`` for images.

    Raises:
        ImportError: ``sam2`` is not installed (``pip install "samplm[sam2]"``).
        ValueError: unknown ``model_type``.
    """
    if model_type not in SAM2_CONFIGS:
        raise ValueError(f"unknown SAM 2 model type {model_type!r}; choose one of {SAM2_MODEL_TYPES}")
    try:
        from sam2.build_sam import build_sam2, build_sam2_video_predictor
    except ImportError as exc:
        raise ImportError(f"--model-type {model_type} needs sam2: pip install 'samplm[sam2]'") from exc
    build = build_sam2_video_predictor if video else build_sam2
    model = build(SAM2_CONFIGS[model_type], ckpt_path=None, device="cpu")
    if checkpoint is not None:
        model.load_state_dict(load_state_dict(checkpoint), strict=True)
    return model.eval()


class Sam2Base(PromptableBase):
    """A ``sam2`` ``SAM2Base`` behind :class:`PromptableBase` (the model is shared, not copied).

    Args:
        model: the frozen SAM 2 model (``build_sam2`` / ``build_sam2_video_predictor``).
    """

    family = SAM2_FAMILY
    input_frame = "square"

    def __init__(self, model: Any) -> None:
        self.model = model
        self.image_size = int(model.image_size)
        self._transforms: Any = None

    @property
    def module(self) -> Any:
        return self.model

    @property
    def transforms(self) -> Any:
        """sam2's ``SAM2Transforms`` at this model's resolution (built on first use)."""
        if self._transforms is None:
            from sam2.utils.transforms import SAM2Transforms

            self._transforms = SAM2Transforms(resolution=self.image_size, mask_threshold=self.mask_threshold)
        return self._transforms

    @property
    def embed_dim(self) -> int:
        return int(self.model.sam_prompt_encoder.embed_dim)

    @property
    def embedding_size(self) -> tuple[int, int]:
        return tuple(self.model.sam_prompt_encoder.image_embedding_size)

    def input_size(self, original_size: tuple[int, int]) -> tuple[int, int]:
        return (self.image_size, self.image_size)

    def fingerprint(self) -> str:
        model = self.model
        return parts_fingerprint(
            {"sam_prompt_encoder": model.sam_prompt_encoder, "sam_mask_decoder": model.sam_mask_decoder}
        )

    def decoder_parameter(self) -> Tensor:
        return next(self.model.sam_mask_decoder.parameters())

    def encode_prompts(
        self,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        boxes: Tensor | None,
        mask_input: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        points = (point_coords, point_labels) if point_coords is not None else None
        if boxes is not None:
            corners = boxes.reshape(-1, 2, 2)
            labels = torch.tensor([_BOX_LABELS], dtype=torch.int, device=boxes.device).repeat(len(corners), 1)
            if points is not None:
                points = (torch.cat([corners, points[0]], dim=1), torch.cat([labels, points[1]], dim=1))
            else:
                points = (corners, labels)
        return self.model.sam_prompt_encoder(points=points, boxes=None, masks=mask_input)

    def dense_pe(self) -> Tensor:
        return self.model.sam_prompt_encoder.get_dense_pe()

    def run_decoder(
        self,
        features: ImageFeatures,
        sparse: Tensor,
        dense: Tensor,
        multimask_output: bool,
        return_image_features: bool = False,
    ) -> DecoderOutput:
        decoder = self.model.sam_mask_decoder
        high_res = [level for level in features.high_res] or None
        repeat = features.embedding.shape[0] != sparse.shape[0]
        if not return_image_features:
            low_res, iou, _, _ = decoder(
                image_embeddings=features.embedding,
                image_pe=self.dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
                repeat_image=repeat,
                high_res_features=high_res,
            )
            return DecoderOutput(low_res, iou, sparse)
        low_res, iou, image_features = _decode_with_features(
            decoder, features.embedding, self.dense_pe(), sparse, dense, high_res, repeat
        )
        if multimask_output:
            low_res, iou = low_res[:, 1:], iou[:, 1:]
        elif decoder.dynamic_multimask_via_stability and not decoder.training:
            low_res, iou = decoder._dynamic_multimask_via_stability(low_res, iou)
        else:
            low_res, iou = low_res[:, :1], iou[:, :1]
        return DecoderOutput(low_res, iou, sparse, image_features)

    def preprocess(self, image: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
        pixels = self.transforms(image)[None].to(self.decoder_parameter().device)
        return pixels, (self.image_size, self.image_size)

    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        """As ``SAM2ImagePredictor.set_image``: backbone, ``no_mem_embed`` on the coarsest level, the
        levels back to ``b x C x h x w`` (coarsest = the embedding, the finer ones the high-res maps)."""
        model = self.model
        _, vision_feats, _, sizes = model._prepare_backbone_features(model.forward_image(pixels))
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        batch = pixels.shape[0]
        levels = [
            f.permute(1, 2, 0).view(batch, -1, *size) for f, size in zip(vision_feats, sizes, strict=True)
        ]
        return ImageFeatures(levels[-1], tuple(levels[:-1]))

    def encoder_key(self) -> str:
        from ..cache.embeddings import encoder_key

        model = self.model
        state = {f"image_encoder.{k}": v for k, v in model.image_encoder.state_dict().items()}
        # the high-res maps pass the decoder's conv_s0/conv_s1, and the embedding gets no_mem_embed
        state.update({f"image_encoder.sam_mask_decoder.{k}": v for k, v in _high_res_convs(model).items()})
        state["image_encoder.no_mem_embed"] = model.no_mem_embed
        return encoder_key(
            state, image_size=self.image_size, pixel_mean=SAM2_PIXEL_MEAN, pixel_std=SAM2_PIXEL_STD
        )


def _high_res_convs(model: Any) -> dict[str, Tensor]:
    """The decoder's ``conv_s0``/``conv_s1`` weights (empty when the model uses no high-res features)."""
    decoder = model.sam_mask_decoder
    return {k: v for k, v in decoder.state_dict().items() if k.startswith(("conv_s0.", "conv_s1."))}


def _decode_with_features(
    decoder: Any,
    image_embedding: Tensor,
    image_pe: Tensor,
    sparse: Tensor,
    dense: Tensor,
    high_res: list[Tensor] | None,
    repeat: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """SAM 2's ``MaskDecoder.predict_masks`` step by step, keeping the transformer's image-side output.

    Returns:
        ``(masks B x 4 x 4h x 4w, iou B x 4, image features B x C x h x w)`` (single-mask output first).
    """
    weights = [decoder.iou_token.weight, decoder.mask_tokens.weight]
    first = 0
    if decoder.pred_obj_scores:
        weights, first = [decoder.obj_score_token.weight, *weights], 1
    output_tokens = torch.cat(weights, dim=0).unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    src = torch.repeat_interleave(image_embedding, tokens.shape[0], dim=0) if repeat else image_embedding
    src = src + dense
    pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    mask_tokens = hs[:, first + 1 : first + 1 + decoder.num_mask_tokens]
    features = src.transpose(1, 2).view(b, c, h, w)
    if decoder.use_high_res_features:
        dc1, ln1, act1, dc2, act2 = decoder.output_upscaling
        upscaled = act2(dc2(act1(ln1(dc1(features) + high_res[1]))) + high_res[0])
    else:
        upscaled = decoder.output_upscaling(features)
    hyper_in = torch.stack(
        [mlp(mask_tokens[:, i]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, h4, w4 = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h4 * w4)).view(b, -1, h4, w4)
    return masks, decoder.iou_prediction_head(hs[:, first]), features
