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

Before the readout, each multimask output may get a mask bias (``plm.mask_bias``, added to its logits: the
threshold moved to ``-mask_bias[i]``), the one of :data:`MASK_BIASES` under which that output's masks have
the highest mean IoU over the training clicks (:func:`fit_mask_bias`): a task whose true masks are larger
than the base's masks at 0 (a whole banner, not its painted inside) gets its masks grown. The readout is
then fitted on the biased masks.

:func:`readout_candidates` fits one readout per ridge strength in :data:`RIDGE_ALPHAS`, once on the
adapter's own masks and once on its biased masks (:data:`READOUT_CHOICES`); the run keeps the candidate
that validates best, and only if it validates better than the adapter without either
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
from .losses import mask_iou
from .training_set import TrainingSet

#: Ridge strengths tried (the features are image-embedding values, of order 1).
RIDGE_ALPHAS = (0.1, 1.0, 10.0, 100.0)

#: Mask biases tried per output (logit units; nearest zero first, so ties keep the smaller move).
MASK_BIASES = (0.0, 0.25, -0.25, 0.5, -0.5, 1.0, -1.0, 1.5, -1.5, 2.0, -2.0, 2.5, -2.5, 3.0, -3.0)

#: A readout candidate: ``(ridge strength, with the fitted mask bias)``.
Choice = tuple[float, bool]

#: The candidates a run validates: every ridge strength without, then with, the mask bias.
READOUT_CHOICES: tuple[Choice, ...] = tuple((a, b) for b in (False, True) for a in RIDGE_ALPHAS)


@dataclass(frozen=True)
class ReadoutSamples:
    """What the readout is fitted on, one row per training instance.

    Attributes:
        features: ``n x 3 x E``, :func:`~samplm.adapter.plm.mask_features` of the three multimask outputs.
        residuals: ``n x 3``, each output's true IoU minus its score (readout zero).
    """

    features: Tensor
    residuals: Tensor


def has_score_readout(adapter: PromptAdapter) -> bool:
    """Whether ``adapter``'s score readout (weights or bias) is non-zero."""
    return bool(adapter.plm.score_readout.any() or adapter.plm.score_readout_bias.any())


def has_readout(adapter: PromptAdapter) -> bool:
    """Whether ``adapter``'s score readout (weights or bias) or its mask bias is non-zero."""
    return has_score_readout(adapter) or bool(adapter.plm.mask_bias.any())


def without_readout(adapter: PromptAdapter) -> PromptAdapter:
    """A copy of ``adapter`` whose score readout (weights and bias) and mask bias are zero: the adapter as
    it was before they were fitted."""
    plm = adapter.plm
    zeros = torch.zeros_like
    return with_readout(
        adapter, zeros(plm.score_readout), zeros(plm.score_readout_bias), zeros(plm.mask_bias)
    )


def mask_bias_ious(logits: Tensor, target: Tensor, biases: Tensor) -> Tensor:
    """``G x C`` IoU of each of ``C`` outputs' masks with ``target`` under each of ``G`` biases.

    Args:
        logits: ``1 x C x L x L`` low-res logits of one click.
        target: ``L x L`` target in {0, 1}.
        biases: ``G`` biases added to every output's logits before thresholding at 0.
    """
    shifted = logits + biases.to(logits).view(-1, 1, 1, 1)
    return mask_iou(shifted, target.to(logits).expand_as(shifted))


def _decode_pass(
    sam: Any, adapter: PromptAdapter, data: TrainingSet, biases: Tensor | None = None
) -> tuple[ReadoutSamples, Tensor | None]:
    """One decoding of a centre click per instance of ``data`` with ``adapter`` (on the base's device):
    its :class:`ReadoutSamples` and, for ``G`` ``biases``, the ``G x 3`` sum over instances of each
    output's IoU under each bias (``None`` without ``biases``)."""
    features, residuals = [], []
    total = None if biases is None else torch.zeros(len(biases), MULTIMASK_OUTPUTS, dtype=torch.float64)
    for answer in center_click_answers(sam, data, adapter.plm):
        logits = answer.output.low_res_logits.float()
        features.append(mask_features(logits, answer.features.embedding.float())[0])
        residuals.append((answer.true_iou - answer.output.iou_predictions.float())[0])
        if total is not None:
            total += mask_bias_ious(logits, answer.target, biases).double().cpu()
    return ReadoutSamples(torch.stack(features).cpu(), torch.stack(residuals).cpu()), total


