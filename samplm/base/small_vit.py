"""A small, randomly initialised SAM assembled from ``segment_anything.modeling`` classes.

The prompt encoder and mask decoder are SAM's own, at SAM's real width (256 channels, two-way
transformer of depth 2, 8 heads, MLP 2048), so adapters have exactly the shapes they have on
``vit_h``; only the image encoder is small. Useful for tests, examples and CPU experiments.
"""

from __future__ import annotations

from functools import partial

import torch
from segment_anything.modeling import ImageEncoderViT, Sam

from .parts import PROMPT_EMBED_DIM, SAM_PIXEL_MEAN, SAM_PIXEL_STD, build_mask_decoder, build_prompt_encoder


def build_small_vit_sam(
    *,
    image_size: int = 256,
    patch_size: int = 16,
    encoder_dim: int = 64,
    encoder_depth: int = 2,
    encoder_heads: int = 2,
    seed: int | None = None,
) -> Sam:
    """Build a randomly initialised tiny SAM.

    Args:
        image_size: side of the square model input (SAM: 1024). Images are resized so their longest
            side equals it, as ``SamPredictor`` does for SAM.
        patch_size: ViT patch size; the image embedding is ``(image_size / patch_size)`` per side.
        encoder_dim, encoder_depth, encoder_heads: size of the ViT image encoder.
        seed: if given, weights are drawn from ``torch.manual_seed(seed)`` (reproducible models).

    Returns:
        A ``Sam`` in eval mode with a ``256 x (image_size/patch_size)^2`` image embedding and
        ``4x`` that size low-resolution masks.
    """
    if image_size % patch_size:
        raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
    generator_state = torch.random.get_rng_state() if seed is not None else None
    if seed is not None:
        torch.manual_seed(seed)
    try:
        grid = image_size // patch_size
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=encoder_depth,
                embed_dim=encoder_dim,
                img_size=image_size,
                mlp_ratio=4,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                num_heads=encoder_heads,
                patch_size=patch_size,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=(),
                window_size=0,
                out_chans=PROMPT_EMBED_DIM,
            ),
            prompt_encoder=build_prompt_encoder(grid, image_size),
            mask_decoder=build_mask_decoder(),
            pixel_mean=list(SAM_PIXEL_MEAN),
            pixel_std=list(SAM_PIXEL_STD),
        )
    finally:
        if generator_state is not None:
            torch.random.set_rng_state(generator_state)
    return sam.eval()
