"""The paper's evaluation protocol (Section 5.1) for any dataset the readers understand.

Each instance is prompted with one positive click at its centre
(:func:`~samplm.utils.geometry.center_point` of its ground-truth mask: the centre of its deepest
pixels), or optionally with its ground-truth box. Methods, side by side on the same cached embeddings:

- ``SAM``: SAM's most confident of its three masks; ``SAM (oracle)``: the best of the three vs GT;
- ``SAM-F``: SAM's three masks blended with PerSAM-F's two learned weights (if fitted);
- for each adapter ``A``: ``A (PLM)``, ``A (PLM, oracle)`` and ``A (PLM+PMM refine)`` (PMM polygon
  refinement of the PLM's mask, for adapters that carry a PMM).

IoU and boundary IoU are computed at the original image resolution.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..adapter.prompt_adapter import PromptAdapter
from ..cache.embeddings import CachedEmbedding, EmbeddingCache
from ..data import Instance, InstanceDataset
from ..decoder.for_base import predictor_for
from ..utils.geometry import center_point, mask_to_box, rle_encode
from ..utils.progress import progress_bar
from ..utils.ranks import Ranks
from ..utils.threads import stage_threads, torch_threads
from .methods import SAM, SAM_F, SAM_ORACLE, Method, oracle_method, plm_method, refined_method
from .metrics import boundary_iou, coco_mask_ap, iou, mean_by_class
from .samf import SamF

if TYPE_CHECKING:
    from ..decoder.predictor import CustomSamPredictor
    from ..decoder.sam2_predictor import CustomSam2Predictor

PROMPTS = ("point", "box")
__all__ = ["SAM", "SAM_F", "SAM_ORACLE", "EvalResult", "InstancePredictor", "Method", "evaluate"]


@dataclass(frozen=True)
class Prediction:
    """One method's mask for one instance and the confidence used to rank it (COCO AP)."""

    mask: np.ndarray
    score: float


@dataclass
class InstanceResult:
    """Per-instance numbers.

    Attributes:
        instance_id, category, image: identify the instance.
        prompt: ``{"point": [x, y]}`` or ``{"box": [x1, y1, x2, y2]}`` in original pixels.
        iou, biou: ``{method: value}``.
    """

    instance_id: str
    category: str
    image: str
    prompt: dict[str, list[float]]
    iou: dict[str, float] = field(default_factory=dict)
    biou: dict[str, float] = field(default_factory=dict)


@dataclass
class EvalResult:
    """Everything :func:`evaluate` measured.

    Attributes:
        methods: the methods in table order (:class:`Method`, a ``str`` of the table name).
        instances: per-instance results.
        miou, biou: ``{method: {category: mean, "all": mean over instances}}``.
        ap: ``{method: {"AP", "AP50", "AP75"}}`` (oracles excluded).
        skipped: instances not evaluated, by reason.
        samf: the SAM-F weights used, if any.
    """

    methods: list[Method]
    instances: list[InstanceResult]
    miou: dict[str, dict[str, float]]
    biou: dict[str, dict[str, float]]
    ap: dict[str, dict[str, float]]
    skipped: dict[str, int]
    samf: SamF | None

    @property
    def categories(self) -> list[str]:
        return sorted({r.category for r in self.instances})

    def refinement_effect(self) -> dict[str, dict[str, float]]:
        """``{adapter: {category: refined mIoU - PLM mIoU}}`` (positive: refinement helps)."""
        effect: dict[str, dict[str, float]] = {}
        for method in self.methods:
            if method.kind == "refined":
                base = self.miou[method.with_kind("top")]
                effect[method.adapter] = {k: self.miou[method][k] - base[k] for k in base}
        return effect

    def cross_task(self) -> dict[str, dict[str, float]]:
        """``{method: {category: mIoU}}`` for SAM and each adapter's PLM: adapters x tasks (Fig. 6)."""
        rows = [SAM] + [m for m in self.methods if m.kind == "top" and m.adapter is not None]
        return {m: {c: self.miou[m][c] for c in self.categories} for m in rows}


