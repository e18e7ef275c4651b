"""README's offline variants run as written after ``samplm demo --out runs/demo``.

Each README example written for a real SAM (``vit_h``) is followed by a variant whose first line is
:data:`MARK`; it runs as is on ``samplm_lite`` with the adapter the demo trained. A small demo (five
images, two steps) stands in for ``samplm demo``, in a temporary working directory, so the paths the
variants use are the demo's real ones.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MARK = "# offline, after samplm demo (runs/demo)"
_BLOCK = re.compile(r"^```(?P<lang>\w+)\n(?P<body>.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks() -> list[tuple[str, str]]:
    return [(m["lang"], m["body"]) for m in _BLOCK.finditer(README.read_text(encoding="utf-8"))]


def offline_variants(lang: str) -> list[str]:
    """README's offline variants in ``lang`` (``python`` or ``bash``), in order."""
    return [body for kind, body in _blocks() if kind == lang and body.startswith(MARK + "\n")]


def _commands(script: str) -> list[list[str]]:
    """The commands of a bash variant (comments dropped, ``\\`` continuations joined)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [shlex.split(line) for line in joined.splitlines() if line.strip() and not line.startswith("#")]


def test_every_vit_h_example_has_an_offline_variant():
    blocks = _blocks()
    needing = [i for i, (kind, body) in enumerate(blocks) if "vit_h" in body and kind in ("python", "bash")]
    assert needing, "README has no vit_h example any more: update this test"
    for i in needing:
        following = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        assert following[1].startswith(MARK + "\n"), f"no offline variant after:\n{blocks[i][1]}"
    assert len(offline_variants("python")) == 2


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """A working directory holding a small ``samplm demo`` run at ``runs/demo``."""
    import torch

    from samplm import PromptAdapter
    from samplm.demo import run_demo

    torch.set_num_threads(1)
    workdir = tmp_path_factory.mktemp("readme")
    result = run_demo(workdir / "runs" / "demo", images=5, steps=8, batch_size=2, visuals=0, progress=False)
    assert result.adapter_dir == workdir / "runs" / "demo" / "train" / "adapter"  # README's path
    selected = PromptAdapter.load(result.adapter_dir).config.metadata["metrics"]["selected"]
    assert selected == "trained", f"the demo exported {selected}; the examples refine with a trained PMM"
    return workdir


def test_python_variants_run_as_written(demo_run, monkeypatch, capsys, hub_env):
    monkeypatch.chdir(demo_run)
    before = len(hub_env.requests)
    for i, code in enumerate(offline_variants("python")):
        with warnings.catch_warnings():
            warnings.filterwarnings("error", module="samplm")  # e.g. a fingerprint mismatch
            exec(compile(code, f"README.md offline python variant {i}", "exec"), {"__name__": "__main__"})
    assert len(hub_env.requests) == before  # nothing asked of the Hub
    out = capsys.readouterr().out
    assert "['banner', 'fresh']" in out and (demo_run / "adapters" / "banner").is_dir()
    assert out.rstrip().endswith("banner")


@pytest.mark.slow
def test_bash_variants_run_as_written(demo_run):
    """Every ``samplm`` command of the bash variants, run in the demo's directory (``samplm train`` is
    cut to two steps; it is otherwise as written)."""
    commands = [cmd for script in offline_variants("bash") for cmd in _commands(script)]
    assert {cmd[1] for cmd in commands} == {"train", "eval", "segment", "export"}
    cli = [sys.executable, "-c", "import sys; from samplm.cli import main; sys.exit(main())"]
    for cmd in commands:
        assert cmd[0] == "samplm"
        extra = ["--steps", "2"] if cmd[1] == "train" else []
        result = subprocess.run(
            [*cli, *cmd[1:], *extra], cwd=demo_run, capture_output=True, text=True, timeout=900, check=False
        )
        assert result.returncode == 0, f"{shlex.join(cmd)}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    assert (demo_run / "runs" / "banner" / "adapter").is_dir()
    assert (demo_run / "runs" / "demo" / "banner.onnx").is_file()
