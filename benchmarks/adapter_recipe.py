"""The ``fast`` recipe against variants of it: the plate (or banner) demo's adapter figures, one run each.

    python benchmarks/adapter_recipe.py --data ../shared/data/car_license_plate_andrewmvd \\
        --variant steps=1500 --variant iou_weight=10 --variant center_power=4

Each variant is ``samplm demo`` (``--task plates`` with ``--data``, else banners) with the named
:class:`~samplm.train.settings.TrainConfig` settings changed over the ``fast`` recipe (comma-separated
``KEY=VALUE``: ``lr=3e-3,multimask=min``; numbers typed as the CLI types them, other values read as
YAML); ``--no-default`` skips the recipe as it is. All runs share one embedding cache, split and seed.
Prints, per run, the held-out mIoU of the base's top and oracle masks, SAM-F, the adapter and the adapter
with PMM refinement (``-`` where a run has none), and each adapter's change against the default run's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from samplm.cli.options import convert
from samplm.demo import DemoResult, run_demo
from samplm.train.settings import SETTING_LIMITS

COLUMNS = ("base_top", "base_oracle", "samf", "adapter", "refined")


def parse_variant(text: str) -> dict[str, Any]:
    """``"KEY=VALUE,KEY=VALUE"`` as settings: numeric settings typed as the CLI types them (``3e-3``,
    ``2e3``), the others read as YAML scalars (``true``, ``min``); ``TrainConfig`` checks them.

    Raises:
        argparse.ArgumentTypeError: an item without ``=``.
    """
    settings = {}
    for item in filter(None, text.split(",")):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"--variant {text!r}: expected KEY=VALUE[,KEY=VALUE...]")
        limit = SETTING_LIMITS.get(key)
        number = convert(limit.kind, value) if limit is not None else None
        settings[key] = yaml.safe_load(value) if number is None else number
    return settings


def _percent(value: float | None, signed: bool = False) -> str:
    """``value`` (0-1) in percent, ``-`` where the run has no such figure (no SAM-F, no PMM exported)."""
    return "-" if value is None else f"{100 * value:{'+' if signed else ''}.2f}"


def row(name: str, result: DemoResult, default: DemoResult | None) -> str:
    """One table row: the figures (%) and the adapter's change against the default run."""
    cells = [_percent(getattr(result, c)) for c in COLUMNS]
    if default is not None:
        cells.append(_percent(result.adapter - default.adapter, signed=True))
        both = None not in (result.refined, default.refined)
        cells.append(_percent(result.refined - default.refined if both else None, signed=True))
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
    if not runs:
        parser.error("--no-default needs at least one --variant")
    results: list[tuple[str, DemoResult]] = []  # a list: two variants may share a name
    for index, settings in enumerate(runs):
        name = ",".join(f"{k}={v}" for k, v in settings.items()) or "fast (default)"
        result = run_demo(
            args.out / f"run{index}",
            task=task,
            data=args.data,
            model_type=args.model_type,
            train_settings=settings,
            cache=args.out / "cache",
            visuals=0,
            progress=False,
        )
        results.append((name, result))
        print(f"done: {name}: adapter {100 * result.adapter:.2f}", flush=True)
    default = None if args.no_default else results[0][1]
    head = "| run | base top | base oracle | SAM-F | adapter | adapter + PMM |"
    head += " adapter change | + PMM change |" if default else ""
    print(f"{task}, base {args.model_type}\n{head}")
    print("\n".join(row(name, result, default) for name, result in results))
    record = [{"run": n, **{c: getattr(r, c) for c in COLUMNS}} for n, r in results]
    (args.out / "results.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
