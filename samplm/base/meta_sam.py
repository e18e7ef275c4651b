"""SAM 1 as a base: ``segment_anything``'s ``Sam`` (Meta's ``vit_h``/``vit_l``/``vit_b`` and samplm's own
``samplm_lite``/``samplm_tiny``, which share its prompt encoder and mask decoder).

:class:`SamBase` performs exactly the calls ``SamPredictor.predict_torch`` performs, so with no adapter its
outputs are bit-identical to ``segment_anything``. Asked for the decoder's image features (the PMM's input),
it runs the mask decoder's sub-modules itself, in the order ``MaskDecoder.predict_masks`` does, so the masks
stay bit-identical and no hook is installed on the shared ``Sam``.
"""

from __future__ import annotations

import numpy as np
import torch
from segment_anything.modeling import MaskDecoder, Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor

from ..utils.fingerprint import sam_fingerprint
from .interface import SAM_FAMILY, DecoderOutput, ImageFeatures, PromptableBase


class SamBase(PromptableBase):
    """A ``segment_anything`` ``Sam`` behind :class:`PromptableBase` (the ``Sam`` is shared, not copied).

    Args:
        sam: the frozen SAM.
    """

    family = SAM_FAMILY

    def __init__(self, sam: Sam) -> None:
        self.sam = sam
        self.image_size = int(sam.image_encoder.img_size)
        self.mask_threshold = float(sam.mask_threshold)

    @property
    def module(self) -> Sam:
        return self.sam

    @property
    def embed_dim(self) -> int:
        return int(self.sam.prompt_encoder.embed_dim)

    @property
    def embedding_size(self) -> tuple[int, int]:
        return tuple(self.sam.prompt_encoder.image_embedding_size)

    def fingerprint(self) -> str:
        return sam_fingerprint(self.sam)

    def decoder_parameter(self) -> Tensor:
        return next(self.sam.mask_decoder.parameters())

    def encode_prompts(
        self,
        point_coords: Tensor | None,
        point_labels: Tensor | None,
        boxes: Tensor | None,
        mask_input: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        points = (point_coords, point_labels) if point_coords is not None else None
        return self.sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)

    def dense_pe(self) -> Tensor:
        return self.sam.prompt_encoder.get_dense_pe()

    def run_decoder(
        self,
        features: ImageFeatures,
        sparse: Tensor,
        dense: Tensor,
        multimask_output: bool,
        return_image_features: bool = False,
    ) -> DecoderOutput:
        decoder, image_pe = self.sam.mask_decoder, self.dense_pe()
        if not return_image_features:
            low_res, iou = decoder(
                image_embeddings=features.embedding,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            return DecoderOutput(low_res, iou, sparse)
        low_res, iou, image_features = _decode_with_features(
            decoder, features.embedding, image_pe, sparse, dense
        )
        chosen = slice(1, None) if multimask_output else slice(0, 1)
        return DecoderOutput(low_res[:, chosen], iou[:, chosen], sparse, image_features)

    def preprocess(self, image: np.ndarray) -> tuple[Tensor, tuple[int, int]]:
        transform = ResizeLongestSide(self.image_size)
        resized = transform.apply_image(image)
        tensor = torch.as_tensor(resized, device=self.sam.device).permute(2, 0, 1)[None]
        return self.sam.preprocess(tensor.to(self.sam.pixel_mean.dtype)), tuple(resized.shape[:2])

    def encode_image(self, pixels: Tensor) -> ImageFeatures:
        return ImageFeatures(self.sam.image_encoder(pixels))

    def encoder_key(self) -> str:
        from ..cache.embeddings import sam_encoder_key

        return sam_encoder_key(self.sam)


def _decode_with_features(
    decoder: MaskDecoder, image_embedding: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """``MaskDecoder.predict_masks`` step by step, keeping the transformer's image-side output.

    Returns:
        ``(masks B x (1 + M) x 4h x 4w, iou B x (1 + M), image features B x 256 x h x w)`` for all
        ``1 + M`` mask tokens (single-mask output first).
    """
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    output_tokens = output_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
    tokens = torch.cat((output_tokens, sparse), dim=1)
    src = torch.repeat_interleave(image_embedding, tokens.shape[0], dim=0) + dense
    pos_src = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
    b, c, h, w = src.shape
    hs, src = decoder.transformer(src, pos_src, tokens)
    features = src.transpose(1, 2).view(b, c, h, w)
    upscaled = decoder.output_upscaling(features)
    hyper_in = torch.stack(
        [mlp(hs[:, 1 + i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    b, c, h4, w4 = upscaled.shape
    masks = (hyper_in @ upscaled.view(b, c, h4 * w4)).view(b, -1, h4, w4)
    return masks, decoder.iou_prediction_head(hs[:, 0, :]), features
