"""SAM's prompt encoder and mask decoder at SAM's real width, built as ``segment_anything`` builds them."""

from __future__ import annotations

from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer

PROMPT_EMBED_DIM = 256
SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def build_prompt_encoder(grid: int, image_size: int) -> PromptEncoder:
    """Prompt encoder for a ``grid x grid`` image embedding of an ``image_size`` square input."""
    return PromptEncoder(
        embed_dim=PROMPT_EMBED_DIM,
        image_embedding_size=(grid, grid),
        input_image_size=(image_size, image_size),
        mask_in_chans=16,
    )


def build_mask_decoder() -> MaskDecoder:
    """SAM's mask decoder: two-way transformer (depth 2, 8 heads, MLP 2048), 3 multimask outputs."""
    return MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8),
        transformer_dim=PROMPT_EMBED_DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
