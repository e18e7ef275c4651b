"""The paper's evaluation protocol (Section 5.1) for any dataset the readers understand.

Each instance is prompted with one positive click at its centre (argmax of the distance transform of
its ground-truth mask), or optionally with its ground-truth box. Methods, side by side on the same
cached embeddings:

- ``SAM``: SAM's most confident of its three masks; ``SAM (oracle)``: the best of the three vs GT;
- ``SAM-F``: SAM's three masks blended with PerSAM-F's two learned weights (if fitted);
- for each adapter ``A``: ``A (PLM)``, ``A (PLM, oracle)`` and ``A (PLM+PMM refine)`` (PMM polygon
  refinement of the PLM's mask, for adapters that carry a PMM).

IoU and boundary IoU are computed at the original image resolution.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from tqdm.auto import tqdm

from ..adapter import PromptAdapter
from ..cache import CachedEmbedding, EmbeddingCache
from ..data import Instance, InstanceDataset
from ..decode import decode_prompts
from ..decoder_features import capture_decoder_features
from ..geometry import center_point, mask_to_box
from ..refine import refine_masks
from .metrics import boundary_iou, coco_mask_ap, iou, mean_by_class
from .samf import SamF

SAM = "SAM"
SAM_ORACLE = "SAM (oracle)"
SAM_F = "SAM-F"
PROMPTS = ("point", "box")


def plm_method(adapter: str) -> str:
    return f"{adapter} (PLM)"


def oracle_method(adapter: str) -> str:
    return f"{adapter} (PLM, oracle)"


def refined_method(adapter: str) -> str:
    return f"{adapter} (PLM+PMM refine)"


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
        methods: method names in table order.
        instances: per-instance results.
        miou, biou: ``{method: {category: mean, "all": mean over instances}}``.
        ap: ``{method: {"AP", "AP50", "AP75"}}`` (empty without pycocotools; oracles excluded).
        skipped: instances not evaluated, by reason.
        samf: the SAM-F weights used, if any.
    """

    methods: list[str]
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
            if method.endswith(" (PLM+PMM refine)"):
                name = method[: -len(" (PLM+PMM refine)")]
                base = self.miou[plm_method(name)]
                effect[name] = {k: self.miou[method][k] - base[k] for k in base}
        return effect

    def cross_task(self) -> dict[str, dict[str, float]]:
        """``{method: {category: mIoU}}`` for SAM and each adapter's PLM: adapters x tasks (Fig. 6)."""
        rows = [SAM] + [m for m in self.methods if m.endswith(" (PLM)")]
        return {m: {c: self.miou[m][c] for c in self.categories} for m in rows}


