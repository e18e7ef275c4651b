"""``python -m samplm.cli``: the ``samplm`` command (as ``torchrun``/``accelerate launch -m`` call it)."""

import sys

from . import main

sys.exit(main())
