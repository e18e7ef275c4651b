"""The score readout against richer ones: which features and which fit rank an adapter's three masks best.

    samplm demo --task plates --data ../shared/data/car_license_plate_andrewmvd --out runs/plates
    python benchmarks/readout_variants.py --data ../shared/data/car_license_plate_andrewmvd \\
        --adapter runs/plates/train/adapter --cache runs/plates/cache

The adapter's readout and mask bias are zeroed; its three masks for one centre click per plate of the
demo's training half are what each variant is fitted on, and the same for the held-out half is what it
is measured on (mIoU of the mask each variant ranks first, at the decoder's resolution, as
``mask_ranking.py``). Features per mask (each variant adds to the one before where marked ``+``):

- ``mean``: the mean image embedding under the mask (:func:`~samplm.adapter.plm.mask_features`: what
  the shipped readout scores);
- ``standardised``: ``mean`` with every feature scaled to zero mean and unit variance over the
  training masks;
- ``+ area``: ``standardised`` plus the mask's share of the image, its logarithm, whether it is empty and
  its stability score (segment-anything's: the IoU of the mask at logit thresholds +1 and -1);
- ``+ ring``: ``+ area`` plus the mean embedding in a two-cell ring just outside the mask (what the
  mask stops at);
- ``+ all outputs``: ``+ ring`` plus the ``mean`` features of all three masks (each output sees the others).

``--with-base`` ranks six masks instead: the adapter's three and the base's own three for the same click
(each of the six with its own weights; the base's scores are its IoU head's), so a variant may fall back
to a base mask where the adapter's are worse.

Fits: ``ridge`` (the shipped :func:`~samplm.train.score_readout.fit_readout`: each output's true IoU
minus its score, one ridge regression per output) at each ``--alphas`` strength, and ``expected IoU``
(the same linear score, fitted by L-BFGS to maximise the softmax-weighted true IoU of the three masks,
temperature 0.1, L2 weight ``alpha / 1000``). Prints one row per variant and fit, one column per strength.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from segment_anything.utils.amg import calculate_stability_score
from torch import Tensor

from samplm import PromptAdapter
from samplm.adapter.plm import mask_features
from samplm.data import read_voc
from samplm.train.center_scores import center_click_answers
from samplm.train.score_readout import ReadoutSamples, fit_readout, without_readout
from samplm.train.training_set import TrainingSet
from samplm.workspace import Workspace

#: The ring's width in embedding cells.
RING_CELLS = 2
#: The expected-IoU fit's softmax temperature.
TEMPERATURE = 0.1
#: Each variant's feature parts (:func:`feature_parts`; ``all``: every output's ``mean``), in order.
VARIANTS: dict[str, tuple[str, ...]] = {
    "mean": ("mean",),
    "standardised": ("mean",),
    "+ area": ("mean", "area"),
    "+ ring": ("mean", "area", "ring"),
    "+ all outputs": ("mean", "area", "ring", "all"),
}


@dataclass(frozen=True)
class Answers:
    """The answers to one centre click per instance, ``n`` instances of ``C`` masks each (an adapter's
    or the base's 3; 6 with :meth:`beside`).

    Attributes:
        parts: :func:`feature_parts` of every answer, stacked: name -> ``n x C x D``.
        ious: ``n x C`` true IoU of each output.
        scores: ``n x C`` the scores (an adapter's with its readout zero).
    """

    parts: dict[str, Tensor]
    ious: Tensor
    scores: Tensor

    def beside(self, other: Answers) -> Answers:
        """These answers and ``other``'s for the same instances as one set of ``3 + 3`` masks each."""
        parts = {name: torch.cat([self.parts[name], other.parts[name]], dim=1) for name in self.parts}
        return Answers(
            parts, torch.cat([self.ious, other.ious], 1), torch.cat([self.scores, other.scores], 1)
        )

    def features(self, variant: str) -> Tensor:
        """``n x C x D`` features of ``variant`` (:data:`VARIANTS`), float64."""
        columns = []
        for part in VARIANTS[variant]:
            if part == "all":
                mean = self.parts["mean"]
                columns.append(mean.flatten(1)[:, None].expand(-1, mean.shape[1], -1))
            else:
                columns.append(self.parts[part])
        return torch.cat(columns, dim=2).double()


def ring_logits(logits: Tensor, width: int) -> Tensor:
    """``3 x L x L`` logits (+1 / -1) of a ring ``width`` pixels wide just outside each of the masks."""
    masks = (logits > 0).float()[:, None]
    grown = F.max_pool2d(masks, 2 * width + 1, stride=1, padding=width)[:, 0]
    return 2 * (grown - masks[:, 0]).clamp(min=0) - 1


def area_features(logits: Tensor) -> Tensor:
    """``3 x 4``: each mask's share of the image, its logarithm, whether it is empty, and its stability
    (segment-anything's score: IoU of the mask at logit thresholds +1 and -1)."""
    share = (logits > 0).float().mean(dim=(-2, -1))
    stability = calculate_stability_score(logits, 0.0, 1.0)
    return torch.stack([share, share.clamp(min=1e-6).log(), (share == 0).float(), stability], dim=1)


def feature_parts(logits: Tensor, embedding: Tensor) -> dict[str, Tensor]:
    """The feature parts of one answer's ``3 x L x L`` logits on its ``1 x E x h x w`` embedding:
    ``mean`` (``3 x E``, the shipped readout's), ``area`` (``3 x 4``) and ``ring`` (``3 x E``)."""
    cell = logits.shape[-1] // embedding.shape[-1]
    return {
        "mean": mask_features(logits[None], embedding)[0],
        "area": area_features(logits),
        "ring": mask_features(ring_logits(logits, RING_CELLS * cell)[None], embedding)[0],
    }


def answers(sam, data: TrainingSet, adapter: PromptAdapter | None) -> Answers:
    """The adapter's (readout and mask bias zero; ``None``: the base's) answers to one centre click per
    instance of ``data``."""
    parts, ious, scores = [], [], []
    for a in center_click_answers(sam, data, adapter.plm if adapter is not None else None):
        parts.append(feature_parts(a.output.low_res_logits.float()[0], a.features.embedding.float()))
        ious.append(a.true_iou[0].float())
        scores.append(a.output.iou_predictions.float()[0])
    stacked = {name: torch.stack([p[name] for p in parts]).cpu() for name in parts[0]}
    return Answers(stacked, torch.stack(ious).double().cpu(), torch.stack(scores).double().cpu())


def answer_set(sam, data: TrainingSet, adapter: PromptAdapter, with_base: bool) -> Answers:
    """The adapter's answers on ``data``, and the base's beside them when ``with_base``."""
    own = answers(sam, data, adapter)
    return own.beside(answers(sam, data, None)) if with_base else own


def fit_ridge(features: Tensor, ious: Tensor, scores: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """The shipped fit: ``(C x D weights, C biases)`` of :func:`fit_readout` (its multimask rows) on each
    block of three of the ``C`` masks (the fit is one regression per mask)."""
    rows = [
        fit_readout(
            ReadoutSamples(features[:, i : i + 3].float(), (ious - scores)[:, i : i + 3].float()), alpha
        )
        for i in range(0, features.shape[1], 3)
    ]
    return torch.cat([r[1:] for r, _ in rows]).double(), torch.cat([b[1:] for _, b in rows]).double()


def fit_expected_iou(features: Tensor, ious: Tensor, scores: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """``(3 x D weights, 3 biases)`` maximising the mean softmax(score / T)-weighted true IoU."""
    weights = torch.zeros(features.shape[1:], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(features.shape[1], dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weights, bias], max_iter=500, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimiser.zero_grad()
        ranked = (scores + (features * weights).sum(-1) + bias) / TEMPERATURE
        loss = -(torch.softmax(ranked, dim=1) * ious).sum(1).mean() + alpha / 1000 * weights.square().sum()
        loss.backward()
        return loss

    optimiser.step(closure)
    return weights.detach(), bias.detach()


FITS: dict[str, Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]] = {
    "ridge": fit_ridge,
    "expected IoU": fit_expected_iou,
}


def variant_row(train: Answers, held: Answers, variant: str, fit: str, alphas: list[float]) -> list[float]:
    """Held-out mIoU (%) of the mask ranked first by ``variant``'s features fitted with ``fit``, one per
    strength of ``alphas``; every variant but ``mean`` standardised on the training masks."""
    x, xt = train.features(variant), held.features(variant)
    if variant != "mean":
        centre, spread = x.flatten(0, 1).mean(0), x.flatten(0, 1).std(0) + 1e-6
        x, xt = (x - centre) / spread, (xt - centre) / spread
    row = []
    for alpha in alphas:
        weights, bias = FITS[fit](x, train.ious, train.scores, alpha)
        first = (held.scores + (xt * weights).sum(-1) + bias).argmax(dim=1, keepdim=True)
        row.append(100 * float(held.ious.gather(1, first).mean()))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="VOC plate folder (annotations/, images/)")
    parser.add_argument("--adapter", type=Path, required=True, help="the plate demo's adapter")
    parser.add_argument("--model-type", default="samplm_lite")
    parser.add_argument("--checkpoint", type=Path, help="the base's weights (default: the packaged ones)")
    parser.add_argument("--cache", type=Path, default=Path("runs/mask-ranking-cache"))
    parser.add_argument("--seed", type=int, default=0, help="the demo's split seed")
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 1.0, 10.0, 100.0])
    parser.add_argument("--with-base", action="store_true", help="rank the base's three masks too")
    args = parser.parse_args()
    annotations = args.data / "annotations" if (args.data / "annotations").is_dir() else args.data
    train_split, held_split = read_voc(annotations).split(0.5, seed=args.seed)
    workspace = Workspace(args.model_type, args.checkpoint, cache_dir=args.cache, verbose=False)
    sam, embeddings = workspace.embed([train_split, held_split])
    adapter = without_readout(PromptAdapter.load(args.adapter))
    train, held = (
        answer_set(sam, TrainingSet(s, embeddings, sam, progress=False), adapter, args.with_base)
        for s in (train_split, held_split)
    )
    first = held.scores[:, :3].argmax(dim=1, keepdim=True)
    zero, best = (100 * float(v.mean()) for v in (held.ious.gather(1, first), held.ious.max(1).values))
    counts = f"{len(train.ious)} training and {len(held.ious)} held-out plates"
    print(f"{counts}, base {args.model_type}, {args.adapter}")
    print(f"held out: readout zero {zero:.2f}, best of {held.ious.shape[1]} {best:.2f}")
    print("| features | fit | " + " | ".join(f"alpha {a:g}" for a in args.alphas) + " |")
    print("|---|---|" + "---|" * len(args.alphas))
    for variant in VARIANTS:
        for fit in FITS:
            cells = [f"{v:.2f}" for v in variant_row(train, held, variant, fit, args.alphas)]
            print(f"| {variant} | {fit} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
