"""Training prompts: a random foreground click favouring the mask centre (paper 5.1), optional boxes
with jitter and extra positive/negative clicks. Coordinates are XY in SAM's input frame."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..train.targets import InstanceTarget
from ..utils.geometry import sample_points


@dataclass(frozen=True)
class Prompt:
    """One instance's prompt: ``N x 2`` points, ``N`` labels (1/0), optional XYXY box (input frame)."""

    points: np.ndarray | None
    labels: np.ndarray | None
    box: np.ndarray | None


@dataclass
class PromptSampler:
    """Random prompts for training.

    Args:
        center_power: click probability ~ distance_transform ** center_power (0 = uniform).
        box_probability: chance of adding a box prompt.
        box_jitter: std of box-corner noise, as a fraction of the box side.
        extra_points: up to this many extra clicks (positive inside, negative outside the mask).
        box_only_probability: of the prompts with a box, the share without any click.
    """

    center_power: float = 1.0
    box_probability: float = 0.0
    box_jitter: float = 0.1
    extra_points: int = 0
    box_only_probability: float = 0.5

    def sample(self, target: InstanceTarget, rng: np.random.Generator, img_size: int) -> Prompt:
        scale = img_size / target.low_res.shape[0]
        box = None
        if rng.random() < self.box_probability:
            box = self._jittered_box(target.box, rng, img_size)
            if rng.random() < self.box_only_probability:
                return Prompt(None, None, box)
        cells = sample_points(target.low_res, 1, rng, center_power=self.center_power)
        points = [(cells + rng.random(cells.shape)) * scale]
        labels = [np.ones(1, dtype=np.int64)]
        for _ in range(int(rng.integers(0, self.extra_points + 1)) if self.extra_points else 0):
            positive = bool(rng.random() < 0.5) or not (~target.low_res).any()
            region = target.low_res if positive else ~target.low_res
            cell = sample_points(region, 1, rng, center_power=0.0)
            points.append((cell + rng.random(cell.shape)) * scale)
            labels.append(np.array([int(positive)]))
        return Prompt(np.concatenate(points), np.concatenate(labels), box)

    def _jittered_box(self, box, rng: np.random.Generator, img_size: int) -> np.ndarray:
        x1, y1, x2, y2 = box
        w, h = x2 - x1, y2 - y1
        noise = rng.normal(0.0, self.box_jitter, 4) * np.array([w, h, w, h])
        jittered = np.array([x1, y1, x2, y2]) + noise
        jittered = np.clip(jittered, 0, img_size)
        return np.array(
            [
                min(jittered[0], jittered[2]),
                min(jittered[1], jittered[3]),
                max(jittered[0], jittered[2]),
                max(jittered[1], jittered[3]),
            ]
        )

    @property
    def prompt_types(self) -> list[str]:
        """Prompt kinds this sampler produces (recorded in the adapter config)."""
        kinds = ["point"] if self.box_probability < 1 or self.box_only_probability < 1 else []
        return kinds + (["box"] if self.box_probability > 0 else [])
