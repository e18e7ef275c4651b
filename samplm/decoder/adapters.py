"""The named adapters a :class:`~samplm.decoder.predictor.CustomSamPredictor` holds.

:class:`AdapterRegistry` keeps the predictor's own frozen copies of its adapters by name, which one is
active (and whether adapters are disabled for a while), checks each against the SAM's fingerprint when it
is added, and keeps each on the SAM's current device and dtype. It knows nothing of images: the predictor
drops an adapter's per-image cache (:class:`~samplm.decoder.image_state.ImageState`) when the registry
adds, replaces, removes or moves it.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Iterator
from typing import Any

import torch

from ..adapter.prompt_adapter import PromptAdapter, check_finite
from ..base.bases import as_identity
from ..errors import AdapterNameError, AdapterOutputError, UnknownAdapterError
from ..utils.checks import shown


class AdapterRegistry:
    """Named :class:`PromptAdapter` copies for one base, in load order, with the active one.

    Args:
        sam: the base the adapters decode with: a ``Sam``, a ``sam2`` model or any
            :class:`~samplm.base.interface.BaseIdentity` (its fingerprint is computed once, on the first
            :meth:`add`; its decoder parameter gives the device and dtype adapters are kept on).
    """

    def __init__(self, sam: Any) -> None:
        self._base = as_identity(sam)
        self._modules: dict[str, PromptAdapter] = {}
        self._active: str | None = None
        self._disabled_depth = 0
        self._fingerprint: str | None = None

    @property
    def names(self) -> list[str]:
        """Names of the loaded adapters, in load order."""
        return list(self._modules)

    @property
    def active(self) -> str | None:
        """Name of the adapter the next prediction uses (``None``: plain SAM, also while disabled)."""
        return None if self._disabled_depth else self._active

    def require(self, name: str) -> str:
        """``name`` if an adapter of that name is loaded.

        Raises:
            AdapterNameError: ``name`` is not a non-empty string.
            UnknownAdapterError: no adapter of that name is loaded (lists the loaded ones).
        """
        if check_adapter_name(name) not in self._modules:
            raise UnknownAdapterError(name, self.names)
        return name

    def get(self, name: str) -> PromptAdapter:
        """The loaded adapter ``name`` (the registry's own copy), as it is (not moved)."""
        return self._modules[self.require(name)]

    def add(
        self,
        adapter: str | os.PathLike[str] | PromptAdapter,
        name: str | None,
        *,
        activate: bool | None,
        replace: bool,
        strict: bool,
        load_kwargs: dict[str, Any],
    ) -> str:
        """Register a frozen copy of ``adapter`` (loaded by name or path, or deep-copied) under ``name``.

        The copy is checked against the SAM's fingerprint (``strict``: raise, else warn), put in eval
        mode, frozen and moved to the SAM's device and dtype. Arguments and errors as
        :meth:`CustomSamPredictor.load_adapter <samplm.decoder.predictor.CustomSamPredictor.load_adapter>`.

        Returns:
            The name it was registered under (default: the adapter's ``task``).
        """
        if name is not None:
            check_adapter_name(name)
        module = _own_copy(adapter, load_kwargs)
        name = check_adapter_name(name if name is not None else module.task)
        if name in self._modules and not replace:
            raise ValueError(f"an adapter named {name!r} is already loaded; pass replace=True to replace it")
        if self._fingerprint is None:
            self._fingerprint = self._base.fingerprint()
        module.check_compatible(self._base, strict=strict, fingerprint=self._fingerprint)
        module.eval().requires_grad_(False)
        self._modules[name] = module
        self.place(name)
        if activate or (activate is None and self._active is None):
            self._active = name
        return name

    def activate(self, name: str) -> None:
        """Make the loaded adapter ``name`` the active one."""
        self._active = self.require(name)

    def remove(self, name: str) -> None:
        """Unload ``name``; if it was active, no adapter is active afterwards."""
        del self._modules[self.require(name)]
        if self._active == name:
            self._active = None

    @contextlib.contextmanager
    def disabled(self) -> Iterator[None]:
        """Context manager: :attr:`active` is ``None`` inside (nestable, exception-safe)."""
        self._disabled_depth += 1
        try:
            yield
        finally:
            self._disabled_depth -= 1

    @contextlib.contextmanager
    def using(self, name: str | None) -> Iterator[None]:
        """Context manager: ``name`` is active inside (``None``: plain SAM), even within :meth:`disabled`.

        The name is checked on entry; on exit the previously active adapter (``None`` if it was removed
        meanwhile) and the disabled state come back.
        """
        if name is not None:
            self.require(name)
        active, depth = self._active, self._disabled_depth
        self._active, self._disabled_depth = name, 0
        try:
            yield
        finally:
            self._active = active if active in self._modules else None
            self._disabled_depth = depth

    def place(self, name: str) -> tuple[PromptAdapter, bool]:
        """The adapter ``name`` on the SAM's current device and dtype, and whether it had to be moved
        (the SAM was moved or cast since; the adapter's per-image cache is then stale)."""
        adapter = self._modules[name]
        reference = self._base.decoder_parameter()
        current = next(adapter.parameters())
        if (current.device, current.dtype) == (reference.device, reference.dtype):
            return adapter, False
        adapter.to(device=reference.device, dtype=reference.dtype)
        return adapter, True


def check_adapter_name(name: Any) -> str:
    """``name`` if it is a non-empty string, else :class:`AdapterNameError` (one line)."""
    if not isinstance(name, str) or not name:
        raise AdapterNameError(f"an adapter name must be a non-empty string, got {shown(name)}")
    return name


def require_finite_outputs(name: str, logits: torch.Tensor, scores: torch.Tensor) -> None:
    """Stop when the adapter ``name`` made the decoder's mask ``logits`` or the ``scores`` NaN or infinite
    (the one check of adapter outputs: prediction, several-adapter decoding and the ONNX export use it).

    Args:
        name: the adapter's name (in the message).
        logits: mask logits of any shape (e.g. ``B x C x 4h x 4w``).
        scores: the matching scores (e.g. ``B x C``).

    Raises:
        AdapterOutputError: a value of either is NaN or infinite.
    """
    if not (torch.isfinite(logits).all() and torch.isfinite(scores).all()):
        raise AdapterOutputError(
            f"adapter {name!r} made SAM's decoder output NaN or infinite mask logits or scores: its weights "
            "overflow (corrupted, or training diverged); retrain it, or predict without it "
            "(disable_adapter(), or leave it out of predict_many)"
        )


def _own_copy(adapter: str | os.PathLike[str] | PromptAdapter, load_kwargs: dict[str, Any]) -> PromptAdapter:
    """A new module: ``adapter`` loaded with ``load_kwargs``, or a deep copy of an in-memory one (its
    weights checked finite: files are checked by :meth:`PromptAdapter.load`)."""
    if not isinstance(adapter, PromptAdapter):
        return PromptAdapter.load(adapter, **load_kwargs)
    if load_kwargs:
        raise TypeError(f"load options {sorted(load_kwargs)} only apply when loading by name")
    check_finite(adapter.state_dict(), f"adapter {adapter.task!r} (in memory)")
    return copy.deepcopy(adapter)
