"""Which base a model is: a ``segment_anything`` ``Sam``, a ``sam2`` model, or a base object already.

Everything that decodes (the predictors, training, evaluation) takes any of them and calls :func:`as_base`
once, so a function written for :class:`~samplm.base.interface.PromptableBase` also takes a bare ``Sam``.
"""

from __future__ import annotations

from typing import Any

from segment_anything.modeling import Sam

from .interface import BaseIdentity, PromptableBase
from .meta_sam import SamBase


def as_base(model: Any) -> PromptableBase:
    """``model`` as a :class:`PromptableBase`: a ``Sam`` becomes a :class:`SamBase`, a ``sam2``
    ``SAM2Base`` a :class:`~samplm.base.meta_sam2.Sam2Base`; a base is returned as it is.

    Raises:
        TypeError: ``model`` is none of these.
    """
    if isinstance(model, PromptableBase):
        return model
    if isinstance(model, Sam):
        return SamBase(model)
    if _is_sam2(model):
        from .meta_sam2 import Sam2Base

        return Sam2Base(model)
    raise TypeError(
        f"expected a segment_anything Sam, a sam2 model or a samplm base, got {type(model).__name__}"
    )


def as_identity(model: Any) -> BaseIdentity:
    """``model`` as a :class:`BaseIdentity` (what adapters are checked against): any object that has
    ``family``, ``embed_dim``, ``fingerprint()`` and ``decoder_parameter()`` (e.g. the transformers
    wrappers of :mod:`samplm.hf`), else :func:`as_base`."""
    if not isinstance(model, (Sam, PromptableBase)) and isinstance(model, BaseIdentity):
        return model
    return as_base(model)


def _is_sam2(model: Any) -> bool:
    """Whether ``model`` is a ``sam2`` ``SAM2Base`` (without importing ``sam2`` when it is not loaded)."""
    import sys

    module = sys.modules.get("sam2.modeling.sam2_base")
    return module is not None and isinstance(model, module.SAM2Base)