class InstancePredictor:
    """Runs every method for one instance through the base's adapter-aware predictor
    (:func:`~samplm.decoder.for_base.predictor_for`) started from the cached embedding (shared by metrics,
    visuals and sensitivity maps).

    Args:
        sam: the frozen SAM (its image encoder is not used).
        adapters: ``{name: adapter}``, loaded into the predictor under these names.
        samf: fitted SAM-F weights, or ``None``.
        refine: add the PMM refinement row for adapters that carry a PMM.
        device: where to run.
        threads: at most this many CPU threads per prediction (``None`` / ``"auto"``: what torch has;
            one while the machine is oversubscribed, :func:`~samplm.utils.threads.stage_threads`).
    """

    def __init__(
        self,
        sam: Any,
        adapters: dict[str, PromptAdapter],
        *,
        samf: SamF | None = None,
        refine: bool = True,
        device: str | torch.device = "cpu",
        threads: int | str | None = None,
    ) -> None:
        self.threads = threads
        self.predictor = predictor_for(sam.to(device).eval())
        for name, adapter in adapters.items():
            self.predictor.load_adapter(adapter, adapter_name=name, activate=False)
        self.adapters = adapters
        self.samf = samf
        self.refine = refine

    @property
    def methods(self) -> list[Method]:
        names = [SAM, SAM_ORACLE] + ([SAM_F] if self.samf is not None else [])
        for name, adapter in self.adapters.items():
            names += [plm_method(name), oracle_method(name)]
            if self.refine and adapter.pmm is not None:
                names.append(refined_method(name))
        return names

    def prompt_for(self, gt: np.ndarray, prompt: str) -> dict[str, list[float]]:
        """The deterministic prompt of an instance in original pixels."""
        if prompt == "box":
            return {"box": list(mask_to_box(gt))}
        return {"point": list(center_point(gt))}

    def set_entry(self, entry: CachedEmbedding) -> CustomSamPredictor | CustomSam2Predictor:
        """The predictor, set to the cached image ``entry``."""
        self.predictor.set_embedding(entry.features.to(torch.float32), entry.original_size, entry.input_size)
        return self.predictor

    @torch.no_grad()
    def predict(
        self, entry: CachedEmbedding, prompts: dict[str, list[float]], gt: np.ndarray | None
    ) -> dict[Method, Prediction]:
        """Masks of every method for one prompt (``gt`` is needed for the oracle rows).

        SAM and every adapter answer the prompt in one :meth:`CustomSamPredictor.predict_many` call.
        """
        with torch_threads(stage_threads(self.threads)):
            return self._predict(entry, prompts, gt)

    def _predict(
        self, entry: CachedEmbedding, prompts: dict[str, list[float]], gt: np.ndarray | None
    ) -> dict[Method, Prediction]:
        predictor = self.set_entry(entry)
        if "point" in prompts:
            kwargs: dict[str, Any] = {
                "point_coords": np.array([prompts["point"]]),
                "point_labels": np.array([1]),
            }
        else:
            kwargs = {"box": np.array(prompts["box"])}
        kwargs["multimask_output"] = "point" in prompts
        out: dict[Method, Prediction] = {}
        answers = predictor.predict_many([None, *self.adapters], **kwargs, refine=self.refine)
        masks, scores, low_res = answers[None]
        self._add(out, SAM, masks, scores, gt)
        if self.samf is not None and "point" in prompts:
            blended = predictor.upscale_logits(self.samf.blend(torch.as_tensor(low_res)[None]))
            score = float(self.samf.blend_scores(torch.as_tensor(scores, dtype=torch.float64)[None])[0, 0])
            out[SAM_F] = Prediction(blended[0, 0].cpu().numpy(), score)
        for name in self.adapters:
            masks, scores, low_res = answers[name]
            if self.refine and predictor.get_adapter(name).pmm is not None:  # predict_many refined it
                refined = masks
                masks = predictor.upscale_logits(torch.as_tensor(low_res)[None])[0].cpu().numpy()
                top = self._add(out, plm_method(name), masks, scores, gt)
                out[refined_method(name)] = Prediction(refined[int(np.argmax(scores))], top.score)
            else:
                self._add(out, plm_method(name), masks, scores, gt)
        return out

    @staticmethod
    def _add(out, top: Method, masks: np.ndarray, scores: np.ndarray, gt: np.ndarray | None) -> Prediction:
        """Record the top-confidence mask under ``top`` and, with ``gt``, the best one as its oracle."""
        best = int(np.argmax(scores))
        out[top] = Prediction(masks[best], float(scores[best]))
        if gt is not None:
            oracle = int(np.argmax([iou(m, gt) for m in masks]))
            out[top.with_kind("oracle")] = Prediction(masks[oracle], float(scores[oracle]))
        return out[top]


