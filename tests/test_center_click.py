"""The one centre-click helper of training validation, SAM-F fitting and pretraining checks."""

from __future__ import annotations

import numpy as np
import torch

from samplm.decoder.decode import decode_prompts
from samplm.prompts.center_click import center_click, decode_center_click


def test_center_click_is_the_deepest_low_res_pixel_in_input_pixels():
    mask = np.zeros((16, 16), bool)
    mask[2:9, 4:11] = True  # 7 x 7 square, deepest pixel (7, 5)
    assert center_click(mask, 64) == ((7 + 0.5) * 4, (5 + 0.5) * 4)


def test_center_click_on_a_wide_box_is_its_middle():
    mask = np.zeros((32, 32), bool)
    mask[10:15, 4:25] = True  # 21 x 5 low-res box, a plate: its middle row ties from x = 6 to x = 22
    assert center_click(mask, 128) == ((14 + 0.5) * 4, (12 + 0.5) * 4)


def test_decode_center_click_decodes_that_click(tiny_sam):
    side = 4 * tiny_sam.prompt_encoder.image_embedding_size[0]
    mask = np.zeros((side, side), bool)
    mask[5:20, 10:30] = True
    embedding = torch.randn(1, 256, *tiny_sam.prompt_encoder.image_embedding_size)
    out = decode_center_click(tiny_sam, embedding, mask)
    x, y = center_click(mask, tiny_sam.image_encoder.img_size)
    reference = decode_prompts(
        tiny_sam,
        embedding,
        point_coords=torch.tensor([[[x, y]]]),
        point_labels=torch.ones(1, 1, dtype=torch.int64),
    )
    assert out.low_res_logits.shape == (1, 3, side, side)
    assert torch.equal(out.low_res_logits, reference.low_res_logits)
