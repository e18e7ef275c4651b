"""What a run leaves for use: the chosen adapter in ``out/adapter`` and the prototype beside it.

:func:`export_adapter` writes an adapter (refusing non-finite weights) with its metrics and how it was
chosen; :func:`finish_run` is a run's last export; :func:`write_prototype` adds the prototype
(``prototype.safetensors``: the training masks' mean embedding, for ``samplm segment``) through
:class:`PromptAdapter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..adapter.prompt_adapter import PromptAdapter
from ..adapter.prototype import TargetPrototype
from ..errors import NonFiniteError
from ..segment.prototype_fitting import training_prototype
from .training_set import TrainingSet

if TYPE_CHECKING:
    from .run_setup import TrainingRun

ADAPTER_DIRNAME = "adapter"


def export_adapter(
    adapter: PromptAdapter,
    out: Path,
    metrics: dict[str, Any],
    selection: str | None = None,
    prototype: TargetPrototype | None = None,
) -> None:
    """Save ``adapter`` to ``out/adapter`` with ``metrics`` (and their ``step``) in its config,
    ``selection`` (how it was chosen, one line) in its config and card, and ``prototype`` (when given)
    as its ``prototype.safetensors``.

    Raises:
        NonFiniteError: a weight is NaN or infinite; nothing is written.
    """
    bad = [
        name
        for name, tensor in adapter.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    if bad:
        raise NonFiniteError(
            f"step {metrics.get('step')}: NaN or infinite values in the adapter ({', '.join(bad)}); "
            f"not exporting it to {out / ADAPTER_DIRNAME}"
        )
    adapter.config.metadata = {**adapter.config.metadata, "metrics": dict(metrics)}
    if selection is not None:
        adapter.config.metadata["selection"] = selection
    if prototype is not None:
        adapter.prototype = prototype
    adapter.save_pretrained(out / ADAPTER_DIRNAME)


def write_prototype(train_set: TrainingSet, task: str, adapter_dir: Path) -> None:
    """Give the adapter saved in ``adapter_dir`` its prototype (the mean embedding under ``train_set``'s
    masks, recorded for ``task``) and save it again through :class:`PromptAdapter`, the folder's owner."""
    adapter = PromptAdapter.load(adapter_dir)
    adapter.prototype = training_prototype(train_set, task)
    adapter.save_pretrained(adapter_dir)


def finish_run(run: TrainingRun, progress: bool) -> None:
    """The last export: without validation the final adapter; with it, the selected candidate's card
    and metrics get the final figures (and the judgement line is printed). Then the prototype."""
    adapter_dir = run.out / ADAPTER_DIRNAME
    judgement = run.state["judgement"]
    if run.val_set is None:
        run.state["best_metrics"] = {"step": run.state["step"]}
        export_adapter(run.adapter, run.out, run.state["best_metrics"], prototype=_prototype(run))
    elif judgement is not None and adapter_dir.is_dir():
        chosen = PromptAdapter.load(adapter_dir)
        export_adapter(chosen, run.out, run.state["best_metrics"], judgement.line(), _prototype(run))
        if progress:
            print(judgement.line(), flush=True)
    elif adapter_dir.is_dir():
        write_prototype(run.train_set, run.adapter.task, adapter_dir)


def _prototype(run: TrainingRun) -> TargetPrototype:
    """The prototype of ``run``'s training masks, recorded for its task."""
    return training_prototype(run.train_set, run.adapter.task)
