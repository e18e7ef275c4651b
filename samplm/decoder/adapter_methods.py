"""The adapter methods every samplm predictor shares (``load_adapter``, ``set_adapter``, ...).

:class:`AdapterMethods` is mixed into :class:`~samplm.decoder.predictor.CustomSamPredictor` (SAM 1) and
:class:`~samplm.decoder.sam2_predictor.CustomSam2Predictor` (SAM 2): the names, activation and placement of
adapters are the registry's (:class:`~samplm.decoder.adapters.AdapterRegistry`), the per-image contexts the
image state's (:class:`~samplm.decoder.image_state.ImageState`); the host sets ``_adapters``, ``_images``,
``strict`` and ``base`` (its :class:`~samplm.base.interface.PromptableBase`), and has ``features``,
``original_size``, ``input_size`` and ``device`` for the current image, ``decode``, ``upscale_logits``
and ``_torch_prompts`` (user prompts in the original frame -> the keyword tensors of ``decode``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike

from ..adapter.prompt_adapter import PromptAdapter
from ..base.interface import PromptableBase
from ..errors import SamplmError
from . import predict_many as many
from .adapters import AdapterRegistry
from .image_state import ImageState

if TYPE_CHECKING:
    from ..refine.polygons import RefinedMask


class AdapterMethods:
    """Named, hot-swappable adapters on a predictor (see the module docstring for what the host provides)."""

    _adapters: AdapterRegistry
    _images: ImageState
    strict: bool
    base: PromptableBase

    @property
    def adapters(self) -> list[str]:
        """Names of the loaded adapters, in load order."""
        return self._adapters.names

    @property
    def active_adapter(self) -> str | None:
        """Name of the adapter the next prediction uses (``None``: plain SAM)."""
        return self._adapters.active

    def get_adapter(self, adapter_name: str) -> PromptAdapter:
        """The loaded :class:`PromptAdapter` called ``adapter_name``."""
        return self._adapters.get(adapter_name)

    def load_adapter(
        self,
        adapter: str | os.PathLike[str] | PromptAdapter,
        adapter_name: str | None = None,
        *,
        activate: bool | None = None,
        replace: bool = False,
        strict: bool | None = None,
        **load_kwargs: Any,
    ) -> str:
        """Load an adapter (or add a copy of an in-memory one) under a name.

        The predictor keeps its own copy, on the SAM's device and dtype, in eval mode and frozen; a
        :class:`PromptAdapter` passed in is deep-copied and left as it was (reach the predictor's copy
        with :meth:`get_adapter`). If the SAM is moved or cast later (``sam.to(...)``, ``sam.double()``),
        the adapters follow on the next prediction.

        Args:
            adapter: short name (``"nose"``), local directory / ``.safetensors`` file,
                ``"org/repo[@revision]"``, or a :class:`PromptAdapter` instance.
            adapter_name: name to register it under (default: the adapter's ``task``).
            activate: make it the active adapter. Default: only if no adapter is active yet, so the
                first adapter loaded is used right away and later ones wait for :meth:`set_adapter`.
            replace: allow replacing an adapter already loaded under the same name.
            strict: raise instead of warn on a SAM fingerprint mismatch (default: ``self.strict``).
            **load_kwargs: forwarded to :meth:`PromptAdapter.load` (``revision``, ``token``, ...).

        Returns:
            The name it was registered under.

        Raises:
            AdapterFormatError: an in-memory adapter holds NaN or infinite weights (files are checked
                by :meth:`PromptAdapter.load`).
            AdapterNameError: ``adapter_name`` is given but is not a non-empty string.
        """
        name = self._adapters.add(
            adapter,
            adapter_name,
            activate=activate,
            replace=replace,
            strict=self.strict if strict is None else strict,
            load_kwargs=load_kwargs,
        )
        self._images.forget_context(name)  # (a replaced adapter's context)
        return name

    def set_adapter(self, adapter_name: str) -> None:
        """Make a loaded adapter active. Costs no recomputation of the image embedding."""
        self._adapters.activate(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        """Unload an adapter; if it was active, plain SAM is used until another is set."""
        self._adapters.remove(adapter_name)
        self._images.forget_context(adapter_name)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Context manager: predictions inside it use plain SAM (nestable, exception-safe)."""
        with self._adapters.disabled():
            yield

    @contextlib.contextmanager
    def use_adapter(self, adapter_name: str | None) -> Iterator[None]:
        """Context manager: predictions inside it use ``adapter_name`` (``None``: plain SAM); the
        previously active adapter (and any :meth:`disable_adapter`) is restored on exit."""
        with self._adapters.using(adapter_name):
            yield

    def _placed(self, name: str) -> PromptAdapter:
        """The adapter ``name``, moved to the SAM's current device and dtype if the SAM moved since."""
        adapter, moved = self._adapters.place(name)
        if moved:
            self._images.forget_context(name)
        return adapter

    @torch.no_grad()
    def predict_refined(
        self,
        point_coords: ArrayLike | None = None,
        point_labels: ArrayLike | None = None,
        box: ArrayLike | None = None,
        mask_input: ArrayLike | None = None,
        multimask_output: bool = True,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """:meth:`predict`, then PMM polygon refinement of every returned mask (paper Fig. 5).

        Needs an active adapter that carries PMM weights. Arguments as :meth:`predict` (the original
        image's XY pixels; boxes XYXY).

        Returns:
            ``(refined masks C x H x W bool, scores C, low_res_logits C x 256 x 256, polygons)`` where
            ``polygons[i]`` lists the ``K x 2`` XY refined polygons of mask ``i``'s parts, largest
            first (original frame; empty for an empty mask).
        """
        from ..refine.polygons import require_pmm

        name = self.active_adapter
        if name is None:
            raise SamplmError("predict_refined needs an active adapter with a Point Matching Module")
        adapter = self._adapters.get(name)
        require_pmm(adapter.pmm, f"adapter {name!r}")
        prompts = self._torch_prompts(point_coords, point_labels, box, mask_input)
        output = self.decode(**prompts, multimask_output=multimask_output, features=True)
        masks = self.upscale_logits(output.low_res_logits)[0].cpu().numpy()
        refined = self._refine(adapter, masks, output.image_features)
        scores = output.iou_predictions[0].cpu().numpy()
        low_res = output.low_res_logits[0].cpu().numpy()
        return np.stack([r.mask for r in refined]), scores, low_res, [r.polygons for r in refined]

    # ------------------------------------------------------------------ several adapters, refinement
    def _row(self, name: str | None, adapter: PromptAdapter | None, refine: bool) -> many.AdapterRow:
        """:meth:`predict_many`'s row of a (placed) adapter on the current image; ``None``: plain SAM."""
        if name is None or adapter is None:
            return many.AdapterRow(None, None, None)
        context = self._images.context(name, adapter, self.features)
        return many.AdapterRow(name, adapter, context, refine=refine and adapter.pmm is not None)

    def _adapter_chunk(self) -> int | None:
        """Adapters per decoder call in :meth:`predict_many` on this SAM and device
        (:func:`samplm.decoder.predict_many.adapter_chunk`)."""
        return many.adapter_chunk(self.base, self.device)

    def _refine(
        self, adapter: PromptAdapter, masks: np.ndarray, image_features: torch.Tensor
    ) -> list[RefinedMask]:
        """PMM refinement of one prompt's ``C x H x W`` masks (original frame; ``image_features``: its
        ``1 x 256 x h x w`` decoder features) -> one :class:`samplm.refine.polygons.RefinedMask` per mask."""
        from ..refine.polygons import refine_masks

        return refine_masks(
            adapter.pmm,
            masks,
            image_features,
            original_size=tuple(self.original_size),
            input_size=tuple(self.input_size),
            image_size=self.base.image_size,
        )
