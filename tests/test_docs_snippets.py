"""Every ``bash`` and ``python`` block of README.md and docs/**/*.md is run, or says why not.

The line right above each fenced block is a marker (see CONTRIBUTING.md, "Code blocks in the docs"):

- ``<!-- docs-check: run -->``: run by default (it must be quick);
- ``<!-- docs-check: slow -->``: run under ``-m slow``;
- ``<!-- docs-check: skip (REASON) -->``: never run, for the reason given (a real SAM checkpoint, the
  network, data that is not in the repository, a fragment of a longer example);
- ``<!-- docs-check: covered (tests/FILE.py) -->``: run by that test module (README's offline variants
  by tests/test_readme_examples.py).

A block without a marker fails :func:`test_every_block_is_marked`, so a new example is either run or
skipped on purpose, and the docs cannot drift from the code unnoticed.

Blocks run in one working directory per module (:func:`docs_workspace`) that holds what the examples
name: ``runs/demo`` (a small ``samplm demo`` run, from tests/test_readme_examples.py's fixture),
``runs/plates/adapter`` and ``runs/banner/adapter`` (copies of the demo's adapter), ``photos/`` (three
of its images), ``refs/images`` and ``refs/masks`` (two of its images and their masks). Python blocks
that are fragments of a longer example may use the names of :func:`_namespace`: ``sam``
(``samplm_lite``), ``predictor`` (a :class:`CustomSamPredictor` on it with fresh adapters ``nose``,
``mouth`` and ``hair`` loaded, none active), ``image``, ``x``, ``y``, ``pts``, ``lbl`` and ``np``.
Bash blocks may only hold ``samplm`` commands; each runs through ``samplm.cli.main`` and must return 0.
"""

from __future__ import annotations

import re
import shlex
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_readme_examples import demo_run  # noqa: F401 (a fixture: the small demo run)

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LANGUAGES = ("bash", "python")
_FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_MARKER = re.compile(r"^<!-- docs-check: (?P<kind>run|slow|skip|covered)(?: \((?P<why>[^)]+)\))? -->$")


@dataclass(frozen=True)
class Block:
    """One fenced ``bash`` or ``python`` block: where it is, its code and the marker above it."""

    file: Path
    line: int
    lang: str
    body: str
    kind: str | None
    why: str | None

    @property
    def name(self) -> str:
        return f"{self.file.relative_to(ROOT).as_posix()}:{self.line}"


def doc_blocks(files: list[Path] = DOCS) -> list[Block]:
    """The ``bash`` and ``python`` blocks of ``files``, with the marker on the line above each."""
    blocks = []
    for file in files:
        text = file.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            if match["lang"] not in LANGUAGES:
                continue
            line = text.count("\n", 0, match.start()) + 1
            above = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1] if line > 1 else ""
            marker = _MARKER.match(above.strip()) if text[: match.start()].endswith("\n") else None
            blocks.append(
                Block(
                    file,
                    line,
                    match["lang"],
                    match["body"],
                    marker["kind"] if marker else None,
                    marker["why"] if marker else None,
                )
            )
    return blocks


BLOCKS = doc_blocks()


