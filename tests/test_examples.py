"""The runnable examples run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_hot_swap_example_runs():
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hot_swap.py")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "loaded adapter 'banner' from disk" in result.stdout
    assert "adapters loaded: ['banner', 'text'], active: 'text'" in result.stdout
