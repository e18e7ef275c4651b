"""The score readout: a per-photo ranking of an adapter's three masks, fitted in closed form after training.

SAM's IoU head plus the PLM's score offsets rank the three masks of a click by SAM's sense of a good mask,
moved by one constant per output for the task. On a task where the right granularity changes from photo to
photo (a small plate: the smallest mask; a large one: the middle), a constant cannot follow it. The readout
(``plm.score_readout``, ``4 x E``, and ``plm.score_readout_bias``, ``4``) adds ``score_readout[i] . f_i +
score_readout_bias[i]`` to output ``i``'s score, where ``f_i`` is the mean image embedding under that
output's mask (:func:`~samplm.adapter.plm.mask_features`): what lies under each mask decides its rank.

Fitting (:func:`fit_readout`): one centre click per training instance is decoded with the adapter (its
readout zero); for each multimask output ``i``, a ridge regression on the ``n x E`` features predicts
``true IoU - score`` (what the adapter's score misses), with an unpenalised intercept (the bias). The
single-mask output's row stays zero: one mask is never ranked against another.
:func:`readout_candidates` fits one readout per ridge strength in :data:`RIDGE_ALPHAS`; the run keeps the
one that validates best, and only if it validates better than the adapter without it
(:func:`samplm.train.validation.judge_readout`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..adapter.plm import DECODER_OUTPUTS, MULTIMASK_OUTPUTS, mask_features
from ..adapter.prompt_adapter import PromptAdapter
from ..base.bases import as_base
from .center_scores import center_click_answers
from .training_set import TrainingSet

#: Ridge strengths tried (the features are image-embedding values, of order 1).
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0)


@dataclass(frozen=True)
class ReadoutSamples:
    """What the readout is fitted on, one row per training instance.

    Attributes:
        features: ``n x 3 x E``, :func:`~samplm.adapter.plm.mask_features` of the three multimask outputs.
        residuals: ``n x 3``, each output's true IoU minus its score (readout zero).
    """

    features: Tensor
    residuals: Tensor


def has_readout(adapter: PromptAdapter) -> bool:
    """Whether ``adapter``'s score readout (weights or bias) is non-zero."""
    return bool(adapter.plm.score_readout.any() or adapter.plm.score_readout_bias.any())


def without_readout(adapter: PromptAdapter) -> PromptAdapter:
    """A copy of ``adapter`` whose score readout (weights and bias) is zero: the adapter as it was before
    the readout was fitted."""
    plm = adapter.plm
    return with_readout(
        adapter, torch.zeros_like(plm.score_readout), torch.zeros_like(plm.score_readout_bias)
    )


def readout_samples(sam: Any, adapter: PromptAdapter, data: TrainingSet) -> ReadoutSamples:
    """Decode one centre click per instance of ``data`` with ``adapter`` (its readout must be zero; on
    the base's device) and collect each output's features and residual."""
    if has_readout(adapter):
        raise ValueError("readout samples are taken with the readout zero: pass without_readout(adapter)")
    features, residuals = [], []
    for answer in center_click_answers(sam, data, adapter.plm):
        logits = answer.output.low_res_logits.float()
        features.append(mask_features(logits, answer.features.embedding.float())[0])
        residuals.append((answer.true_iou - answer.output.iou_predictions.float())[0])
    return ReadoutSamples(torch.stack(features).cpu(), torch.stack(residuals).cpu())


def fit_readout(samples: ReadoutSamples, alpha: float) -> tuple[Tensor, Tensor]:
    """Ridge regression of each output's residual on its features.

    Returns:
        ``(readout 4 x E, bias 4)``: row ``0`` (the single-mask output) zero in both.
    """
    n, outputs, width = samples.features.shape
    if outputs != MULTIMASK_OUTPUTS or n < 1:
        raise ValueError(f"readout samples must be n x {MULTIMASK_OUTPUTS} x E, n >= 1; got {(n, outputs)}")
    penalty = torch.eye(width + 1, dtype=torch.float64) * alpha
    penalty[width, width] = 0.0  # the intercept is not shrunk
    readout = torch.zeros(DECODER_OUTPUTS, width, dtype=torch.float64)
    bias = torch.zeros(DECODER_OUTPUTS, dtype=torch.float64)
    for i in range(MULTIMASK_OUTPUTS):
        x = torch.cat([samples.features[:, i].double(), torch.ones(n, 1, dtype=torch.float64)], dim=1)
        y = samples.residuals[:, i].double()
        weights = torch.linalg.solve(x.T @ x + penalty, x.T @ y)
        readout[1 + i], bias[1 + i] = weights[:width], weights[width]
    return readout.float(), bias.float()


def with_readout(adapter: PromptAdapter, readout: Tensor, bias: Tensor) -> PromptAdapter:
    """A copy of ``adapter`` with the score readout ``readout`` (``4 x E``) and ``bias`` (``4``); the
    copy's weights differ from any file, so its ``weights_sha256`` is cleared."""
    fitted = copy.deepcopy(adapter)
    fitted.plm.score_readout.copy_(readout.to(fitted.plm.score_readout))
    fitted.plm.score_readout_bias.copy_(bias.to(fitted.plm.score_readout_bias))
    fitted.config.weights_sha256 = None
    return fitted


def readout_candidates(
    sam: Any, adapter: PromptAdapter, train_set: TrainingSet, alphas: tuple[float, ...] = RIDGE_ALPHAS
) -> dict[float, PromptAdapter]:
    """``{alpha: adapter with the readout fitted at that ridge strength}`` on ``train_set``'s instances,
    each from ``adapter`` with its readout zeroed first, on the base's device."""
    plain = without_readout(adapter).to(as_base(sam).decoder_parameter().device)
    samples = readout_samples(sam, plain, train_set)
    return {alpha: with_readout(plain, *fit_readout(samples, alpha)) for alpha in alphas}
