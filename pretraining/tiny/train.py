"""Pretrain ``samplm_tiny`` with SAM's recipe on the procedural corpus (reproducible, seeded).

    python -m pretraining.tiny.train --out samplm/base/weights/samplm_tiny.safetensors \\
        --minutes 36 --backgrounds ../shared/data/car_license_plate_andrewmvd/images \\
        ../shared/data/perseg_persam_examples/Images

runs the three stages of :data:`RECIPE` in one job, each on a fresh seeded corpus and starting from
the previous stage's weights: wholes and parts from scratch; solid parts (plates, closed text) with
part-first IoU targets; then the decoder and IoU head alone on frozen image embeddings.

Recipe (SAM, Section 3 and its appendix, at small scale): per scene, random prompts on random objects;
a single click is answered with SAM's three multimask outputs, a box with the single-mask output.
Losses: 20 x focal + dice at the low-res mask resolution, and MSE of the IoU head. A click inside a
part (text, logo, stripe) is ambiguous - the user may mean the part or the whole object - so the three
outputs are trained as a set: the best-matching output for the part and a *different* best-matching
output for the whole (SAM's min-over-masks, applied to both answers), and the IoU head regresses the
expected IoU under "part with probability 0.6, whole 0.4". Clicks elsewhere on the object mean the
whole. This gives the model SAM's ambiguity: its three masks contain both answers (high oracle IoU)
while its most confident mask for a click on a pattern is the pattern.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import save_file
from segment_anything.modeling import Sam

from samplm.base.tiny import TINY_GRID, TINY_IMAGE_SIZE, build_sam_tiny_architecture
from samplm.data.images import find_images
from samplm.data.synthetic import PhotoBackgrounds
from samplm.decoder.decode import decode_prompts
from samplm.prompts.center_click import decode_center_click
from samplm.train.losses import dice_loss, mask_iou, sigmoid_focal_loss
from samplm.utils.files import atomic_write
from samplm.utils.progress import progress_bar

from ..scenes import make_scene

LOW_RES = 4 * TINY_GRID


def _low_res(mask: np.ndarray) -> np.ndarray:
    return cv2.resize(mask.astype(np.float32), (LOW_RES, LOW_RES), interpolation=cv2.INTER_AREA) >= 0.5


def build_corpus(
    count: int,
    seed: int,
    photos: PhotoBackgrounds | None,
    progress: bool = True,
    close_parts: int = 0,
    plates: float = 0.0,
):
    """Scenes as (images N x S x S x 3 uint8, objects: per scene a list of (whole, [parts]) at low res).

    ``plates``: probability that an object's central part is a solid plate carrying text or a logo.

    ``close_parts`` > 0 closes each part with an elliptic kernel of that size (px), turning a text
    string's strokes into a solid text region a 16 x 16 embedding can represent.
    """
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (close_parts, close_parts)) if close_parts else None
    rng = np.random.default_rng(seed)
    images = np.zeros((count, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE, 3), np.uint8)
    objects = []
    for i in progress_bar(range(count), desc="generating scenes", disable=not progress):
        image, scene = make_scene(rng, TINY_IMAGE_SIZE, photos, plates=plates)
        images[i] = image
        entries = []
        for obj in scene:
            whole = _low_res(obj.whole)
            if kernel is not None:
                obj.parts = [
                    cv2.morphologyEx(p.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool) & obj.whole
                    for p in obj.parts
                ]
            parts = [p for p in (_low_res(p) for p in obj.parts) if p.sum() >= 2]
            if whole.sum() >= 4:
                entries.append((whole, parts))
        objects.append(entries)
    return images, objects


def _pixels(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``N x S x S x 3`` uint8 -> ``N x 3 x S x S`` float on ``device``."""
    return torch.as_tensor(images, device=device).permute(0, 3, 1, 2).float()


