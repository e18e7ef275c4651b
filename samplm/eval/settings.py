"""``EvalSettings``: the options of an evaluation (``samplm eval``); what
:func:`~samplm.eval.run.run_evaluation` is given."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..data.settings import VAL_FRACTION_LIMIT
from ..train.settings import SEED_LIMIT
from ..utils.checks import Limit
from ..utils.settings import about

PROMPTS = ("point", "box")


@dataclass(frozen=True)
class EvalSettings:
    """Adapters, output folder, evaluation split and protocol options of ``samplm eval``."""

    adapter: list[str] | None = field(
        default=None, metadata=about("adapter(s): directory, .safetensors, org/repo[@rev] or name")
    )
    out: str | None = field(default=None, metadata=about("output directory"))
    val_data: str | None = field(
        default=None, metadata=about("evaluation annotations (same format); default: split --data")
    )
    val_fraction: float = field(
        default=0.2, metadata=about("share of images evaluated (default 0.2)", limit=VAL_FRACTION_LIMIT)
    )
    seed: int = field(default=0, metadata=about("seed of the split (default 0)", limit=SEED_LIMIT))
    prompt: str = field(
        default="point", metadata=about("centre click (default) or the GT box", choices=list(PROMPTS))
    )
    no_samf: bool = field(default=False, metadata=about("leave out the SAM-F baseline"))
    samf_steps: int = field(
        default=300, metadata=about("SAM-F fitting steps (default 300)", limit=Limit(int, 1))
    )
    no_refine: bool = field(default=False, metadata=about("leave out PMM refinement"))
    sensitivity: int = field(
        default=2,
        metadata=about("instances to draw prompt sensitivity maps for (default 2)", limit=Limit(int, 0)),
    )
    visuals: int = field(
        default=3, metadata=about("worst and best instances to render (default 3 each)", limit=Limit(int, 0))
    )
    max_instances: int | None = field(
        default=None, metadata=about("evaluate at most this many instances", limit=Limit(int, 1))
    )
    auto: bool = field(
        default=False,
        metadata=about(
            "click-free instead: COCO mask AP of prior + base decoder and prior + each adapter, clicks "
            "from each adapter's prototype.safetensors (writes auto_results.json)"
        ),
    )

    def protocol(self) -> dict[str, Any]:
        """The keywords of :func:`~samplm.eval.run.run_evaluation` these settings give: ``samf_steps``,
        ``prompt``, ``refine``, ``sensitivity``, ``visuals`` and ``max_instances``."""
        return {
            "samf_steps": self.samf_steps,
            "prompt": self.prompt,
            "refine": not self.no_refine,
            "sensitivity": self.sensitivity,
            "visuals": self.visuals,
            "max_instances": self.max_instances,
        }
