"""The package's layout stays readable: few top-level modules, no colliding names, every module on the
layout page (``docs/layout.md``)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import samplm

PACKAGE = Path(samplm.__file__).parent
LAYOUT = (Path(__file__).parents[1] / "docs" / "layout.md").read_text()


def _modules() -> list[Path]:
    return sorted(
        p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py") if p.name not in {"__init__.py", "__main__.py"}
    )


def test_at_most_eight_modules_at_the_top():
    top = [p for p in PACKAGE.glob("*.py")]
    assert len(top) <= 8, sorted(p.name for p in top)


def test_no_two_modules_share_a_name():
    """Except each job's ``settings`` and the ``cli/`` modules, which are named after their commands."""
    names = Counter(p.stem for p in _modules() if p.parts[0] != "cli")
    repeated = {name for name, count in names.items() if count > 1} - {"settings"}
    assert not repeated, repeated


def test_every_module_is_on_the_layout_page():
    missing = []
    for module in _modules():
        folder = module.parts[0] if len(module.parts) > 1 else None
        named = module.name in LAYOUT or module.stem in LAYOUT.split()
        if not named or (folder is not None and f"{folder}/" not in LAYOUT):
            missing.append(str(module))
    assert not missing, missing