def _commands(script: str) -> list[list[str]]:
    """The commands of a bash block (``\\`` continuations joined, comments dropped)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [cmd for line in joined.splitlines() if (cmd := shlex.split(line, comments=True))]


def _selected(*kinds: str) -> list:
    return [pytest.param(b, id=b.name) for b in BLOCKS if b.kind in kinds]


# ---------------------------------------------------------------- the markers


def test_every_block_is_marked():
    unmarked = [b.name for b in BLOCKS if b.kind is None]
    assert not unmarked, (
        "code blocks without a '<!-- docs-check: run|slow|skip (why)|covered (test) -->' line right "
        f"above them (see CONTRIBUTING.md): {unmarked}"
    )


def test_markers_are_well_formed():
    assert len(BLOCKS) > 40 and {b.kind for b in BLOCKS} >= {"run", "slow", "skip", "covered"}
    for block in BLOCKS:
        if block.kind in ("skip", "covered"):
            assert block.why, f"{block.name}: '{block.kind}' needs its reason or test in parentheses"
        if block.kind == "covered":
            assert (ROOT / block.why).is_file(), f"{block.name}: no test module {block.why}"
        if block.kind in ("run", "slow") and block.lang == "bash":
            for cmd in _commands(block.body):
                assert cmd[0] == "samplm", f"{block.name}: only samplm commands run, not {cmd[0]}"
            assert "vit_" not in block.body, f"{block.name}: a real SAM cannot run here; skip it"


def test_readme_offline_variants_are_the_covered_blocks():
    from test_readme_examples import MARK

    covered = [b for b in BLOCKS if b.kind == "covered" and b.why == "tests/test_readme_examples.py"]
    variants = [b for b in BLOCKS if b.file == ROOT / "README.md" and b.body.startswith(MARK + "\n")]
    assert covered == variants


def test_markers_are_found(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "text\n\n<!-- docs-check: skip (needs vit_h) -->\n```bash\nsamplm demo\n```\n\n"
        "```python\nprint(1)\n```\n\n<!-- docs-check: run -->\n```text\nnot code\n```\n",
        encoding="utf-8",
    )
    found = [(b.line, b.lang, b.kind, b.why) for b in doc_blocks([page])]
    assert found == [(4, "bash", "skip", "needs vit_h"), (8, "python", None, None)]


# ---------------------------------------------------------------- running them


@pytest.fixture(scope="module")
def docs_workspace(demo_run, tmp_path_factory):  # noqa: F811 (the fixture imported above)
    """A working directory with what the examples name (see the module docstring)."""
    work = tmp_path_factory.mktemp("docs")
    shutil.copytree(demo_run / "runs" / "demo", work / "runs" / "demo")
    adapter = work / "runs" / "demo" / "train" / "adapter"
    for task in ("plates", "banner"):
        shutil.copytree(adapter, work / "runs" / task / "adapter")
    (work / "photos").mkdir()
    data = work / "runs" / "demo" / "data"
    for path in sorted((data / "images" / "banner").iterdir())[:3]:
        shutil.copy(path, work / "photos" / path.name)
    for kind in ("images", "masks"):
        (work / "refs" / kind).mkdir(parents=True)
        for path in sorted((data / kind / "banner").iterdir())[:2]:
            shutil.copy(path, work / "refs" / kind / path.name)
    return work


@pytest.fixture(scope="module")
def lite_sam():
    import torch

    from samplm.base import build_sam

    torch.set_num_threads(1)
    return build_sam("samplm_lite")


def _namespace(sam, workspace: Path) -> dict:
    from PIL import Image

    from samplm import AdapterConfig, CustomSamPredictor, PromptAdapter

    predictor = CustomSamPredictor(sam)
    for task in ("nose", "mouth", "hair"):
        predictor.load_adapter(PromptAdapter(AdapterConfig(task=task)), activate=False)  # none active
    image = np.asarray(Image.open(sorted((workspace / "photos").iterdir())[0]).convert("RGB"))
    x, y = image.shape[1] / 2, image.shape[0] / 2
    return {
        "__name__": "__main__",
        "np": np,
        "sam": sam,
        "CustomSamPredictor": CustomSamPredictor,
        "predictor": predictor,
        "image": image,
        "x": x,
        "y": y,
        "pts": np.array([[x, y]]),
        "lbl": np.array([1]),
    }


def _run(block: Block, workspace: Path, sam, monkeypatch, hub_env) -> None:
    monkeypatch.chdir(workspace)
    before = len(hub_env.requests)
    if block.lang == "python":
        with warnings.catch_warnings():
            warnings.filterwarnings("error", module="samplm")  # e.g. a fingerprint mismatch
            exec(compile(block.body, block.name, "exec"), _namespace(sam, workspace))
    else:
        from samplm.cli import main

        for cmd in _commands(block.body):
            assert main(cmd[1:]) == 0, f"{block.name}: {' '.join(cmd)}"
    assert len(hub_env.requests) == before, f"{block.name} asked the Hub"


@pytest.mark.parametrize("block", _selected("run"))
def test_block_runs(block, docs_workspace, lite_sam, monkeypatch, hub_env):
    _run(block, docs_workspace, lite_sam, monkeypatch, hub_env)


@pytest.mark.slow
@pytest.mark.parametrize("block", _selected("slow"))
def test_slow_block_runs(block, docs_workspace, lite_sam, monkeypatch, hub_env):
    _run(block, docs_workspace, lite_sam, monkeypatch, hub_env)
