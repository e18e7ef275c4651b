"""Writing evaluation results: ``results.json``, ``results.md`` and PNG overlays / heatmaps (OpenCV)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..utils.files import atomic_write_text
from .methods import Method
from .protocol import EvalResult
from .sensitivity import SensitivityMap

PANEL_HEIGHT = 256
TITLE_HEIGHT = 22
COLORS = {"gt": (40, 200, 40), "pred": (230, 60, 40)}  # RGB
#: What the colour of a prompt sensitivity map means (the title of its colour bar).
SENSITIVITY_LEGEND = "IoU for a click here"
#: The first column of the mIoU table, by prompt.
PROMPT_COLUMN = {"point": "method (single centre click)", "box": "method (ground-truth box)"}


def label(name: str, base: str) -> str:
    """What people read for a method: plain SAM's rows named after the base (:meth:`Method.label`)."""
    return name.label(base) if isinstance(name, Method) else str(name)


def _fmt(value: float) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def _table(
    rows: dict[str, dict[str, float]], columns: list[str], base: str, first: str = "method"
) -> list[str]:
    lines = [f"| {first} | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, values in rows.items():
        lines.append(f"| {label(name, base)} | " + " | ".join(_fmt(values.get(c)) for c in columns) + " |")
    return lines


def miou_table(rows: list[tuple[str, float]], prompt: str = "point") -> str:
    """The mIoU table ``samplm eval`` and ``samplm demo`` print: Markdown, one row per ``(name, mIoU)``
    (mIoU 0-1, shown in percent)."""
    lines = [f"| {PROMPT_COLUMN[prompt]} | mIoU (%) |", "|---|---|"]
    return "\n".join(lines + [f"| {name} | {_fmt(value)} |" for name, value in rows])


def miou_rows(result: EvalResult, base: str) -> list[tuple[str, float]]:
    """``(label, mIoU over all instances)`` of every method of ``result``, in table order."""
    return [(label(m, base), result.miou[m]["all"]) for m in result.methods]


def _with_class_average(
    table: dict[str, dict[str, float]], categories: list[str]
) -> dict[str, dict[str, float]]:
    if len(categories) < 2:
        return table
    return {m: {**v, "class average": float(np.mean([v[c] for c in categories]))} for m, v in table.items()}


def results_markdown(
    result: EvalResult, config: dict[str, Any], files: dict[str, list[str]], base: str = "SAM"
) -> str:
    """The report as Markdown (numbers in percent, like the paper's tables); plain SAM's rows are named
    after ``base``, the loaded base (e.g. ``samplm_lite top``)."""
    cats = result.categories
    columns = [*cats, "all"] + (["class average"] if len(cats) > 1 else [])
    lines = [
        "# samplm evaluation",
        "",
        f"- data: `{config.get('data')}` ({config.get('format')})",
        f"- evaluated instances: {len(result.instances)}",
        f"- prompt: {config.get('prompt')} (one per instance: the mask centre / the GT box)",
        f"- model: {config.get('model_type')}; adapters: {', '.join(config.get('adapters') or []) or 'none'}",
        "",
        "## mIoU (%)",
        "",
        *_table(_with_class_average(result.miou, cats), columns, base),
        "",
        "## Boundary IoU (%, band = 2% of the image diagonal)",
        "",
        *_table(_with_class_average(result.biou, cats), columns, base),
    ]
    if result.ap:
        lines += ["", "## COCO mask AP (%)", "", *_table(result.ap, ["AP", "AP50", "AP75"], base)]
    if result.samf is not None:
        lines += ["", "SAM-F weights (w1, w2, w3): " + ", ".join(f"{w:.3f}" for w in result.samf.weights)]
    effect = result.refinement_effect()
    if effect:
        lines += ["", "## PMM refinement: mIoU change vs PLM alone (points)", ""]
        for name, values in effect.items():
            verdicts = ", ".join(
                f"{c}: {100 * v:+.2f} ({'helps' if v > 0 else 'hurts' if v < 0 else 'no change'})"
                for c, v in values.items()
            )
            lines.append(f"- {name}: {verdicts}")
    if len(cats) > 1 or len(config.get("adapters") or []) > 1:
        lines += ["", "## Cross-task mIoU (%): rows = model, columns = task data", ""]
        lines += _table(result.cross_task(), cats, base, first="model")
    sens = config.get("sensitivity") or {}
    if sens:
        lines += ["", "## Prompt sensitivity (IoU over clicks inside the object, %)", ""]
        lines += ["| instance | method | mean | std |", "|---|---|---|---|"]
        for inst, methods in sens.items():
            lines += [
                f"| {inst} | {label(m, base)} | {_fmt(v['mean'])} | {_fmt(v['std'])} |"
                for m, v in methods.items()
            ]
    for title, names in files.items():
        if names:
            lines += ["", f"## {title}", ""] + [f"- [{n}]({n})" for n in names]
    return "\n".join(lines) + "\n"


def write_results(
    out: Path, result: EvalResult, config: dict[str, Any], files: dict[str, list[str]], base: str = "SAM"
) -> None:
    """``results.json`` (every number and the config, keyed by method name) and ``results.md`` (plain
    SAM's rows named after ``base``)."""
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": config,
        "methods": result.methods,
        "miou": result.miou,
        "biou": result.biou,
        "ap": result.ap,
        "refinement_effect": result.refinement_effect(),
        "cross_task": result.cross_task(),
        "samf_weights": list(result.samf.weights) if result.samf else None,
        "skipped": result.skipped,
        "files": files,
        "instances": [vars(r) for r in result.instances],
    }
    atomic_write_text(out / "results.json", json.dumps(payload, indent=2, default=float) + "\n")
    atomic_write_text(out / "results.md", results_markdown(result, config, files, base))


