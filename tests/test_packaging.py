"""pyproject.toml declares what the code imports, samplm.constants holds only names in use, and the
public API imports from ``samplm``."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

import samplm.constants

ROOT = Path(__file__).parents[1]


def _project() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _names(requirements: list[str]) -> set[str]:
    """Normalised distribution names of requirement strings (``pillow>=9`` -> ``pillow``)."""
    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in requirements}


def _imports(folder: Path) -> tuple[set[str], set[str]]:
    """Third-party top-level modules imported under ``folder``: ``(at module level, anywhere)``."""
    module_level: set[str] = set()
    anywhere: set[str] = set()
    for path in folder.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(node) for node in tree.body}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = {node.module.split(".")[0]}
            else:
                continue
            names -= {*sys.stdlib_module_names, "samplm", "pretraining", "__future__"}
            anywhere |= names
            if id(node) in top:
                module_level |= names
    return module_level, anywhere


def _distributions(modules: set[str]) -> dict[str, set[str]]:
    mapping = importlib.metadata.packages_distributions()
    return {m: {d.lower().replace("_", "-") for d in mapping.get(m, [m])} for m in modules}


# The extras of other bases: their modules import them at module level, and are imported only when used
# (``samplm.CustomSam2Predictor``, ``samplm.hf``, a SAM 2 ``--model-type``).
BASE_EXTRAS = ("sam2", "hf")


def test_every_import_of_samplm_is_declared():
    project = _project()
    runtime = _names(project["dependencies"])
    extras = project["optional-dependencies"]
    bases = set().union(*(_names(extras[name]) for name in BASE_EXTRAS))
    user = runtime | bases | _names(extras["train"]) | _names(extras["eval"]) | _names(extras["export"])
    module_level, anywhere = _imports(ROOT / "samplm")
    assert "PIL" in module_level and "pillow" in runtime
    for module, dists in _distributions(module_level).items():
        assert dists & (runtime | bases), (
            f"samplm imports {module} at module level: declare {dists} in dependencies"
        )
    for module, dists in _distributions(anywhere).items():
        assert dists & user, f"samplm imports {module}: declare {dists} in dependencies or an extra"


def test_the_base_extras_are_imported_only_when_used():
    """``import samplm`` and the CLI's parser work without the ``sam2`` / ``hf`` extras: neither loads
    them (checked in a fresh interpreter)."""
    import subprocess

    code = (
        "import sys, samplm, samplm.cli; samplm.cli.build_parser(); "
        "print(sorted(m for m in ('sam2', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
    extras = _project()["optional-dependencies"]
    assert {"sam2", "transformers"} <= set().union(*(_names(extras[n]) for n in BASE_EXTRAS))
    own = next(r for r in extras["dev"] if r.startswith("samplm["))  # dev installs samplm's own extras
    assert set(BASE_EXTRAS) <= set(own[len("samplm[") : -1].split(","))


def test_matplotlib_is_only_a_pretraining_requirement():
    project = _project()
    extras = project["optional-dependencies"]
    assert "matplotlib" not in _names(project["dependencies"]) | _names(extras["train"]) | _names(
        extras["eval"]
    )
    assert "matplotlib" not in _imports(ROOT / "samplm")[1] | _imports(ROOT / "benchmarks")[1]
    pretraining = _imports(ROOT / "pretraining")[1]
    assert "matplotlib" in pretraining and "matplotlib" in _names(extras["pretrain"])
    for module, dists in _distributions(pretraining).items():
        assert dists & (_names(project["dependencies"]) | _names(extras["pretrain"])), module


def test_every_constant_is_used_in_the_package():
    names = [n for n in vars(samplm.constants) if n.isupper()]
    sources = [
        p.read_text(encoding="utf-8")
        for p in (ROOT / "samplm").rglob("*.py")
        if p.name != "constants.py" or p.parent.name != "samplm"
    ]
    unused = [n for n in names if not any(re.search(rf"\b{n}\b", text) for text in sources)]
    assert not unused, f"unused constants in samplm/constants.py: {unused}"


def test_public_api_names_import_from_samplm():
    import samplm
    from samplm import AdapterMaskGenerator, build_sam
    from samplm.base import build_sam as base_build_sam
    from samplm.segment.generator import AdapterMaskGenerator as generator_class

    assert build_sam is base_build_sam and AdapterMaskGenerator is generator_class
    assert {"build_sam", "AdapterMaskGenerator"} <= set(samplm.__all__)
    assert all(hasattr(samplm, name) for name in samplm.__all__)
