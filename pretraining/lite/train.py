"""Pretrain ``samplm_lite`` on real photos (reproducible, seeded; see ``pretraining/README.md``).

    python -m pretraining.lite.train --minutes 90 --out samplm/base/weights/samplm_lite.safetensors

The ImageNet EfficientNet-Lite0 trunk stays frozen, so its features are computed once per corpus view
(``--train-last-stages``: its stride-32 stages train too, from the cached stride-16 maps).
SAM's prompt encoder and mask decoder start from ``samplm_tiny``'s (same shapes: a decoder that already
answers clicks with masks skips the empty-mask plateau of a decoder learned from scratch); the neck
starts at random. Neck, prompt encoder and decoder then learn SAM's recipe: a click is answered by three
nested targets (small / middle / large region of its chain, one per multimask output), a box by one
target on the single-mask output; 20 x focal + dice at 128 x 128 and MSE of the IoU head, whose
target for each output is its mean IoU with the three answers (the click does not say which is meant).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from segment_anything.modeling import Sam

from samplm.base.lite import build_sam_lite_architecture
from samplm.base.loading import load_state_dict
from samplm.base.tiny import WEIGHTS_PATH as TINY_WEIGHTS
from samplm.data.images import find_images
from samplm.decoder.decode import decode_prompts
from samplm.train.losses import dice_loss, mask_iou, sigmoid_focal_loss
from samplm.utils.files import atomic_write, atomic_write_text

from .backbone import last_stages, load_imagenet_trunk
from .corpus import View, build_corpus
from .evaluate import checks_miou, held_out_checks, plate_split
from .package_photos import package_photos
from .prompts import ANSWER_RULES, ViewPrompts, sample_view_prompts

DECODER_PREFIXES = ("prompt_encoder.", "mask_decoder.")
DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def mask_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """SAM's 20 x focal + dice per mask. ``B x C x H x W`` -> ``B x C``."""
    return 20 * sigmoid_focal_loss(logits, targets) + dice_loss(logits, targets)


def view_loss(sam: Sam, embedding: torch.Tensor, prompts: ViewPrompts) -> torch.Tensor:
    """Loss of one view's prompts (``embedding``: ``1 x 256 x 32 x 32``, on the model's device)."""
    prompts = prompts.to(embedding.device)
    total = embedding.new_zeros(())
    if len(prompts.clicks):
        out = decode_prompts(
            sam,
            embedding,
            point_coords=prompts.clicks,
            point_labels=torch.ones(len(prompts.clicks), 1, device=embedding.device),
            multimask_output=True,
        )
        logits, targets = out.low_res_logits, prompts.click_targets
        with torch.no_grad():
            cross = mask_iou(logits[:, :, None], targets[:, None])  # B x output x answer
        total = (
            total + mask_loss(logits, targets).mean() + ((out.iou_predictions - cross.mean(2)) ** 2).mean()
        )
    if len(prompts.boxes):
        out = decode_prompts(sam, embedding, boxes=prompts.boxes, multimask_output=False)
        logits, targets = out.low_res_logits, prompts.box_targets
        with torch.no_grad():
            quality = mask_iou(logits, targets)
        total = total + mask_loss(logits, targets).mean() + ((out.iou_predictions - quality) ** 2).mean()
    return total


def embed(sam: Sam, views: list[View], train_last_stages: bool = False) -> torch.Tensor:
    """The neck on the views' cached trunk features -> ``V x 256 x 32 x 32`` (on the neck's device).

    With ``train_last_stages`` the stride-32 map is recomputed from the cached stride-16 map by the
    trunk's last stages (:func:`.backbone.last_stages`), so gradients reach them.
    """
    device = next(sam.image_encoder.neck.parameters()).device
    cached = 2 if train_last_stages else 3
    levels = [torch.stack([v.features[i] for v in views]).to(device).float() for i in range(cached)]
    if train_last_stages:
        levels.append(last_stages(sam.image_encoder.trunk)(levels[1]))
    return sam.image_encoder.neck(levels)


def lr_factor(step: int, total: int, warmup: int = 100) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