def _best_biases(total: Tensor, biases: Tensor) -> Tensor:
    """``4``: per multimask output, the bias of ``biases`` with the highest summed IoU in ``total``
    (``G x 3``; ties: the earlier one); row ``0`` zero."""
    fitted = torch.zeros(DECODER_OUTPUTS)
    fitted[1:] = biases[total.argmax(dim=0)]
    return fitted


def fit_mask_bias(
    sam: Any, adapter: PromptAdapter, data: TrainingSet, biases: tuple[float, ...] = MASK_BIASES
) -> Tensor:
    """``4``: per multimask output, the bias of ``biases`` under which its masks' mean IoU over one centre
    click per instance of ``data`` is highest (ties: the earlier one); row ``0`` (the single-mask output)
    zero. ``adapter`` (its mask bias zero) decodes on the base's device."""
    if adapter.plm.mask_bias.any():
        raise ValueError("a mask bias is fitted with the bias zero: pass without_readout(adapter)")
    grid = torch.tensor(biases, dtype=torch.float32)
    return _best_biases(_decode_pass(sam, adapter, data, grid)[1], grid)


def readout_samples(sam: Any, adapter: PromptAdapter, data: TrainingSet) -> ReadoutSamples:
    """Decode one centre click per instance of ``data`` with ``adapter`` (its score readout must be zero;
    its mask bias is applied; on the base's device) and collect each output's features and residual."""
    if has_score_readout(adapter):
        raise ValueError("readout samples are taken with the readout zero: pass without_readout(adapter)")
    return _decode_pass(sam, adapter, data)[0]


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


def with_readout(
    adapter: PromptAdapter, readout: Tensor, bias: Tensor, mask_bias: Tensor | None = None
) -> PromptAdapter:
    """A copy of ``adapter`` with the score readout ``readout`` (``4 x E``) and ``bias`` (``4``), and the
    mask bias ``mask_bias`` (``4``; ``None``: ``adapter``'s); the copy's weights differ from any file,
    so its ``weights_sha256`` is cleared."""
    fitted = copy.deepcopy(adapter)
    fitted.plm.score_readout.copy_(readout.to(fitted.plm.score_readout))
    fitted.plm.score_readout_bias.copy_(bias.to(fitted.plm.score_readout_bias))
    if mask_bias is not None:
        fitted.plm.mask_bias.copy_(mask_bias.to(fitted.plm.mask_bias))
    fitted.config.weights_sha256 = None
    return fitted


def readout_candidates(
    sam: Any, adapter: PromptAdapter, train_set: TrainingSet, choices: tuple[Choice, ...] = READOUT_CHOICES
) -> dict[Choice, PromptAdapter]:
    """``{(alpha, biased): adapter with the readout fitted at ridge strength alpha}`` on ``train_set``'s
    instances, with the fitted mask bias when ``biased`` (the readout then fitted on the biased masks);
    each from ``adapter`` with both zeroed first, on the base's device. The unbiased masks are decoded once
    for both the unbiased readout and the mask bias's fit."""
    plain = without_readout(adapter).to(as_base(sam).decoder_parameter().device)
    grid = torch.tensor(MASK_BIASES, dtype=torch.float32)
    biased_too = any(biased for _, biased in choices)
    plain_samples, total = _decode_pass(sam, plain, train_set, grid if biased_too else None)
    candidates = {}
    for biased in dict.fromkeys(b for _, b in choices):
        start, samples = plain, plain_samples
        if biased:
            readout, bias = plain.plm.score_readout, plain.plm.score_readout_bias
            start = with_readout(plain, readout, bias, _best_biases(total, grid))
            samples = _decode_pass(sam, start, train_set)[0]
        for alpha in (a for a, b in choices if b == biased):
            candidates[(alpha, biased)] = with_readout(start, *fit_readout(samples, alpha))
    return candidates