def evaluate(
    sam: Any,
    dataset: InstanceDataset,
    cache: EmbeddingCache,
    adapters: dict[str, PromptAdapter] | None = None,
    *,
    prompt: str = "point",
    samf: SamF | None = None,
    refine: bool = True,
    dilation_ratio: float = 0.02,
    max_instances: int | None = None,
    device: str | torch.device = "cpu",
    progress: bool = True,
    threads: int | str | None = None,
    ranks: Ranks | None = None,
) -> EvalResult:
    """Evaluate SAM, SAM-F and adapters on every instance of ``dataset`` (embeddings from ``cache``).

    Args:
        sam: the frozen SAM (its image encoder is not used).
        dataset: instances to evaluate (e.g. the validation split).
        cache: holds the embeddings of every image of ``dataset``.
        adapters: ``{name: adapter}``.
        prompt: ``"point"`` (centre click, three masks) or ``"box"`` (GT box, single mask).
        samf: fitted SAM-F weights (point prompts only); ``None`` leaves SAM-F out.
        refine: add the PMM refinement row for adapters that carry a PMM.
        dilation_ratio: boundary-IoU band as a fraction of the image diagonal.
        max_instances: consider at most this many instances (in dataset order; those with an empty
            ground-truth mask are counted as skipped).
        threads: at most this many CPU threads per click (``None`` / ``"auto"``: what torch has; one
            while the machine is oversubscribed, :func:`~samplm.utils.threads.stage_threads`).
        ranks: under a sharded launch, this process scores the instances of its images
            (:meth:`~samplm.utils.ranks.Ranks.owns`, by image) and every rank gathers every rank's
            scores: the result, in dataset order, equals a one-process run's on every rank.
    """
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    ranks = ranks or Ranks()
    adapters = {name: a.to(device).eval() for name, a in (adapters or {}).items()}
    predictor = InstancePredictor(
        sam.to(device).eval(), adapters, samf=samf, refine=refine, device=device, threads=threads
    )
    methods = [m for m in predictor.methods if prompt == "point" or m.kind != "samf"]
    whole_plan = _plan(dataset, max_instances)
    ranks.agree(
        [(str(path), [n.instance.instance_id for n in i]) for path, i in whole_plan], "images to evaluate"
    )
    plan = ranks.shard(whole_plan)
    scored = ranks.together(
        lambda: _score_shard(predictor, methods, cache, plan, prompt, dilation_ratio, progress)
    )
    everything = sorted((s for part in ranks.gather(scored) for s in part), key=lambda s: s.order)
    results = [s.record for s in everything if s.record is not None]
    coco: dict[Method, list[Any]] = defaultdict(list)
    for s in everything:
        for method, row in s.coco.items():
            coco[method].append(row)
    skipped = Counter("empty ground-truth mask" for s in everything if s.record is None)
    miou = {m: mean_by_class((r.category, r.iou[m]) for r in results) for m in methods}
    biou = {m: mean_by_class((r.category, r.biou[m]) for r in results) for m in methods}
    return EvalResult(methods, results, miou, biou, _coco_ap(coco), dict(skipped), samf)


