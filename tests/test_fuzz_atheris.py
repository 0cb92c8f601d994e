"""A bounded coverage-guided fuzz run (atheris) of every parser of outside input."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_atheris_finds_no_crash(tmp_path: Path) -> None:
    """50,000 fuzzed frames, requests and convenience topics: no exception escapes."""
    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "fuzz" / "seeds", corpus)
    run = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "fuzz_inputs.py"), str(corpus), "-runs=50000"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Done 50000 runs" in run.stderr
