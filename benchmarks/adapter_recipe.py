"""The ``fast`` recipe against variants of it: the plate (or banner) demo's adapter figures, one run each.

    python benchmarks/adapter_recipe.py --data ../shared/data/car_license_plate_andrewmvd \\
        --variant steps=1500 --variant iou_weight=10 --variant center_power=4

Each variant is ``samplm demo`` (``--task plates`` with ``--data``, else banners) with the named
:class:`~samplm.train.settings.TrainConfig` settings changed over the ``fast`` recipe (comma-separated
``KEY=VALUE``, values read as YAML: ``lr=3e-3,multimask=min``); ``--no-default`` skips the recipe as it
is. All runs share one embedding cache, split and seed. Prints, per run, the held-out mIoU of the base's
top and oracle masks, SAM-F, the adapter and the adapter with PMM refinement, and each adapter's change
against the default run's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from samplm.demo import DemoResult, run_demo

COLUMNS = ("base_top", "base_oracle", "samf", "adapter", "refined")


def parse_variant(text: str) -> dict[str, Any]:
    """``"KEY=VALUE,KEY=VALUE"`` as settings (values read as YAML scalars).

    Raises:
        argparse.ArgumentTypeError: an item without ``=``.
    """
    settings = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise argparse.ArgumentTypeError(f"--variant {text!r}: expected KEY=VALUE[,KEY=VALUE...]")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


def row(name: str, result: DemoResult, default: DemoResult | None) -> str:
    """One table row: the figures (%) and the adapter's change against the default run."""
    cells = [f"{100 * (getattr(result, c) or 0):.2f}" for c in COLUMNS]
    if default is not None:
        cells.append(f"{100 * (result.adapter - default.adapter):+.2f}")
        cells.append(f"{100 * ((result.refined or 0) - (default.refined or 0)):+.2f}")
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, help="VOC plate folder: the plate demo (else banners)")
    parser.add_argument("--variant", type=parse_variant, action="append", default=[], help="KEY=VALUE,...")
    parser.add_argument("--no-default", action="store_true", help="skip the fast recipe as it is")
    parser.add_argument("--model-type", default="samplm_lite")
    parser.add_argument("--out", type=Path, default=Path("runs/adapter-recipe"))
    args = parser.parse_args()
    task = "plates" if args.data else "banners"
    runs = ([] if args.no_default else [{}]) + args.variant
    results: dict[str, DemoResult] = {}
    for settings in runs:
        name = ",".join(f"{k}={v}" for k, v in settings.items()) or "fast (default)"
        results[name] = run_demo(
            args.out / f"run{len(results)}",
            task=task,
            data=args.data,
            model_type=args.model_type,
            train_settings=settings,
            cache=args.out / "cache",
            visuals=0,
            progress=False,
        )
        print(f"done: {name}: adapter {100 * results[name].adapter:.2f}", flush=True)
    default = None if args.no_default else results["fast (default)"]
    head = "| run | base top | base oracle | SAM-F | adapter | adapter + PMM |"
    head += " adapter change | + PMM change |" if default else ""
    print(f"{task}, base {args.model_type}\n{head}")
    print("\n".join(row(name, result, default) for name, result in results.items()))
    record = {n: {c: getattr(r, c) for c in COLUMNS} for n, r in results.items()}
    (args.out / "results.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
