"""A training run's judgement: the trained adapter against plain SAM and SAM-F on the validation split.

Before the first step the run validates two candidates that need no training: the untrained adapter
(plain SAM's top mask: a fresh PLM is the identity) and SAM-F (PerSAM-F's two-weight blend of SAM's three
masks, fitted on the training split as ``samplm eval`` does, held by an adapter whose mask mix is the
blend). Each validation of the trained adapter then competes with them; the exported adapter is the best
candidate seen, the untrained one when nothing beats it. After the last step the winner gets a score readout
(with or without a mask bias) fitted on the training split (:mod:`samplm.train.score_readout`), kept only
if it validates better.
:class:`Judgement` holds the figures and says which won, in one line (printed, and written into the
adapter's card).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any

from ..adapter.prompt_adapter import PromptAdapter
from ..eval.samf import SamF, train_samf
from .training_set import TrainingSet

#: Candidates a run chooses from: the untrained adapter, SAM-F's blend, the trained adapter.
CANDIDATES = ("sam", "samf", "trained")
_LABELS = {"sam": "plain SAM (untrained adapter)", "samf": "SAM-F blend", "trained": "trained adapter"}


@dataclass
class Judgement:
    """Validation mIoU (centre click, low-res, 0-1) of each candidate and which one is exported.

    Attributes:
        sam: the untrained adapter (plain SAM's top mask).
        samf: SAM-F's blend (``samf_weights``, fitted on the training split).
        trained: the best validation of the trained adapter so far (``-inf`` before the first).
        trained_step: the step of that validation.
        selected: the exported candidate, one of :data:`CANDIDATES`.
        validation: how the figures were validated (e.g. ``"validation split, 12 instances"``).
        readouts: ``(ridge strength, with the mask bias, val mIoU)`` of the selected candidate with each
            fitted readout (:data:`~samplm.train.score_readout.READOUT_CHOICES`; empty: none fitted).
    """

    sam: float
    samf: float
    samf_weights: tuple[float, float, float]
    trained: float = -math.inf
    trained_step: int | None = None
    selected: str = "sam"
    validation: str = ""
    readouts: tuple[tuple[float, bool, float], ...] = ()

    @property
    def readout_choice(self) -> tuple[float, bool] | None:
        """``(ridge strength, with the mask bias)`` of the best-validated readout (``None``: none fitted;
        ties: the first)."""
        if not self.readouts:
            return None
        alpha, biased, _ = max(self.readouts, key=lambda row: row[2])
        return alpha, biased

    @property
    def readout(self) -> float | None:
        """The selected candidate's figure with its best readout (``None``: none fitted)."""
        return max(figure for _, _, figure in self.readouts) if self.readouts else None

    @property
    def readout_kept(self) -> bool:
        """Whether the exported adapter carries the fitted readout (it validated strictly better)."""
        return self.readout is not None and self.readout > getattr(self, self.selected)

    @property
    def best(self) -> float:
        """The exported adapter's figure: the selected candidate's, with its readout when kept."""
        return self.readout if self.readout_kept else getattr(self, self.selected)

    def consider(self, miou: float, step: int) -> bool:
        """Record a validation of the trained adapter; ``True`` when it becomes the selected candidate
        (strictly better than every candidate so far). Ties keep the earlier candidate. A readout fitted
        before is dropped (it belonged to the candidate then selected)."""
        self.readouts = ()
        if miou > self.trained:
            self.trained, self.trained_step = miou, step
        if miou > self.best:
            self.selected = "trained"
            return True
        return False

    def line(self) -> str:
        """One line: which candidate was exported and the three figures."""
        trained = (
            f"trained {100 * self.trained:.2f} (step {self.trained_step})"
            if self.trained_step is not None
            else "trained: not validated"
        )
        where = f" on the {self.validation}" if self.validation else ""
        readout = ""
        if self.readout_choice is not None:
            alpha, biased = self.readout_choice
            kept = "kept" if self.readout_kept else "not kept"
            bias = " and a mask bias" if biased else ""
            readout = f"; with a score readout (ridge {alpha:g}){bias} {100 * self.readout:.2f}, {kept}"
        return (
            f"exported the {_LABELS[self.selected]}: val mIoU{where}: plain SAM {100 * self.sam:.2f}, "
            f"SAM-F {100 * self.samf:.2f}, {trained}{readout}"
        )

    def metrics(self) -> dict[str, float | int | str | None]:
        """The figures as the adapter's ``metadata["metrics"]`` records them."""
        return {
            "selected": self.selected,
            "val_miou": round(self.best, 6),
            "val_miou_sam": round(self.sam, 6),
            "val_miou_samf": round(self.samf, 6),
            "val_miou_trained": round(self.trained, 6) if self.trained_step is not None else None,
            "trained_step": self.trained_step,
            "val_miou_readout": round(self.readout, 6) if self.readout is not None else None,
            "score_readout": self.readout_kept,
            "mask_bias": self.readout_kept and bool(self.readout_choice and self.readout_choice[1]),
        }

    def to_state(self) -> dict:
        """A plain dict for the training checkpoint (see :meth:`from_state`)."""
        state = asdict(self)
        state["samf_weights"] = list(self.samf_weights)
        state["readouts"] = [list(row) for row in self.readouts]
        return state

    @classmethod
    def from_state(cls, state: dict) -> Judgement:
        """The judgement :meth:`to_state` stored (readouts stored before mask biases: without one)."""
        rows = [row if len(row) == 3 else (row[0], False, row[1]) for row in state.get("readouts", ())]
        readouts = tuple((float(a), bool(b), float(f)) for a, b, f in rows)
        return cls(**{**state, "samf_weights": tuple(state["samf_weights"]), "readouts": readouts})


def candidate_adapter(template: PromptAdapter, samf: SamF | None = None) -> PromptAdapter:
    """A candidate that needs no training: ``template``'s config without a PMM (an untrained PMM would
    only spoil refinement), a fresh PLM (plain SAM), its mask mix set to ``samf``'s blend if given."""
    config = dataclasses.replace(
        template.config,
        pmm=None,
        metadata=copy.deepcopy(template.config.metadata),
        base_model=copy.deepcopy(template.config.base_model),
    )
    candidate = PromptAdapter(config)
    if samf is not None:
        candidate.plm.set_blend(samf.weights)
    return candidate.to(next(template.parameters()).device)


def judge_baselines(
    sam: Any,
    template: PromptAdapter,
    train_set: TrainingSet,
    validate,
    *,
    seed: int = 0,
    validation: str = "",
) -> tuple[Judgement, dict[str, PromptAdapter]]:
    """Validate the two candidates that need no training.

    Args:
        sam: the frozen SAM.
        template: the run's (untrained) adapter, for its config and device.
        train_set: SAM-F's two weights are fitted on it.
        validate: ``adapter -> val mIoU`` (the run's own validation).
        seed: SAM-F's batch order.
        validation: how the figures were validated, for :meth:`Judgement.line`.

    Returns:
        ``(judgement, {"sam": adapter, "samf": adapter})``; the judgement selects the better of the two
        (plain SAM on a tie).
    """
    device = next(template.parameters()).device
    samf = train_samf(sam, train_set, seed=seed, device=device, progress=False)
    adapters = {"sam": candidate_adapter(template), "samf": candidate_adapter(template, samf)}
    figures = {name: validate(adapter) for name, adapter in adapters.items()}
    judgement = Judgement(figures["sam"], figures["samf"], samf.weights, validation=validation)
    judgement.selected = "samf" if judgement.samf > judgement.sam else "sam"
    return judgement, adapters