def _cell_in(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    i = int(rng.integers(len(ys)))
    scale = TINY_IMAGE_SIZE / LOW_RES
    return np.array([(xs[i] + rng.random()) * scale, (ys[i] + rng.random()) * scale])


def _box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    scale = TINY_IMAGE_SIZE / LOW_RES
    box = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64) * scale
    w, h = box[2] - box[0], box[3] - box[1]
    box += rng.normal(0, 0.05, 4) * np.array([w, h, w, h])
    return np.clip(box, 0, TINY_IMAGE_SIZE)


def sample_prompts(
    objects,
    rng: np.random.Generator,
    per_scene: int,
    part_probability: float = 0.6,
    part_clicks: float = 0.65,
):
    """Click prompts ``(xy, [(target, weight), ...])`` and box prompts ``(xyxy, target)``.

    A share ``part_clicks`` of clicks lands on a part; for those the IoU head's target weighs the part
    answer by ``part_probability`` and the whole by the rest."""
    clicks, boxes = [], []
    for _ in range(per_scene):
        whole, parts = objects[int(rng.integers(len(objects)))]
        if rng.random() < 0.25:
            target = parts[int(rng.integers(len(parts)))] if parts and rng.random() < 0.3 else whole
            boxes.append((_box(target, rng), target))
            continue
        if parts and rng.random() < part_clicks:
            part = parts[int(rng.integers(len(parts)))]
            clicks.append((_cell_in(part, rng), [(part, part_probability), (whole, 1 - part_probability)]))
        else:
            rest = whole & ~np.any(parts, axis=0) if parts else whole
            clicks.append((_cell_in(rest if rest.any() else whole, rng), [(whole, 1.0)]))
    return clicks, boxes


def _mask_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 20 * sigmoid_focal_loss(logits, target) + dice_loss(logits, target)


def click_loss(logits: torch.Tensor, iou_pred: torch.Tensor, hypotheses) -> torch.Tensor:
    """Set loss over the 3 outputs of one click (see the module docstring). ``logits``: 3 x h x w."""
    targets = [torch.as_tensor(t, dtype=torch.float32, device=logits.device) for t, _ in hypotheses]
    losses = torch.stack([_mask_loss(logits, t[None].expand_as(logits)) for t in targets])  # H x 3
    if len(targets) == 1:
        seg = losses[0].min()
    else:
        seg = min(losses[0, j] + losses[1, k] for j, k in itertools.permutations(range(3), 2))
    expected = sum(
        w * mask_iou(logits.detach(), t[None].expand_as(logits))
        for (_, w), t in zip(hypotheses, targets, strict=True)
    )
    return seg + torch.nn.functional.mse_loss(iou_pred, expected)


@dataclass(frozen=True)
class Stage:
    """One stage of the pretraining curriculum.

    Attributes:
        name: label in logs and progress bars.
        share: this stage's share of the total time budget.
        lr, warmup: peak AdamW learning rate and linear warm-up steps (then cosine decay to 0.1 x).
        plates: probability of a solid plate as an object's central part.
        close_parts: close part masks with an elliptic kernel of this size (px); 0 keeps them as drawn.
        part_probability: IoU-head weight of the part answer for a click on a part.
        part_clicks: share of clicks placed on parts.
        decoder_only: freeze the image encoder and train on precomputed embeddings.
        prompts_per_scene: prompts sampled per scene and step.
    """

    name: str
    share: float
    lr: float = 8e-4
    warmup: int = 100
    plates: float = 0.0
    close_parts: int = 0
    part_probability: float = 0.6
    part_clicks: float = 0.65
    decoder_only: bool = False
    prompts_per_scene: int = 3