class InstancePredictor:
    """Runs every method for one instance on a cached embedding (shared by metrics, visuals, maps)."""

    def __init__(
        self,
        sam: Sam,
        adapters: dict[str, PromptAdapter],
        *,
        samf: SamF | None = None,
        refine: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        self.sam = sam
        self.adapters = adapters
        self.samf = samf
        self.refine = refine
        self.device = torch.device(device)
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)

    @property
    def methods(self) -> list[str]:
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

    @torch.no_grad()
    def predict(
        self, entry: CachedEmbedding, prompts: dict[str, list[float]], gt: np.ndarray | None
    ) -> dict[str, Prediction]:
        """Masks of every method for one prompt (``gt`` is needed for the oracle rows)."""
        embedding = entry.embedding.float().to(self.device)
        kwargs: dict[str, Any] = {}
        if "point" in prompts:
            coords = self.transform.apply_coords(
                np.array([prompts["point"]], dtype=np.float64), entry.original_size
            )
            kwargs["point_coords"] = torch.as_tensor(coords[None], dtype=torch.float32, device=self.device)
            kwargs["point_labels"] = torch.ones(1, 1, dtype=torch.int64, device=self.device)
        else:
            box = self.transform.apply_boxes(
                np.array([prompts["box"]], dtype=np.float64), entry.original_size
            )
            kwargs["boxes"] = torch.as_tensor(box, dtype=torch.float32, device=self.device)
        multimask = "point" in prompts
        out: dict[str, Prediction] = {}
        base = decode_prompts(self.sam, embedding, multimask_output=multimask, **kwargs)
        self._add(out, SAM, SAM_ORACLE, base, entry, gt)
        if self.samf is not None and multimask:
            blended = self.samf.blend(base.low_res_logits.float())
            score = float(
                (base.iou_predictions[0] * torch.tensor(self.samf.weights, device=self.device)).sum()
            )
            out[SAM_F] = Prediction(self._upscale(blended, entry)[0], score)
        for name, adapter in self.adapters.items():
            with capture_decoder_features(self.sam) as features:
                result = decode_prompts(
                    self.sam, embedding, multimask_output=multimask, plm=adapter.plm, **kwargs
                )
            top = self._add(out, plm_method(name), oracle_method(name), result, entry, gt)
            if self.refine and adapter.pmm is not None:
                (refined,) = refine_masks(
                    adapter.pmm,
                    top.mask[None],
                    features.image_tokens,
                    original_size=entry.original_size,
                    input_size=entry.input_size,
                    image_size=self.sam.image_encoder.img_size,
                    grid=tuple(self.sam.prompt_encoder.image_embedding_size),
                )
                out[refined_method(name)] = Prediction(refined.mask, top.score)
        return out

    def _add(self, out, top_name, oracle_name, decoded, entry, gt) -> Prediction:
        masks = self._upscale(decoded.low_res_logits, entry)
        scores = decoded.iou_predictions[0].float().cpu().numpy()
        best = int(np.argmax(scores))
        out[top_name] = Prediction(masks[best], float(scores[best]))
        if gt is not None:
            oracle = int(np.argmax([iou(m, gt) for m in masks]))
            out[oracle_name] = Prediction(masks[oracle], float(scores[oracle]))
        return out[top_name]

    def _upscale(self, low_res: torch.Tensor, entry: CachedEmbedding) -> np.ndarray:
        full = self.sam.postprocess_masks(low_res.float(), entry.input_size, entry.original_size)
        return (full[0] > self.sam.mask_threshold).cpu().numpy()


def evaluate(
    sam: Sam,
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
        max_instances: evaluate at most this many instances (in dataset order).
    """
    if prompt not in PROMPTS:
        raise ValueError(f"prompt must be one of {PROMPTS}, got {prompt!r}")
    adapters = {name: a.to(device).eval() for name, a in (adapters or {}).items()}
    predictor = InstancePredictor(sam.to(device).eval(), adapters, samf=samf, refine=refine, device=device)
    methods = [m for m in predictor.methods if prompt == "point" or m != SAM_F]
    results: list[InstanceResult] = []
    skipped: Counter[str] = Counter()
    coco: dict[str, list[Any]] = defaultdict(list)
    groups = dataset.by_image()
    budget = max_instances if max_instances is not None else len(dataset)
    bar = tqdm(total=min(budget, len(dataset)), desc="evaluating", unit="inst", disable=not progress)
    for image_path, instances in groups.items():
        if len(results) >= budget:
            break
        entry = cache.get(image_path, instances[0].image_size)
        for inst in instances[: budget - len(results)]:
            gt = inst.mask(*entry.original_size)
            if not gt.any():
                skipped["empty ground-truth mask"] += 1
                continue
            prompts = predictor.prompt_for(gt, prompt)
            preds = predictor.predict(entry, prompts, gt)
            record = InstanceResult(inst.instance_id, inst.category, str(image_path), prompts)
            for method in methods:
                record.iou[method] = iou(preds[method].mask, gt)
                record.biou[method] = boundary_iou(preds[method].mask, gt, dilation_ratio)
                if "oracle" not in method:
                    coco[method].append((gt, preds[method].mask, preds[method].score, inst.category))
            results.append(record)
            bar.update(1)
    bar.close()
    miou = {m: mean_by_class((r.category, r.iou[m]) for r in results) for m in methods}
    biou = {m: mean_by_class((r.category, r.biou[m]) for r in results) for m in methods}
    ap: dict[str, dict[str, float]] = {}
    for method, rows in coco.items():
        value = coco_mask_ap(*(list(col) for col in zip(*rows, strict=True))) if rows else None
        if value is not None:
            ap[method] = value
    return EvalResult(methods, results, miou, biou, ap, dict(skipped), samf)


def instances_by_id(dataset: InstanceDataset) -> dict[str, Instance]:
    """Instances keyed by ``instance_id``."""
    return {inst.instance_id: inst for inst in dataset}