def _score_shard(
    predictor: InstancePredictor,
    methods: list[Method],
    cache: EmbeddingCache,
    plan: list[tuple[Any, list[_Numbered]]],
    prompt: str,
    dilation_ratio: float,
    progress: bool,
) -> list[ScoredInstance]:
    """Score every instance of ``plan`` (this rank's images and their instances)."""
    bar = progress_bar(
        total=sum(len(i) for _, i in plan), desc="evaluating", unit="inst", disable=not progress
    )
    scored = []
    for image_path, instances in plan:
        entry = cache.get(image_path, instances[0].instance.image_size)
        for numbered in instances:
            scored.append(_score_instance(predictor, methods, entry, numbered, prompt, dilation_ratio))
            bar.update(1)
    bar.close()
    return scored


@dataclass(frozen=True)
class ScoredInstance:
    """One instance's scores, as a rank sends them to be merged.

    Attributes:
        order: the instance's position in the dataset (what the merged results are sorted by).
        record: its per-method IoU and boundary IoU, or ``None`` if its ground-truth mask is empty.
        coco: ``{method: (gt, mask, score, category)}`` for the AP figures (not the oracles'), masks as
            COCO RLEs (:func:`~samplm.utils.geometry.rle_encode`).
    """

    order: int
    record: InstanceResult | None
    coco: dict[Method, tuple[Any, ...]]


def _plan(dataset: InstanceDataset, max_instances: int | None) -> list[tuple[Any, list[_Numbered]]]:
    """``[(image path, its instances)]`` in dataset order, the first ``max_instances`` instances only;
    each instance with its position in that order (:class:`_Numbered`)."""
    budget = len(dataset) if max_instances is None else max_instances
    plan, taken = [], 0
    for image_path, instances in dataset.by_image().items():
        chosen = instances[: max(0, budget - taken)]
        if chosen:
            plan.append((image_path, [_Numbered(taken + i, inst) for i, inst in enumerate(chosen)]))
        taken += len(chosen)
    return plan


def _score_instance(
    predictor: InstancePredictor,
    methods: list[Method],
    entry: CachedEmbedding,
    numbered: _Numbered,
    prompt: str,
    dilation_ratio: float,
) -> ScoredInstance:
    """Every method's IoU and boundary IoU on one instance, and its masks and scores for the AP figures
    (not the oracles')."""
    inst = numbered.instance
    gt = inst.mask(*entry.original_size)  # H x W bool at the original size
    if not gt.any():
        return ScoredInstance(numbered.order, None, {})
    prompts = predictor.prompt_for(gt, prompt)
    preds = predictor.predict(entry, prompts, gt)
    record = InstanceResult(inst.instance_id, inst.category, str(inst.image_path), prompts)
    coco, gt_rle = {}, rle_encode(gt)  # RLEs: kept for every instance and sent between ranks
    for method in methods:
        record.iou[method] = iou(preds[method].mask, gt)
        record.biou[method] = boundary_iou(preds[method].mask, gt, dilation_ratio)
        if method.kind != "oracle":
            coco[method] = (gt_rle, rle_encode(preds[method].mask), preds[method].score, inst.category)
    return ScoredInstance(numbered.order, record, coco)


@dataclass(frozen=True)
class _Numbered:
    """An instance and its position in the dataset."""

    order: int
    instance: Instance


def _coco_ap(rows_by_method: dict[Method, list[tuple]]) -> dict[str, dict[str, float]]:
    """COCO mask AP of each method's ``(gt, mask, score, category)`` rows (methods without rows left out)."""
    ap: dict[str, dict[str, float]] = {}
    for method, rows in rows_by_method.items():
        value = coco_mask_ap(*(list(col) for col in zip(*rows, strict=True))) if rows else None
        if value is not None:
            ap[method] = value
    return ap


def instances_by_id(dataset: InstanceDataset) -> dict[str, Instance]:
    """Instances keyed by ``instance_id``."""
    return {inst.instance_id: inst for inst in dataset}
