"""Which of the three masks is the task's, and which one the scores rank first: base and adapters on
the held-out half of the real plate photos (the split of ``samplm demo --task plates``).

    samplm demo --task plates --data ../shared/data/car_license_plate_andrewmvd --out runs/plates
    python benchmarks/mask_ranking.py --data ../shared/data/car_license_plate_andrewmvd \\
        --adapter runs/plates/train/adapter

One centre click per held-out plate (the centre of its low-res rectangle, as training
validation clicks), mIoU at the decoder's resolution. Prints, for the base and each adapter: the mIoU
of each multimask output alone, of the first-ranked mask (``top``), of the best of the three
(``oracle``), and how often each output is ranked first and is the best. ``--zero-offsets`` also
shows each adapter with its score offsets and readout (and mask bias) set to zero (SAM's own ranking of the
adapter's masks); ``--zero-readout`` with its readout and mask bias set to zero (the offsets' ranking).
``--by-size`` adds, per plate size (the target's area in low-res pixels, :data:`SIZE_EDGES`), how many
plates, the first-ranked and best-of-3 mIoU, and the median ratio of the smallest mask's area to the
plate's.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from samplm import PromptAdapter
from samplm.adapter import PromptLearningModule
from samplm.data import InstanceDataset, read_voc
from samplm.train.center_scores import center_click_answers
from samplm.train.score_readout import without_readout
from samplm.train.training_set import TrainingSet
from samplm.workspace import Workspace

#: Plate-size buckets of ``--by-size``: target areas in low-res pixels (of 256 x 256).
SIZE_EDGES = (0, 100, 400, 1600, None)


def by_size(areas: Tensor, smallest: Tensor, first_iou: Tensor, best_iou: Tensor) -> list[str]:
    """One line per :data:`SIZE_EDGES` bucket: plates, first-ranked and best-of-3 mIoU (%), and the median
    ratio of the smallest mask's area to the target's."""
    lines = []
    for low, high in itertools.pairwise(SIZE_EDGES):
        inside = (areas >= low) & (areas < high if high is not None else True)
        if inside.any():
            ratio = float((smallest[inside] / areas[inside]).median())
            first, best = (100 * float(v[inside].mean()) for v in (first_iou, best_iou))
            lines.append(
                f"  plates of {low} to {high or 'more'} px: {int(inside.sum())}, first-ranked {first:.2f}, "
                f"best of 3 {best:.2f}, smallest mask / plate area (median) {ratio:.2f}"
            )
    return lines


def ranking(sam, data: TrainingSet, plm: PromptLearningModule | None) -> tuple[dict[str, object], list[str]]:
    """Per-output, top and oracle mIoU (%) and rank-first / best counts over ``data``'s instances, and
    the :func:`by_size` lines."""
    answers = list(center_click_answers(sam, data, plm))
    iou = torch.cat([a.true_iou for a in answers]).cpu()
    first = torch.cat([a.output.iou_predictions for a in answers]).float().argmax(dim=1).cpu()
    first_iou, best_iou = iou.gather(1, first[:, None])[:, 0], iou.max(dim=1).values
    areas = torch.stack([a.target.sum() for a in answers]).cpu()
    smallest = torch.stack([(a.output.low_res_logits[0] > 0).sum((-2, -1)).min() for a in answers]).cpu()
    figures = {
        "outputs": [round(100 * float(v), 2) for v in iou.mean(dim=0)],
        "top": round(100 * float(first_iou.mean()), 2),
        "oracle": round(100 * float(best_iou.mean()), 2),
        "ranked_first": np.bincount(first.numpy(), minlength=3).tolist(),
        "best": np.bincount(iou.argmax(dim=1).numpy(), minlength=3).tolist(),
    }
    return figures, by_size(areas, smallest.float(), first_iou, best_iou)


def held_out(folder: Path, seed: int) -> InstanceDataset:
    """The half of the plate photos ``samplm demo --task plates`` holds out."""
    annotations = folder / "annotations" if (folder / "annotations").is_dir() else folder
    return read_voc(annotations).split(0.5, seed=seed)[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="VOC plate folder (annotations/, images/)")
    parser.add_argument("--adapter", type=Path, action="append", default=[], help="adapter (repeatable)")
    parser.add_argument("--model-type", default="samplm_lite")
    parser.add_argument("--checkpoint", type=Path, help="the base's weights (default: the packaged ones)")
    parser.add_argument("--cache", type=Path, default=Path("runs/mask-ranking-cache"))
    parser.add_argument("--seed", type=int, default=0, help="the demo's split seed")
    parser.add_argument("--zero-offsets", action="store_true")
    parser.add_argument("--zero-readout", action="store_true")
    parser.add_argument("--by-size", action="store_true", help="also per plate size")
    args = parser.parse_args()
    dataset = held_out(args.data, args.seed)
    sam, embeddings = Workspace(args.model_type, args.checkpoint, cache_dir=args.cache, verbose=False).embed(
        [dataset]
    )
    data = TrainingSet(dataset, embeddings, sam, progress=False)
    print(f"{len(data.items)} held-out plates, base {args.model_type}")
    rows = [("base", None)]
    for path in args.adapter:
        adapter = PromptAdapter.load(path)
        rows.append((str(path), adapter.plm))
        if args.zero_readout:
            rows.append((f"{path} (readout zero)", without_readout(adapter).plm))
        if args.zero_offsets:
            plain = without_readout(adapter).plm
            torch.nn.init.zeros_(plain.score_offset)
            rows.append((f"{path} (offsets and readout zero)", plain))
    for name, plm in rows:
        figures, sizes = ranking(sam, data, plm)
        print(f"{name}: {figures}", *(sizes if args.by_size else []), sep="\n", flush=True)


if __name__ == "__main__":
    main()
