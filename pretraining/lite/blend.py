"""Weights between two runs of one base: ``(1 - t) * A + t * B``, tensor by tensor.

Two runs continued from the same weights sit in one basin of the loss, and the weights on the line
between them often keep what each run gained (a weight-space ensemble, as in WiSE-FT: Wortsman et
al., "Robust fine-tuning of zero-shot models", 2022). ``t = 0`` gives ``A``, ``t = 1`` gives ``B``.

    python -m pretraining.lite.blend samplm/base/weights/samplm_lite.safetensors \
        runs/r6/samplm_lite.safetensors --t 0.5 --out runs/blend/samplm_lite.safetensors

The blend is written as the runs write their weights (float16 safetensors, atomically) with a
``.log.json`` that holds ``t``, both runs' logs and, with ``--data``, the runs' held-out checks made on
the blend (``final``: 40 held-out plates and PerSeg, centre click).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from samplm.base.lite import build_sam_lite_architecture
from samplm.base.loading import load_state_dict

from .evaluate import checks_miou, held_out_checks
from .train import save_state


def blend_states(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], t: float) -> dict[str, torch.Tensor]:
    """``(1 - t) * a + t * b`` for every floating-point tensor (computed in float32); integer tensors, where
    a file holds any (the runs save every tensor as float16), must be equal and are kept.

    Raises:
        ValueError: the two hold different tensor names or shapes, or different integer tensors.
    """
    if a.keys() != b.keys():
        raise ValueError(f"the two weight files hold different tensors: {sorted(a.keys() ^ b.keys())[:5]}")
    out = {}
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape:
            raise ValueError(f"{name}: shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
        if x.is_floating_point():
            out[name] = torch.lerp(x.float(), y.float(), t)
        elif torch.equal(x, y):
            out[name] = x
        else:
            raise ValueError(f"{name}: integer tensors differ; blend only runs of one architecture and trunk")
    return out


def checks_of(state: dict[str, torch.Tensor], data: Path, plates: int = 40) -> dict[str, dict[str, float]]:
    """The checks a training run logs (:func:`.evaluate.held_out_checks`: centre-click mIoU on ``plates``
    held-out plate photos and on PerSeg), made on the weights ``state``."""
    sam = build_sam_lite_architecture()
    sam.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return checks_miou(sam.eval(), held_out_checks(data, plates))


def _log_of(path: Path) -> dict | None:
    log = path.with_suffix(".log.json")
    return json.loads(log.read_text()) if log.is_file() else None


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("a", type=Path, help="weights at t = 0 (safetensors)")
    p.add_argument("b", type=Path, help="weights at t = 1 (safetensors)")
    p.add_argument("--t", type=float, required=True, help="where on the line from A to B (0-1)")
    p.add_argument("--out", type=Path, required=True, help="the blend's safetensors file")
    p.add_argument(
        "--data",
        type=Path,
        help="folder holding car_license_plate_andrewmvd and perseg_persam_examples: log the held-out checks",
    )
    args = p.parse_args(argv)
    if not 0.0 <= args.t <= 1.0:
        p.error(f"--t {args.t}: give a value from 0 (A) to 1 (B)")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    state = blend_states(load_state_dict(args.a), load_state_dict(args.b), args.t)
    state = {k: v.half() for k, v in state.items()}  # checked as it is saved
    log = {
        "blend": {"a": str(args.a), "b": str(args.b), "t": args.t},
        "a_log": _log_of(args.a),
        "b_log": _log_of(args.b),
    }
    if args.data:
        log["final"] = checks_of(state, args.data)
        print(log["final"], flush=True)
    save_state(state, args.out, log)
    print(f"wrote {args.out} ({len(state)} tensors, t = {args.t})")


if __name__ == "__main__":
    main()