def _fit(image: np.ndarray) -> np.ndarray:
    scale = PANEL_HEIGHT / image.shape[0]
    return cv2.resize(
        image, (max(1, round(image.shape[1] * scale)), PANEL_HEIGHT), interpolation=cv2.INTER_AREA
    )


def _overlay(image: np.ndarray, mask: np.ndarray, color: tuple[int, int, int]) -> np.ndarray:
    out = image.astype(np.float32).copy()
    out[mask] = 0.45 * out[mask] + 0.55 * np.array(color, np.float32)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    out = out.astype(np.uint8)
    cv2.drawContours(out, contours, -1, color, max(1, round(image.shape[0] / 200)))
    return out


def _title_scale(text: str, width: int) -> float:
    """The largest font scale (0.45 down to 0.3) at which ``text`` fits ``width`` pixels."""
    scale = 0.45
    while scale > 0.3 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
        scale -= 0.05
    return scale


def panel_title(name: str, value: str, width: int = 10_000) -> str:
    """``"<name>: <value>"`` within ``width`` pixels: the name is shortened (``..``), never the value."""
    title = f"{name}: {value}"
    while len(name) > 1 and cv2.getTextSize(title, cv2.FONT_HERSHEY_SIMPLEX, 0.3, 1)[0][0] > width - 8:
        name = name[:-1]
        title = f"{name.rstrip()}..: {value}"
    return title


