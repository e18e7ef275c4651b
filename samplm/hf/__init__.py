"""transformers' SAMs as samplm bases: :class:`SamAdapterModel` (adapters on ``SamModel``, ``Sam2Model``,
``Sam3TrackerModel``) and the ``segment_anything`` <-> ``SamModel`` key map.

``adapter_model.py`` (the wrapper), ``families.py`` (how each wrapped class runs its steps, its family and
fingerprint), ``key_map.py`` (SAM 1 weights between the two libraries). Needs ``transformers``.
"""

from .adapter_model import SamAdapterModel
from .families import SUPPORTED_CLASSES
from .key_map import hf_from_segment_anything, hf_to_sam_state, sam_to_hf_state, segment_anything_from_hf

__all__ = [
    "SUPPORTED_CLASSES",
    "SamAdapterModel",
    "hf_from_segment_anything",
    "hf_to_sam_state",
    "sam_to_hf_state",
    "segment_anything_from_hf",
]
