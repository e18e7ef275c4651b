"""How ambiguous the frozen base is on banners: top-confidence vs oracle mIoU for a centre click.

    python benchmarks/tiny_banners.py --backgrounds ../shared/data/car_license_plate_andrewmvd/images \
        ../shared/data/perseg_persam_examples/Images

Generates ``--images`` banner images (``make_banner_image``, seeded), clicks each banner's centre and
prints the mIoU of SAM's most confident mask, of the best of its three masks (oracle), and of the
single mask for the banner's box. Defaults: ``samplm_tiny``, 60 images, seed 123, one banner per image.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from segment_anything import SamPredictor

from samplm.base import build_sam
from samplm.data.images import find_images
from samplm.data.synthetic import PhotoBackgrounds, make_banner_image
from samplm.eval.metrics import iou
from samplm.utils.geometry import center_point, mask_to_box


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-type", default="samplm_tiny")
    parser.add_argument("--checkpoint")
    parser.add_argument("--images", type=int, default=60)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--max-banners", type=int, default=1)
    parser.add_argument("--plates", type=float, default=0.5)
    parser.add_argument("--backgrounds", nargs="*", default=[], help="folders of real photos")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = SamPredictor(build_sam(args.model_type, args.checkpoint).eval())
    size = predictor.model.image_encoder.img_size
    photos = PhotoBackgrounds(find_images(*args.backgrounds), size) if args.backgrounds else None
    rng = np.random.default_rng(args.seed)
    top, oracle, box = [], [], []
    for _ in range(args.images):
        image, masks = make_banner_image(rng, size, photos, max_banners=args.max_banners, plates=args.plates)
        predictor.set_image(image)
        for mask in masks:
            outputs, scores, _ = predictor.predict(np.array([center_point(mask)]), np.array([1]))
            ious = [iou(m, mask) for m in outputs]
            top.append(ious[int(np.argmax(scores))])
            oracle.append(max(ious))
            (single,), _, _ = predictor.predict(box=np.array(mask_to_box(mask)), multimask_output=False)
            box.append(iou(single, mask))
    print(
        f"{args.model_type}: {len(top)} banners in {args.images} images; mIoU top {np.mean(top):.3f}, "
        f"oracle {np.mean(oracle):.3f}, box {np.mean(box):.3f}"
    )


if __name__ == "__main__":
    main()
