"""``TrainJobSettings``: what a training run writes, resumes and validates on, besides its
:class:`~samplm.train.settings.TrainConfig` (the ``training`` options of ``samplm train``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.settings import VAL_FRACTION_LIMIT
from ..utils.settings import about
from .recipes import RECIPE_CHOICES


@dataclass(frozen=True)
class TrainJobSettings:
    """Output folder, task name, recipe and validation data of a run of
    :func:`~samplm.train.fit.fit_adapter`."""

    out: str | None = field(default=None, metadata=about("output directory"))
    task: str | None = field(
        default=None, metadata=about("adapter task name (default: the category, or the --out folder name)")
    )
    recipe: str = field(
        default="auto",
        metadata=about(
            "training recipe: paper (20k steps, lr 1e-5, batch 10), fast (600 steps, lr 1e-3, batch 8) or "
            "auto (default: fast for samplm_lite/samplm_tiny, paper for vit_*); settings below override it",
            choices=RECIPE_CHOICES,
        ),
    )
    no_pmm: bool = field(default=False, metadata=about("train the PLM only (no point matching)"))
    val_data: str | None = field(
        default=None, metadata=about("validation annotations (same format); default: split --data")
    )
    val_fraction: float | None = field(
        default=None,
        metadata=about("share of images held out for validation (default 0.2)", limit=VAL_FRACTION_LIMIT),
    )
    no_resume: bool = field(default=False, metadata=about("ignore an existing checkpoint in --out"))

    @property
    def split(self) -> bool:
        """Whether the user chose the validation data (``val_data``) or share (``val_fraction``): then the
        run validates on one split, never k folds."""
        return bool(self.val_data) or self.val_fraction is not None
