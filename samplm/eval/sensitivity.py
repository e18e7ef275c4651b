"""Prompt sensitivity maps (paper Figs. 2b and 9): IoU against GT as a function of the click position.

Clicks lie on a ``grid x grid`` lattice over the object's box enlarged by ``margin`` on each side
(clipped to the image). For each click the method's most confident mask is compared with the GT.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import torch

from ..cache.embeddings import CachedEmbedding
from ..utils.geometry import mask_to_box
from .methods import SAM, Method, plm_method
from .metrics import iou
from .protocol import InstancePredictor


@dataclass
class SensitivityMap:
    """IoU maps of one instance.

    Attributes:
        xs, ys: click coordinates (original pixels) of the lattice columns / rows.
        inside: ``G x G`` whether each click lies inside the GT mask.
        iou: ``{method: G x G IoU}`` for ``SAM`` and each adapter's PLM.
    """

    xs: np.ndarray
    ys: np.ndarray
    inside: np.ndarray
    iou: dict[Method, np.ndarray]

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard deviation of IoU over the clicks inside the object, per method."""
        return {
            m: {"mean": float(v[self.inside].mean()), "std": float(v[self.inside].std())}
            for m, v in self.iou.items()
        }


@torch.no_grad()
def sensitivity_map(
    predictor: InstancePredictor,
    entry: CachedEmbedding,
    gt: np.ndarray,
    *,
    grid: int = 16,
    margin: float = 0.25,
    chunk: int = 16,
) -> SensitivityMap:
    """Compute IoU maps for SAM and every adapter of ``predictor`` (batched clicks)."""
    height, width = gt.shape
    x1, y1, x2, y2 = mask_to_box(gt)
    dx, dy = margin * (x2 - x1), margin * (y2 - y1)
    xs = np.linspace(max(0.0, x1 - dx), min(width - 1.0, x2 + dx), grid)
    ys = np.linspace(max(0.0, y1 - dy), min(height - 1.0, y2 + dy), grid)
    clicks = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    inside = gt[
        np.clip(clicks[:, 1].round().astype(int), 0, height - 1),
        np.clip(clicks[:, 0].round().astype(int), 0, width - 1),
    ]
    sam_predictor = predictor.set_entry(entry)
    maps = {}
    for method in [SAM] + [plm_method(name) for name in predictor.adapters]:
        values = []
        for start in range(0, len(clicks), chunk):
            part = clicks[start : start + chunk]
            coords = sam_predictor.base.scale_coords(part, entry.original_size)
            coords_torch = torch.as_tensor(
                coords[:, None, :], dtype=torch.float32, device=sam_predictor.device
            )
            labels = torch.ones(len(part), 1, dtype=torch.int64, device=sam_predictor.device)
            with _using(sam_predictor, method.adapter):
                out = sam_predictor.decode(coords_torch, labels)
            best = out.low_res_logits[torch.arange(len(part)), out.iou_predictions.argmax(dim=1)]
            chosen = sam_predictor.upscale_logits(best[:, None])[:, 0]
            values += [iou(m, gt) for m in chosen.cpu().numpy()]
        maps[method] = np.array(values).reshape(grid, grid)
    return SensitivityMap(xs, ys, inside.reshape(grid, grid), maps)


def _using(predictor, adapter: str | None):
    """Context in which ``predictor`` answers with ``adapter`` (``None``: plain SAM)."""
    if adapter is None:
        return predictor.disable_adapter()
    predictor.set_adapter(adapter)
    return contextlib.nullcontext()