def _titled(panel: np.ndarray, title: str) -> np.ndarray:
    bar = np.full((TITLE_HEIGHT, panel.shape[1], 3), 255, np.uint8)
    scale = _title_scale(title, panel.shape[1] - 8)
    cv2.putText(bar, title, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([bar, panel])


def _row(path: Path, panels: list[np.ndarray]) -> None:
    """``panels`` side by side (6 px white gaps), written as a PNG."""
    gap = np.full((PANEL_HEIGHT + TITLE_HEIGHT, 6, 3), 255, np.uint8)
    row = np.hstack([p for panel in panels for p in (panel, gap)][:-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(row, cv2.COLOR_RGB2BGR))


def _draw_prompt(image: np.ndarray, prompt: dict[str, list[float]]) -> np.ndarray:
    out = image.copy()
    radius = max(3, round(image.shape[0] / 60))
    if "point" in prompt:
        x, y = (round(v) for v in prompt["point"])
        cv2.circle(out, (x, y), radius, (255, 255, 0), -1)
        cv2.circle(out, (x, y), radius, (0, 0, 0), 1)
    else:
        x1, y1, x2, y2 = (round(v) for v in prompt["box"])
        cv2.rectangle(out, (x1, y1), (x2, y2), (255, 255, 0), max(1, radius // 2))
    return out


def save_instance_panel(
    path: Path,
    image: np.ndarray,
    gt: np.ndarray,
    predictions: dict[str, tuple[np.ndarray, float]],
    prompt,
    base: str = "SAM",
) -> None:
    """Side-by-side PNG: image with the prompt, GT, then each method's mask titled with its IoU against
    the GT (``"samplm_lite top: IoU 0.73"``; plain SAM's panels named after ``base``)."""
    panels = [
        _titled(_fit(_draw_prompt(image, prompt)), "image + prompt"),
        _titled(_fit(_overlay(image, gt, COLORS["gt"])), "ground truth"),
    ]
    for name, (mask, value) in predictions.items():
        panel = _fit(_draw_prompt(_overlay(image, mask, COLORS["pred"]), prompt))
        panels.append(_titled(panel, panel_title(label(name, base), f"IoU {value:.2f}", panel.shape[1])))
    _row(path, panels)


def colour_bar(height: int = PANEL_HEIGHT, width: int = 150) -> np.ndarray:
    """The legend of sensitivity maps: the colour scale (IoU 1 at the top, red; 0 at the bottom, blue)
    with ticks, titled :data:`SENSITIVITY_LEGEND`."""
    panel = np.full((height, width, 3), 255, np.uint8)
    top, bottom, left = 8, height - 8, 10
    values = np.linspace(255, 0, bottom - top).astype(np.uint8)[:, None].repeat(20, axis=1)
    panel[top:bottom, left : left + 20] = cv2.cvtColor(
        cv2.applyColorMap(values, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB
    )
    for value, text in ((1.0, "1.0 (exact)"), (0.75, "0.75"), (0.5, "0.5"), (0.25, "0.25"), (0.0, "0.0")):
        y = round(bottom - 1 - value * (bottom - top - 1))
        cv2.line(panel, (left + 20, y), (left + 25, y), (0, 0, 0), 1)
        cv2.putText(panel, text, (left + 29, y + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return _titled(panel, SENSITIVITY_LEGEND)


def save_sensitivity_png(
    path: Path, image: np.ndarray, gt: np.ndarray, maps: SensitivityMap, base: str = "SAM"
) -> None:
    """The image with the GT outline, then one IoU heatmap per method over the click lattice (each
    spot's colour: the IoU of the mask answered for a click there, blue = 0, red = 1), drawn over the
    clicked region, titled with the mean IoU +- std over the clicks inside the object; then the colour
    bar (:func:`colour_bar`)."""
    x0, x1 = int(maps.xs[0]), math.ceil(maps.xs[-1]) + 1
    y0, y1 = int(maps.ys[0]), math.ceil(maps.ys[-1]) + 1
    crop = image[y0:y1, x0:x1]
    panels = [_titled(_fit(_overlay(crop, gt[y0:y1, x0:x1], COLORS["gt"])), "ground truth")]
    for method, values in maps.iou.items():
        heat = cv2.resize(
            (values * 255).astype(np.uint8), (crop.shape[1], crop.shape[0]), interpolation=cv2.INTER_NEAREST
        )
        colored = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        blend = _fit((0.35 * crop + 0.65 * colored).astype(np.uint8))
        summary = maps.summary()[method]
        value = f"mean IoU {summary['mean']:.2f} +- {summary['std']:.2f}"
        panels.append(_titled(blend, panel_title(label(method, base), value, blend.shape[1])))
    _row(path, [*panels, colour_bar()])
