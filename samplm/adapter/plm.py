"""Prompt Learning Module (PLM): learns a residual offset for SAM's sparse prompt embedding.

Data flow (one block, as in the paper's Fig. 3)::

    tokens (B x N x C) ──> self-attention over tokens ──> LayerNorm
                       ──> prompt-to-image cross-attention (tokens are queries,
                           image embedding the keys/values) ──> LayerNorm
                       ──> MLP (C -> mlp_dim -> C) ──> LayerNorm ──> offset (B x N x C)
    output = tokens + offset

Positional encodings follow SAM's two-way transformer: the prompt tokens already carry SAM's
random-Fourier encoding of their coordinates, and the original tokens are re-added to the queries
and keys of both attentions (``query_pe = tokens``, like ``TwoWayTransformer``); the image keys get
SAM's dense positional encoding (``PromptEncoder.get_dense_pe()``).

The last LayerNorm starts with zero gain and bias, so a fresh module returns its input exactly:
training starts from plain SAM.

Besides the tokens, the module holds a learned ``score_offset``: one number per decoder output (SAM's
single-mask output first, then its three multimask outputs) added to the IoU head's predictions. The
frozen IoU head ranks masks for SAM's own training data; for a task it may always prefer another
granularity (a region larger than a plate); the prompt tokens alone cannot always move its ranking.
The offset starts at zero, so a fresh module still is plain SAM.

Then a score readout (buffers ``score_readout``, ``4 x E`` with ``E`` the embedding width, and
``score_readout_bias``, ``4``: fitted in closed form after training, not by gradients, see
:mod:`samplm.train.score_readout`): each output's score also gets ``score_readout[i] . f_i +
score_readout_bias[i]``, where
``f_i`` is the mean of the image embedding under that output's mask (:func:`mask_features`). The offsets
rank the outputs the same way on every photo; the readout ranks them per photo, by what lies under each
mask. It starts at zero, so a fresh module still is plain SAM.

Last, a learned ``mask_mix`` (``3 x 3``) blends SAM's three multimask logits: output ``i`` becomes
``sum_j mask_mix[i, j] * logits_j``. SAM-F's blend (PerSAM-F) is the case where every row holds the
same weights; on small sets such a blend can beat any single mask of the base. It starts as the
identity, so a fresh module still is plain SAM. The single-mask output is never mixed. Then each output's
logits get ``mask_bias[i]`` (a buffer, ``4``, fitted with the readout): the mask threshold moved to
``-mask_bias[i]``, for a task whose true masks are systematically larger (or smaller) than the base's
at 0. It starts at zero.

:meth:`PromptLearningModule.adjust_outputs` is the one place where the offsets, the readout, the mix and
the mask bias change the decoder's outputs: prediction, training, evaluation, batched several-adapter
decoding and the ONNX graph all call it.

The prompt-to-image keys and values depend only on the image embedding, so they can be computed
once per image (:meth:`PromptLearningModule.image_context`) and reused for every prompt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from segment_anything.modeling.common import MLPBlock
from segment_anything.modeling.transformer import Attention
from torch import Tensor, nn

from .config import PLM_ACTIVATIONS, PLMConfig

DECODER_OUTPUTS = 4  # SAM's mask decoder: single-mask output + 3 multimask outputs
MULTIMASK_OUTPUTS = DECODER_OUTPUTS - 1
_ACTIVATIONS: dict[str, type[nn.Module]] = dict(zip(PLM_ACTIVATIONS, (nn.ReLU, nn.GELU), strict=True))


@dataclass(frozen=True)
class ImageContext:
    """Per-image part of the PLM's prompt-to-image attention.

    Attributes:
        keys: ``b x heads x HW x (internal_dim / heads)``, projected ``image + image_pe``.
        values: ``b x heads x HW x (internal_dim / heads)``, projected ``image``.
            ``b`` is 1 (one image shared by all prompts, as in ``SamPredictor``) or the prompt batch.
    """

    keys: Tensor
    values: Tensor

    @property
    def batch_size(self) -> int:
        return self.keys.shape[0]


class PromptLearningModule(nn.Module):
    """Self-attention + prompt-to-image attention + MLP producing an offset for SAM's prompt tokens.

    Args:
        embed_dim: token / image-embedding width C (256 for every SAM).
        num_heads: attention heads T (paper: 8).
        mlp_dim: hidden width of the MLP (2048, as SAM's two-way transformer).
        attention_downsample_rate: internal width divisor of the cross-attention (1 = full width).
        activation: MLP activation, ``"relu"`` (as SAM's two-way transformer) or ``"gelu"``.

    With the defaults the module has 1,578,765 parameters (1,578,752 for the tokens, 4 score offsets,
    a 3 x 3 mask mix), a score readout in two buffers (``4 x 256`` weights, ``4`` biases) and a mask
    bias buffer (``4``).
    """

    def __init__(
        self,
        *,
        embed_dim: int = 256,
        num_heads: int = 8,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 1,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        # Types, ranges and divisibility, before anything is allocated (ConfigError, a ValueError).
        PLMConfig(
            embed_dim=embed_dim,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            attention_downsample_rate=attention_downsample_rate,
            activation=activation,
        )
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.self_attn = Attention(embed_dim, num_heads)
        self.norm_self = nn.LayerNorm(embed_dim)
        self.cross_attn = Attention(embed_dim, num_heads, downsample_rate=attention_downsample_rate)
        self.norm_cross = nn.LayerNorm(embed_dim)
        self.mlp = MLPBlock(embed_dim, mlp_dim, act=_ACTIVATIONS[activation])
        self.norm_out = nn.LayerNorm(embed_dim)
        self.score_offset = nn.Parameter(torch.zeros(DECODER_OUTPUTS))
        self.mask_mix = nn.Parameter(torch.eye(MULTIMASK_OUTPUTS))
        self.register_buffer("score_readout", torch.zeros(DECODER_OUTPUTS, embed_dim))
        self.register_buffer("score_readout_bias", torch.zeros(DECODER_OUTPUTS))
        self.register_buffer("mask_bias", torch.zeros(DECODER_OUTPUTS))
        self.reset_offset()

    def reset_offset(self) -> None:
        """Zero the output LayerNorm's gain and bias, the score offsets, the score readout and the mask
        bias, and make the mask mix the identity: the module becomes plain SAM exactly."""
        nn.init.zeros_(self.norm_out.weight)
        nn.init.zeros_(self.norm_out.bias)
        nn.init.zeros_(self.score_offset)
        nn.init.zeros_(self.score_readout)
        nn.init.zeros_(self.score_readout_bias)
        nn.init.zeros_(self.mask_bias)
        with torch.no_grad():
            self.mask_mix.copy_(torch.eye(MULTIMASK_OUTPUTS))

    def set_blend(self, weights: Sequence[float]) -> None:
        """Make every multimask output the blend ``sum_j weights[j] * logits_j`` (SAM-F's mask as all three
        outputs, so whichever is ranked first is the blend)."""
        if len(weights) != MULTIMASK_OUTPUTS:
            raise ValueError(f"a blend has {MULTIMASK_OUTPUTS} weights, got {len(weights)}")
        row = torch.as_tensor([float(w) for w in weights], dtype=self.mask_mix.dtype)
        with torch.no_grad():
            self.mask_mix.copy_(row.expand(MULTIMASK_OUTPUTS, -1).to(self.mask_mix.device))

    def adjust_outputs(
        self, low_res_logits: Tensor, iou_predictions: Tensor, multimask_output: bool, image_embedding: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The decoder's outputs as this adapter gives them: the multimask logits mixed by
        ``mask_mix``, every output's logits plus its ``mask_bias``, and the IoU predictions plus
        ``score_offset`` and the score readout of those masks (see :meth:`adjust_scores`).

        Args:
            low_res_logits: ``B x C x h x w`` mask logits, ``C`` as in :meth:`adjust_scores`.
            iou_predictions: ``B x C``.
            multimask_output: with ``C = 3``/``1``, which outputs the columns are.
            image_embedding: ``1 x E x h' x w'`` or ``B x E x h' x w'``, the embedding the decoder read
                (``h = 4 h'``: SAM's low-res masks are 4 x its embedding).

        Returns:
            ``(B x C x h x w logits, B x C scores)``.
        """
        rows = self._output_rows(low_res_logits.shape[1], multimask_output)
        bias = self.mask_bias[rows].to(low_res_logits.dtype)[None, :, None, None]
        masks = self._mix(low_res_logits, multimask_output) + bias
        features = mask_features(masks, image_embedding)
        return masks, self.adjust_scores(iou_predictions, multimask_output, features)

    def _mix(self, low_res_logits: Tensor, multimask_output: bool) -> Tensor:
        """``B x C x h x w`` logits with the multimask columns blended by ``mask_mix`` (``C`` as in
        :meth:`adjust_scores`; the single-mask column unchanged)."""
        columns = low_res_logits.shape[1]
        if columns == 1 and not multimask_output:
            return low_res_logits
        mix = self.mask_mix.to(low_res_logits.dtype)
        if columns == MULTIMASK_OUTPUTS:
            return torch.einsum("ij,bjhw->bihw", mix, low_res_logits)
        single, multi = low_res_logits[:, :1], low_res_logits[:, 1:]
        return torch.cat([single, torch.einsum("ij,bjhw->bihw", mix, multi)], dim=1)

    def adjust_scores(
        self, iou_predictions: Tensor, multimask_output: bool, features: Tensor | None = None
    ) -> Tensor:
        """SAM's IoU predictions plus this task's offsets (and readout).

        Args:
            iou_predictions: ``B x C``: ``C = 3`` for the multimask outputs, ``1`` for the single-mask
                output, ``4`` for all of them (single-mask first, as the decoder computes them).
            multimask_output: with ``C = 3``/``1``, which outputs the columns are.
            features: ``B x C x E`` (:func:`mask_features` of the outputs), scored by the readout;
                ``None``: offsets only.

        Returns:
            ``B x C`` adjusted scores (a ranking of the masks for this task).
        """
        columns = iou_predictions.shape[-1]
        rows = self._output_rows(columns, multimask_output)
        scores = iou_predictions + self.score_offset[rows].to(iou_predictions.dtype)
        if features is None:
            return scores
        readout = (features * self.score_readout[rows].to(features.dtype)).sum(dim=-1)
        return scores + (readout + self.score_readout_bias[rows].to(features.dtype)).to(scores.dtype)

    @staticmethod
    def _output_rows(columns: int, multimask_output: bool) -> slice:
        """Which of the decoder's four outputs ``columns`` score columns are."""
        if columns == DECODER_OUTPUTS:
            return slice(0, DECODER_OUTPUTS)
        if columns == (MULTIMASK_OUTPUTS if multimask_output else 1):
            return slice(1, None) if multimask_output else slice(0, 1)
        raise ValueError(
            f"iou_predictions must have {DECODER_OUTPUTS}, 3 (multimask) or 1 columns, got {columns}"
        )

    def image_context(self, image_embedding: Tensor, image_pe: Tensor) -> ImageContext:
        """Project an image embedding into the keys and values of the prompt-to-image attention.

        Args:
            image_embedding: ``b x C x H x W`` (SAM: ``1 x 256 x 64 x 64``).
            image_pe: ``1 x C x H x W`` or ``b x C x H x W``, SAM's ``get_dense_pe()``.

        Returns:
            An :class:`ImageContext` with ``b`` entries, reusable for any number of prompts.
        """
        if image_embedding.dim() != 4 or image_embedding.shape[1] != self.embed_dim:
            raise ValueError(
                f"image_embedding must be b x {self.embed_dim} x H x W, got {tuple(image_embedding.shape)}"
            )
        if image_pe.dim() != 4 or image_pe.shape[1:] != image_embedding.shape[1:]:
            raise ValueError(
                f"image_pe must be 1 x {self.embed_dim} x H x W matching the image embedding "
                f"{tuple(image_embedding.shape)}, got {tuple(image_pe.shape)}"
            )
        image = image_embedding.flatten(2).transpose(1, 2)  # b x HW x C
        pe = image_pe.flatten(2).transpose(1, 2)
        keys = self._split_heads(self.cross_attn.k_proj(image + pe))
        values = self._split_heads(self.cross_attn.v_proj(image))
        return ImageContext(keys=keys, values=values)

    def forward(
        self,
        tokens: Tensor,
        image_embedding: Tensor | None = None,
        image_pe: Tensor | None = None,
        *,
        context: ImageContext | None = None,
    ) -> Tensor:
        """Adjust sparse prompt tokens.

        Args:
            tokens: ``B x N x C`` sparse prompt embedding from ``PromptEncoder`` (N varies: k points
                plus SAM's padding token, 2 box corners, or both).
            image_embedding: ``1 x C x H x W`` (shared by all B prompts) or ``B x C x H x W``.
            image_pe: SAM's dense positional encoding, ``1 x C x H x W``.
            context: precomputed :meth:`image_context`; replaces ``image_embedding``/``image_pe``.

        Returns:
            ``B x N x C`` adjusted tokens, ``tokens + offset``.
        """
        return tokens + self.offset(tokens, image_embedding, image_pe, context=context)

    def offset(
        self,
        tokens: Tensor,
        image_embedding: Tensor | None = None,
        image_pe: Tensor | None = None,
        *,
        context: ImageContext | None = None,
    ) -> Tensor:
        """The residual ``B x N x C`` offset alone (see :meth:`forward` for the arguments)."""
        if tokens.dim() != 3 or tokens.shape[-1] != self.embed_dim:
            raise ValueError(f"tokens must be B x N x {self.embed_dim}, got {tuple(tokens.shape)}")
        if context is None:
            if image_embedding is None or image_pe is None:
                raise ValueError("pass either image_embedding and image_pe, or a precomputed context")
            context = self.image_context(image_embedding, image_pe)
        if context.batch_size not in (1, tokens.shape[0]):
            raise ValueError(
                f"image batch ({context.batch_size}) must be 1 or the prompt batch ({tokens.shape[0]})"
            )
        token_pe = tokens
        x = self.norm_self(tokens + self.self_attn(q=tokens + token_pe, k=tokens + token_pe, v=tokens))
        x = self.norm_cross(x + self._cross_attend(x + token_pe, context))
        return self.norm_out(x + self.mlp(x))

    def _cross_attend(self, queries: Tensor, context: ImageContext) -> Tensor:
        q = self._split_heads(self.cross_attn.q_proj(queries))  # B x T x N x d
        attn = q @ context.keys.transpose(-2, -1) / math.sqrt(q.shape[-1])  # B x T x N x HW
        out = torch.softmax(attn, dim=-1) @ context.values  # B x T x N x d
        out = out.transpose(1, 2).flatten(2)  # B x N x (T*d)
        return self.cross_attn.out_proj(out)

    def _split_heads(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)


def mask_features(low_res_logits: Tensor, image_embedding: Tensor) -> Tensor:
    """The mean image embedding under each mask: what the score readout scores.

    Args:
        low_res_logits: ``B x C x h x w`` mask logits (a mask is ``logits > 0``), ``h`` and ``w`` a whole
            multiple of the embedding's (SAM: 256 = 4 x 64).
        image_embedding: ``1 x E x h' x w'`` (shared by the ``B`` rows) or ``B x E x h' x w'``.

    Returns:
        ``B x C x E``: each mask's share of each embedding cell weights that cell; an empty mask gives zeros.
    """
    if image_embedding.dim() != 4 or low_res_logits.dim() != 4:
        raise ValueError(
            f"mask_features takes B x C x h x w logits and a b x E x h' x w' embedding, got "
            f"{tuple(low_res_logits.shape)} and {tuple(image_embedding.shape)}"
        )
    if image_embedding.shape[0] not in (1, low_res_logits.shape[0]):
        raise ValueError(
            f"the image embedding's batch ({image_embedding.shape[0]}) must be 1 or the logits' "
            f"({low_res_logits.shape[0]}): repeat each image's embedding for its prompts"
        )
    (h, w), (eh, ew) = low_res_logits.shape[-2:], image_embedding.shape[-2:]
    if h % eh or w % ew:
        raise ValueError(f"mask size {h} x {w} is not a whole multiple of the embedding's {eh} x {ew}")
    masks = (low_res_logits > 0).to(image_embedding.dtype)
    b, c = masks.shape[:2]
    weights = masks.reshape(b, c, eh, h // eh, ew, w // ew).mean(dim=(3, 5))  # B x C x h' x w'
    embedding = image_embedding.expand(low_res_logits.shape[0], -1, -1, -1)
    total = torch.einsum("bchw,behw->bce", weights, embedding)
    return total / weights.sum(dim=(-2, -1)).clamp(min=1e-6)[..., None]