RECIPE: tuple[Stage, ...] = (
    Stage("wholes and parts", share=0.55),
    Stage(
        "solid parts, part first",
        share=0.2,
        lr=4e-4,
        warmup=50,
        plates=0.6,
        close_parts=9,
        part_probability=0.85,
        part_clicks=0.8,
    ),
    Stage(
        "decoder and IoU head",
        share=0.25,
        lr=5e-4,
        warmup=50,
        plates=0.8,
        close_parts=9,
        part_probability=0.9,
        part_clicks=0.8,
        decoder_only=True,
        prompts_per_scene=4,
    ),
)
"""The recipe of the shipped weights: each stage starts from the previous one's weights."""


def run_stage(
    sam: Sam,
    stage: Stage,
    *,
    seconds: float,
    max_steps: int,
    scenes: int,
    seed: int,
    photos: PhotoBackgrounds | None,
    images_per_step: int = 8,
    progress: bool = True,
) -> dict:
    """Train ``sam`` in place for one stage on a fresh corpus of ``scenes`` scenes (seeded by ``seed``).

    The number of steps is planned from the speed measured over the first 30 steps so that the
    optimisation takes about ``seconds``, capped at ``max_steps`` (pass the steps a logged run made
    and a large ``seconds`` to replay it exactly). Returns the stage's log: settings, steps, seconds,
    loss curve, held-out ambiguity numbers (:func:`evaluate_ambiguity`).
    """
    torch.manual_seed(seed)
    images, objects = build_corpus(
        scenes, seed, photos, progress=progress, close_parts=stage.close_parts, plates=stage.plates
    )
    device = next(sam.parameters()).device
    usable = [i for i, o in enumerate(objects) if o]
    n_held = min(200, len(usable) // 5)
    held_out, train_ids = usable[:n_held], usable[n_held:]
    sam.train()
    sam.image_encoder.requires_grad_(not stage.decoder_only)
    cached = None
    if stage.decoder_only:
        sam.image_encoder.eval()
        with torch.no_grad():
            cached = torch.cat(
                [
                    sam.image_encoder(sam.preprocess(_pixels(images[i : i + 32], device)))
                    for i in progress_bar(
                        range(0, len(images), 32), desc="embedding corpus", disable=not progress
                    )
                ]
            )
    optimizer = torch.optim.AdamW(
        [p for p in sam.parameters() if p.requires_grad], lr=stage.lr, weight_decay=0.01
    )
    rng = np.random.default_rng(seed + 1)
    started = time.perf_counter()
    planned, step, curve = max_steps, 0, []
    bar = progress_bar(total=max_steps, desc=f"pretraining: {stage.name}", unit="step", disable=not progress)
    while step < planned:
        if step == 30:  # plan the schedule from the measured speed and the time budget
            per_step = (time.perf_counter() - started) / 30
            planned = max(30, min(max_steps, int(seconds / per_step)))
            bar.total = planned
        warm = min(1.0, (step + 1) / max(1, stage.warmup))
        cosine = 0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, step / max(planned, 1))))
        for group in optimizer.param_groups:
            group["lr"] = stage.lr * warm * cosine
        picks = rng.choice(train_ids, size=min(images_per_step, len(train_ids)), replace=False)
        if cached is not None:
            embeddings = cached[torch.as_tensor(picks, device=device)]
        else:
            embeddings = sam.image_encoder(sam.preprocess(_pixels(images[picks], device)))
        total, count = torch.zeros((), device=device), 0
        for embedding, scene in zip(embeddings, picks, strict=True):
            clicks, boxes = sample_prompts(
                objects[scene], rng, stage.prompts_per_scene, stage.part_probability, stage.part_clicks
            )
            total = total + _scene_loss(sam, embedding[None], clicks, boxes)
            count += len(clicks) + len(boxes)
        loss = total / count
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if step % 25 == 0:
            curve.append(
                {
                    "step": step,
                    "loss": round(loss.item(), 5),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
    bar.close()
    sam.image_encoder.requires_grad_(True)
    sam.eval()
    return {
        **asdict(stage),
        "seed": seed,
        "steps": step,
        "seconds": round(time.perf_counter() - started, 1),
        "held_out": evaluate_ambiguity(sam, images, objects, held_out),
        "loss_curve": curve,
    }


def step_caps(stages: Sequence[Stage], max_steps: Sequence[int] | None) -> list[int]:
    """One step cap per stage: ``max_steps`` checked against ``stages``, or 20,000 each."""
    if max_steps is None:
        return [20000] * len(stages)
    if len(max_steps) != len(stages):
        raise ValueError(f"max_steps needs one value per stage ({len(stages)}), got {len(max_steps)}")
    return list(max_steps)


def pretrain(
    out: Path,
    *,
    minutes: float,
    seed: int = 0,
    scenes: int = 4000,
    backgrounds: list[Path] = (),
    stages: Sequence[Stage] = RECIPE,
    max_steps: Sequence[int] | None = None,
    init: Path | None = None,
    images_per_step: int = 8,
    background_sources: list[str] | None = None,
    progress: bool = True,
    device: str | torch.device = "cpu",
) -> dict:
    """Pretrain ``samplm_tiny`` through ``stages`` in one job and save float16 weights to ``out``.

    Args:
        out: output ``.safetensors``; ``out.with_suffix(".log.json")`` receives the log.
        minutes: time budget of the optimisation, split between the stages by their ``share``.
        seed: stage ``i`` (from 0) uses seed ``seed + i`` for its corpus, prompts and initialisation.
        scenes: corpus size per stage.
        backgrounds: real photos to crop backgrounds from.
        stages: the curriculum (default :data:`RECIPE`).
        max_steps: per-stage step caps (default 20,000 each); with a large ``minutes`` this replays a
            logged run's schedule exactly.
        init: start from these weights instead of a random initialisation.
        device: where to train (e.g. ``"cuda"``); the corpus stays in CPU memory.

    Returns:
        The log's ``info``: settings, and per stage its steps, seconds and held-out numbers.
    """
    caps = step_caps(stages, max_steps)
    torch.manual_seed(seed)
    photos = PhotoBackgrounds(backgrounds, TINY_IMAGE_SIZE) if backgrounds else None
    sam = build_sam_tiny_architecture()
    if init is not None:
        from samplm.base.loading import load_state_dict

        sam.load_state_dict({k: v.float() for k, v in load_state_dict(init).items()})
    sam.to(device)
    started = time.perf_counter()
    total_share = sum(stage.share for stage in stages)
    logs = []
    for index, (stage, cap) in enumerate(zip(stages, caps, strict=True)):
        logs.append(
            run_stage(
                sam,
                stage,
                seconds=60 * minutes * stage.share / total_share,
                max_steps=cap,
                scenes=scenes,
                seed=seed + index,
                photos=photos,
                images_per_step=images_per_step,
                progress=progress,
            )
        )
    info = {
        "minutes": minutes,
        "seconds": round(time.perf_counter() - started, 1),
        "steps": sum(log["steps"] for log in logs),
        "seed": seed,
        "scenes": scenes,
        "init": str(init) if init else None,
        "device": str(device),
        "backgrounds": background_sources or [str(b) for b in backgrounds],
        "background_images": len(backgrounds),
        "held_out": logs[-1]["held_out"],
    }
    curves = [log.pop("loss_curve") for log in logs]
    info["stages"] = logs
    state = {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in sam.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: save_file(state, str(tmp), metadata={"samplm_pretrain": json.dumps(info)}))
    log_text = json.dumps({"info": info, "loss_curves": curves}, indent=1) + "\n"
    atomic_write(out.with_suffix(".log.json"), lambda tmp: tmp.write_text(log_text))
    return info


def _scene_loss(sam, embedding, clicks, boxes) -> torch.Tensor:
    device = embedding.device
    total = torch.zeros((), device=device)
    if clicks:
        coords = torch.as_tensor(
            np.stack([c for c, _ in clicks])[:, None], dtype=torch.float32, device=device
        )
        labels = torch.ones(len(clicks), 1, dtype=torch.int, device=device)
        out = decode_prompts(sam, embedding, point_coords=coords, point_labels=labels, multimask_output=True)
        for i, (_, hypotheses) in enumerate(clicks):
            total = total + click_loss(out.low_res_logits[i], out.iou_predictions[i], hypotheses)
    if boxes:
        box_tensor = torch.as_tensor(np.stack([b for b, _ in boxes]), dtype=torch.float32, device=device)
        out = decode_prompts(sam, embedding, boxes=box_tensor, multimask_output=False)
        logits, iou = out.low_res_logits, out.iou_predictions
        targets = torch.as_tensor(
            np.stack([t for _, t in boxes])[:, None], dtype=torch.float32, device=device
        )
        seg = _mask_loss(logits, targets)[:, 0]
        total = (
            total
            + seg.sum()
            + torch.nn.functional.mse_loss(iou, mask_iou(logits.detach(), targets), reduction="sum")
        )
    return total


@torch.no_grad()
def evaluate_ambiguity(sam, images, objects, ids) -> dict:
    """On held-out scenes, a click at the centre of each part: IoU of the most confident mask and of the
    best of three against the part and against the whole."""
    device = next(sam.parameters()).device
    rows = {"top_vs_part": [], "top_vs_whole": [], "best_vs_part": [], "best_vs_whole": []}
    for i in ids:
        embedding = sam.image_encoder(sam.preprocess(_pixels(images[i : i + 1], device)))
        for whole, parts in objects[i]:
            for part in parts:
                out = decode_center_click(sam, embedding, part)
                logits, iou = out.low_res_logits, out.iou_predictions
                top = int(iou[0].argmax())
                for name, target in (("part", part), ("whole", whole)):
                    values = mask_iou(
                        logits[0],
                        torch.as_tensor(target, dtype=torch.float32, device=device)[None].expand(3, -1, -1),
                    )
                    rows[f"top_vs_{name}"].append(float(values[top]))
                    rows[f"best_vs_{name}"].append(float(values.max()))
    return {k: round(float(np.mean(v)), 4) for k, v in rows.items()} | {"clicks": len(rows["top_vs_part"])}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors (float16)")
    parser.add_argument("--minutes", type=float, default=40.0, help="time budget of the optimisation")
    parser.add_argument(
        "--max-steps",
        type=int,
        nargs="+",
        help=f"step cap per stage ({len(RECIPE)} values); with a large --minutes replays a logged run",
    )
    parser.add_argument("--scenes", type=int, default=4000, help="corpus size per stage")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--backgrounds", type=Path, nargs="*", default=[], help="folders of real photos")
    parser.add_argument("--init", type=Path, help="start from these weights")
    parser.add_argument(
        "--device", default=None, help="torch device, e.g. cuda (default: cuda if available, else cpu)"
    )
    parser.add_argument(
        "--stages",
        type=int,
        nargs="+",
        help=f"run only these stages of the recipe (1-{len(RECIPE)}), e.g. `--stages 3 --init w`",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    stages = RECIPE
    if args.stages:
        if not all(1 <= i <= len(RECIPE) for i in args.stages):
            parser.error(f"--stages takes numbers from 1 to {len(RECIPE)}")
        stages = tuple(RECIPE[i - 1] for i in args.stages)
    try:
        step_caps(stages, args.max_steps)
    except ValueError as error:
        parser.error(str(error).replace("max_steps", "--max-steps"))
    info = pretrain(
        args.out,
        minutes=args.minutes,
        seed=args.seed,
        scenes=args.scenes,
        backgrounds=find_images(*args.backgrounds),
        stages=stages,
        max_steps=args.max_steps,
        init=args.init,
        background_sources=[str(b) for b in args.backgrounds],
        device=args.device or ("cuda" if torch.cuda.is_available() else "cpu"),
    )
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