def init_decoder(sam: Sam, path: Path) -> int:
    """Copy the prompt encoder and mask decoder of the SAM weights at ``path``; returns the tensor count."""
    state = {k: v.float() for k, v in load_state_dict(path).items() if k.startswith(DECODER_PREFIXES)}
    own = [k for k in sam.state_dict() if k.startswith(DECODER_PREFIXES)]
    if sorted(state) != sorted(own):
        raise ValueError(f"{path} does not hold a prompt encoder and mask decoder of SAM's width")
    sam.load_state_dict(state, strict=False)
    return len(state)


def trainable(sam: Sam) -> list[torch.nn.Parameter]:
    """Every weight but the trunk's (the trunk is frozen here)."""
    for p in sam.image_encoder.trunk.parameters():
        p.requires_grad_(False)
    return [p for n, p in sam.named_parameters() if not n.startswith("image_encoder.trunk.")]


def param_groups(sam: Sam, train_last_stages: bool, trunk_lr_scale: float) -> list[dict]:
    """AdamW groups: neck, prompt encoder and decoder at the full learning rate (``lr_scale`` 1); with
    ``train_last_stages`` also the trunk's stride-32 stages at ``trunk_lr_scale`` (their batch-norm
    statistics stay as they are: :func:`train_loop` runs the trunk in eval mode)."""
    groups = [{"params": trainable(sam), "lr_scale": 1.0}]
    if train_last_stages:
        stages = list(last_stages(sam.image_encoder.trunk).parameters())
        for p in stages:
            p.requires_grad_(True)
        groups.append({"params": stages, "lr_scale": trunk_lr_scale})
    return groups


