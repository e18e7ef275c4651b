"""Copy the car photos a run trains on into one folder, for a machine without ``../shared/data``.

    python -m pretraining.lite.export_photos --data ../shared/data --to photos/
    python -m pretraining.lite.train --photos photos/ --evals 0 ...   # on the other machine

The training half of the plate set (the split by file content that the benchmarks hold out the other
half of) is written as lossless WebP (pixel-identical, checked on every file; about 40 % smaller than
the PNGs), named ``NNNN_<stem>.webp`` so that the folder's sorted order is the split's order and the
run draws the same crops. No annotation is copied.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from samplm.data.images import load_image
from samplm.utils.progress import progress_bar

from .evaluate import plate_split
from .train import DATA


def export_photos(paths: list[Path], folder: Path, progress: bool = True) -> list[Path]:
    """Write ``paths`` (in this order) into ``folder`` as lossless WebP; returns the written files.

    Raises:
        ValueError: ``folder`` already holds files (a run would train on them too), or a written file
            does not read back to the same pixels.
    """
    if folder.is_dir() and any(folder.iterdir()):
        raise ValueError(f"{folder} is not empty: export into a new or empty folder")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for i, path in enumerate(progress_bar(paths, desc="photos", disable=not progress)):
        image = load_image(path)
        out = folder / f"{i:04d}_{path.stem}.webp"
        Image.fromarray(image).save(out, "WEBP", lossless=True, quality=100, method=6)
        if not np.array_equal(load_image(out), image):
            raise ValueError(f"{out}: lossless WebP did not keep the pixels of {path}")
        written.append(out)
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DATA, help="folder holding car_license_plate_andrewmvd")
    p.add_argument("--to", type=Path, required=True, help="folder to write the photos into")
    args = p.parse_args(argv)
    photos = plate_split(args.data / "car_license_plate_andrewmvd")[0].image_paths()
    try:
        written = export_photos(photos, args.to)
    except ValueError as error:
        raise SystemExit(f"--to: {error}") from None
    size = sum(f.stat().st_size for f in written) / 1e6
    print(f"{len(written)} photos, {size:.1f} MB in {args.to}")


if __name__ == "__main__":
    main()
