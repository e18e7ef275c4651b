"""Point Matching Module (PMM): a boundary transformer that moves contour points onto the true boundary.

Given features sampled at K points of one contour (``B x K x C_in``), it predicts a per-point offset
(``B x K x 2``, XY, in pixels of SAM's resized input frame, clamped to ``+-max_offset``). Design after
TextBPN++'s boundary transformer: an input projection followed by ``depth`` pre-LayerNorm transformer
blocks whose attention runs across the K points of a contour (``batch_first=True``), a 1x1-conv shortcut
in parallel, and a three-layer 1x1-conv head. A fixed sinusoidal encoding of each point's position
along the contour tells the points apart.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .config import PMMConfig


def contour_position_encoding(num_points: int, dim: int, *, device=None, dtype=None) -> Tensor:
    """Cyclic sinusoidal encoding of K equally spaced contour positions, ``K x dim``."""
    angle = torch.arange(num_points, device=device, dtype=torch.float32) * (2 * math.pi / num_points)
    freqs = torch.arange(1, dim // 2 + 1, device=device, dtype=torch.float32)
    phase = angle[:, None] * freqs[None, :]
    enc = torch.cat([phase.sin(), phase.cos()], dim=-1)
    if enc.shape[1] < dim:
        enc = torch.nn.functional.pad(enc, (0, dim - enc.shape[1]))
    return enc.to(dtype or torch.float32)


def sample_point_features(feature_map: Tensor, points: Tensor, image_size: int) -> Tensor:
    """Bilinearly sample features at points.

    Args:
        feature_map: ``B x C x h x w`` features covering SAM's padded ``image_size`` square input frame
            (e.g. the decoder's two-way-transformer image tokens reshaped to 64 x 64).
        points: ``B x K x 2`` XY pixels in the input frame.
        image_size: side of the padded input frame (1024 for SAM).

    Returns:
        ``B x K x C`` point features.
    """
    grid = (points / image_size * 2 - 1)[:, :, None, :].to(feature_map.dtype)  # B x K x 1 x 2
    sampled = torch.nn.functional.grid_sample(feature_map, grid, align_corners=False)  # B x C x K x 1
    return sampled[..., 0].transpose(1, 2)


class BoundaryBlock(nn.Module):
    """Pre-LayerNorm transformer block over the points of one contour (``B x K x D``)."""

    def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm_attn = nn.LayerNorm(dim)
        self.qkv_in = nn.ModuleList([nn.Linear(dim, dim) for _ in range(3)])
        self.attn = nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, mlp_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim)
        )

    def forward(self, x: Tensor) -> Tensor:
        h = self.norm_attn(x)
        q, k, v = (torch.relu(layer(h)) for layer in self.qkv_in)
        x = x + self.attn(q, k, v, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))


class PointMatchingModule(nn.Module):
    """Boundary transformer predicting XY offsets for contour points.

    Args:
        in_dim: channels of the sampled point features (256: the decoder's image-side tokens).
        hidden_dim: transformer width.
        num_heads: attention heads.
        mlp_dim: feed-forward width of each block.
        depth: number of transformer blocks (paper: 3).
        num_points: K, contour points per instance (TextBPN++: 20).
        dropout: dropout in attention, MLP and head.
        max_offset: offsets are squashed to ``+-max_offset`` pixels (input frame) with ``tanh``.
    """

    def __init__(
        self,
        *,
        in_dim: int = 256,
        hidden_dim: int = 128,
        num_heads: int = 8,
        mlp_dim: int = 1024,
        depth: int = 3,
        num_points: int = 20,
        dropout: float = 0.1,
        max_offset: float = 16.0,
    ) -> None:
        super().__init__()
        # Types and ranges, before anything is allocated (ConfigError, a ValueError).
        config = PMMConfig(
            in_dim=in_dim,
            hidden_dim=hidden_dim,
            num_heads=num_heads,
            mlp_dim=mlp_dim,
            depth=depth,
            num_points=num_points,
            dropout=dropout,
            max_offset=max_offset,
        )
        self.in_dim = in_dim
        self.num_points = num_points
        self.max_offset = config.max_offset
        self.input_norm = nn.LayerNorm(in_dim, elementwise_affine=False)
        self.input_proj = nn.Linear(in_dim, hidden_dim)
        self.blocks = nn.ModuleList(
            [BoundaryBlock(hidden_dim, num_heads, mlp_dim, dropout) for _ in range(depth)]
        )
        self.shortcut = nn.Conv1d(in_dim, hidden_dim, kernel_size=1)
        self.head = nn.Sequential(
            nn.Conv1d(2 * hidden_dim, 128, 1),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Conv1d(128, 64, 1),
            nn.ReLU(),
            nn.Conv1d(64, 2, 1),
        )

    def forward(self, point_features: Tensor) -> Tensor:
        """Predict offsets.

        Args:
            point_features: ``B x K x in_dim`` features sampled at the K points of each contour, in
                contour order.

        Returns:
            ``B x K x 2`` XY offsets in input-frame pixels, each in ``[-max_offset, max_offset]``.
        """
        if point_features.dim() != 3 or point_features.shape[-1] != self.in_dim:
            raise ValueError(
                f"point_features must be B x K x {self.in_dim}, got {tuple(point_features.shape)}"
            )
        x = self.input_norm(point_features)
        h = self.input_proj(x)
        h = h + contour_position_encoding(h.shape[1], h.shape[2], device=h.device, dtype=h.dtype)
        for block in self.blocks:
            h = block(h)
        shortcut = self.shortcut(x.transpose(1, 2))  # B x hidden x K
        out = self.head(torch.cat([h.transpose(1, 2), shortcut], dim=1))  # B x 2 x K
        return torch.tanh(out.transpose(1, 2) / self.max_offset) * self.max_offset
