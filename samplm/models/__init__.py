"""Old name of :mod:`samplm.base` (the base SAMs), kept for one release: import from ``samplm.base``."""

import warnings

from ..base import *  # noqa: F403
from ..base import __all__  # noqa: F401

warnings.warn(
    "samplm.models is now samplm.base; the old name will be removed in the next release",
    DeprecationWarning,
    stacklevel=2,
)