def train_loop(sam: Sam, views: list[View], args, log: dict, evaluate, save=None) -> None:
    """Steps until ``args.minutes`` (or ``args.max_steps``) are spent, the trunk in eval mode (its
    batch-norm statistics never move); evaluates ``args.evals - 1`` times on the way, each check logged
    and then followed by ``save()`` (the weights so far, with the log that holds this check); the caller
    makes the last check."""
    sam.train()
    sam.image_encoder.trunk.eval()
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    opt = torch.optim.AdamW(
        param_groups(sam, args.train_last_stages, args.trunk_lr_scale), lr=args.lr, weight_decay=0.01
    )
    weights = [p for group in opt.param_groups for p in group["params"]]
    budget, start, step, total = args.minutes * 60, time.time(), 0, args.max_steps or 10**9
    next_eval, losses = 1, []
    while step < total and (args.max_steps or time.time() - start < budget):
        if step == 30 and not args.max_steps:  # fix the schedule's length from the measured speed
            total = int(30 * budget / (time.time() - start))
            log["planned_steps"] = total
        for group in opt.param_groups:
            group["lr"] = args.lr * group["lr_scale"] * lr_factor(step, total)
        batch = [views[int(i)] for i in rng.choice(len(views), args.views, replace=False)]
        embeddings = embed(sam, batch, args.train_last_stages)
        loss = sum(
            view_loss(sam, embeddings[i : i + 1], sample_view_prompts(v, rng, args.clicks, args.boxes))
            for i, v in enumerate(batch)
        ) / len(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(weights, 1.0)
        opt.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 50 == 0:
            log["loss"].append([step, round(time.time() - start, 1), float(np.mean(losses[-50:]))])
            print(f"step {step} {time.time() - start:.0f}s loss {np.mean(losses[-50:]):.4f}", flush=True)
        done = step / total if args.max_steps else (time.time() - start) / budget
        if next_eval < args.evals and done >= next_eval / args.evals:
            log["evals"].append({"step": step, "seconds": round(time.time() - start), **evaluate()})
            print(log["evals"][-1], flush=True)
            if save is not None:
                save()
            next_eval += 1
    log["steps"], log["train_seconds"] = step, round(time.time() - start, 1)


def previous_log(init: Path | None) -> dict | None:
    """The log of the run that made the ``--init`` weights, so a continued run keeps its whole history."""
    path = init.with_suffix(".log.json") if init else None
    return json.loads(path.read_text()) if path and path.is_file() else None


def save_state(state: dict[str, torch.Tensor], out: Path, log: dict) -> None:
    """``state`` as float16 safetensors at ``out`` (every tensor, as the shipped weights) and ``log``
    beside it (``.log.json``), each written atomically."""
    state = {k: v.detach().half().cpu().contiguous() for k, v in state.items()}
    atomic_write(out, lambda tmp: save_file(state, str(tmp), metadata={"model_type": "samplm_lite"}))
    atomic_write_text(out.with_suffix(".log.json"), json.dumps(log, indent=1))


def save_weights(sam: Sam, out: Path, log: dict) -> None:
    save_state(sam.state_dict(), out, log)


def check_path(out: Path, step: int) -> Path:
    """Where ``--keep-checks`` keeps the weights of the check made after ``step`` steps:
    ``runs/x/samplm_lite.safetensors`` -> ``runs/x/samplm_lite.step587.safetensors``."""
    return out.with_name(f"{out.stem}.step{step}{out.suffix}")


def save_check(sam: Sam, args: argparse.Namespace, log: dict) -> None:
    """The weights so far at ``args.out`` (and, with ``--keep-checks``, at :func:`check_path`), with the
    log up to the last check, marked ``partial`` and with the steps taken."""
    step = log["evals"][-1]["step"]
    partial = {**log, "partial": True, "steps": step}
    save_weights(sam, args.out, partial)
    if args.keep_checks:
        save_weights(sam, check_path(args.out, step), partial)


def _run_args(p: argparse.ArgumentParser) -> None:
    """Where the run reads and writes, how long it runs, what it starts from and what it trains."""
    p.add_argument(
        "--out", type=Path, required=True, help="weights file (.safetensors); a .log.json lands beside it"
    )
    p.add_argument(
        "--data",
        type=Path,
        default=DATA,
        help="folder holding car_license_plate_andrewmvd and perseg_persam_examples",
    )
    p.add_argument("--minutes", type=float, default=90.0, help="optimisation time budget")
    p.add_argument(
        "--max-steps", type=int, default=0, help="replay an exact number of steps instead of a time budget"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", type=Path, help="continue from these samplm_lite weights (neck and decoder too)")
    p.add_argument(
        "--init-decoder",
        type=Path,
        default=TINY_WEIGHTS,
        help="SAM weights whose prompt encoder and mask decoder start the training (default: samplm_tiny's)",
    )
    p.add_argument("--lr", type=float, default=4e-4)
    p.add_argument(
        "--train-last-stages",
        action="store_true",
        help="also train the trunk's stride-32 stages (2.26M weights) on the cached stride-16 maps",
    )
    p.add_argument(
        "--trunk-lr-scale", type=float, default=0.1, help="learning rate of --train-last-stages, times --lr"
    )
    p.add_argument(
        "--evals",
        type=int,
        default=4,
        help="held-out checks, the last at the end; each also saves the weights so far (0: no checks and "
        "no saves before the end; with --photos, --data is then not read)",
    )
    p.add_argument("--eval-plates", type=int, default=40, help="held-out plate photos in each check")
    p.add_argument(
        "--keep-checks",
        action="store_true",
        help="also keep each check's weights (and log) beside --out as NAME.stepN.safetensors",
    )
    p.add_argument("--device", help="torch device for the trunk and training (default: cuda if available)")


def _corpus_args(p: argparse.ArgumentParser) -> None:
    """The photos, views, labels and prompts of a run."""
    p.add_argument("--views", type=int, default=4, help="views per step")
    p.add_argument("--clicks", type=int, default=8, help="click prompts per view")
    p.add_argument("--boxes", type=int, default=3, help="box prompts per view")
    p.add_argument("--crops", type=int, default=2, help="zoomed crops per plate photo")
    p.add_argument("--scenes", type=int, default=150, help="synthetic composites")
    p.add_argument(
        "--answers",
        choices=sorted(ANSWER_RULES),
        default="area",
        help="how a click's three hierarchy answers are chosen: by area (smallest, middle, largest), by "
        "persistence (the most persistent region of each half of the click's chain, and the largest), or "
        "anchored (area's smallest and largest, the most persistent region between them), persistent-ends "
        "(the persistence rule's two regions and the one between them, no largest region) or "
        "persistent-part (the lower half's most persistent region, the largest, the one between them)",
    )
    p.add_argument(
        "--answers-on",
        choices=["all", "general"],
        default="all",
        help="which photos' clicks --answers applies to: all, or only the general photos (the car photos "
        "then keep the area rule)",
    )
    p.add_argument(
        "--object-k",
        type=int,
        default=0,
        help="feature-cut clusters per photo view; its objects become the large click targets (0: off)",
    )
    p.add_argument(
        "--object-on",
        choices=["all", "general"],
        default="all",
        help="with --object-k: which photos get the feature cut, all or only the general photos (not the "
        "car photos)",
    )
    p.add_argument(
        "--package-photos",
        choices=["python", "all"],
        default="python",
        help="general photos: those of scikit-image and matplotlib, or also the installed Debian wallpaper "
        "photos (pretraining/lite/package_photos.py)",
    )
    p.add_argument(
        "--photos",
        type=Path,
        help="train on the car photos in this folder instead of the training half of --data's plates "
        "(that half written by python -m pretraining.lite.export_photos, e.g. for a GPU machine)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        help="processes that build the pseudo-labels (0 or 1: this one; the labels are the same)",
    )
    p.add_argument("--limit-photos", type=int, default=0, help="use only this many plate photos (smoke runs)")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    _run_args(p)
    _corpus_args(p)
    return p.parse_args(argv)


def training_views(trunk: torch.nn.Module, photos: list[Path], args) -> tuple[list[View], dict]:
    """The corpus of a run: ``photos`` (the car photos) with composites, then the general photos of
    ``--package-photos``; and its log entry (view count, seconds, every general photo with its licence)."""
    start = time.time()
    general = package_photos(debian=args.package_photos == "all")
    car_object_k = args.object_k if args.object_on == "all" else 0
    car_answers = args.answers if args.answers_on == "all" else "area"
    views = build_corpus(
        trunk,
        photos,
        args.seed,
        crops=args.crops,
        scenes=args.scenes,
        object_k=car_object_k,
        workers=args.workers,
        answers=car_answers,
    )
    views += build_corpus(
        trunk,
        [p.path for p in general],
        args.seed + 1,
        crops=8,
        scenes=0,
        object_k=args.object_k,
        workers=args.workers,
        answers=args.answers,
    )
    entry = {
        "views": len(views),
        "seconds": round(time.time() - start, 1),
        "general_photos": [p.as_log() for p in general],
    }
    return views, entry


def build_model(args) -> Sam:
    """``samplm_lite`` with ``--init``'s weights, or with the ImageNet trunk and ``--init-decoder``'s
    prompt encoder and mask decoder (the neck at random)."""
    sam = build_sam_lite_architecture()
    if args.init:
        sam.load_state_dict({k: v.float() for k, v in load_state_dict(args.init).items()}, strict=True)
    else:
        load_imagenet_trunk(sam.image_encoder.trunk)
        init_decoder(sam, args.init_decoder)
    return sam


def car_photos(args) -> tuple[list[Path], dict[str, list]]:
    """The car photos to train on (``--photos``, else the training half of ``--data``'s plates) and the
    held-out checks (none with ``--evals 0``)."""
    held_out = None
    if args.photos:
        photos = find_images(args.photos)
        if not photos:
            raise SystemExit(f"--photos {args.photos}: no image files there; give a folder of photos")
    else:
        train_set, held_out = plate_split(args.data / "car_license_plate_andrewmvd")
        photos = train_set.image_paths()
    checks = held_out_checks(args.data, args.eval_plates, held_out) if args.evals else {}
    return photos[: args.limit_photos or None], checks


def main(argv=None) -> None:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    photos, checks = car_photos(args)
    sam = build_model(args)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sam.to(device)
    log = {
        "args": {k: str(v) for k, v in vars(args).items()},
        "init_log": previous_log(args.init),
        "loss": [],
        "evals": [],
        "photos": len(photos),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else str(device),
    }
    views, log["corpus"] = training_views(sam.image_encoder.trunk, photos, args)
    print(log["corpus"], flush=True)

    def evaluate() -> dict:
        sam.eval()
        result = checks_miou(sam, checks)
        sam.train()
        sam.image_encoder.trunk.eval()
        return result

    sam.train()
    sam.image_encoder.trunk.eval()
    train_loop(sam, views, args, log, evaluate, save=lambda: save_check(sam, args, log))
    log["final"] = evaluate() if checks else {}
    print(log["final"], flush=True)
    save_weights(sam.eval(), args.out, log)


if __name__ == "__main__":
    main()
