"""The code stays lint-clean (ruff) and type-clean (mypy): checked with the suite, reported by pytest."""

import os
import shutil
import subprocess
import sys

import pytest

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def tool(name):
    path = os.path.join(BIN, name)
    return path if os.path.exists(path) else shutil.which(name)


@pytest.mark.skipif(tool("ruff") is None, reason="ruff is not installed (pip install -e .[test])")
def test_ruff():
    r = subprocess.run([tool("ruff"), "check", "src", "tests", "bench"], cwd=TOP, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(tool("mypy") is None, reason="mypy is not installed (pip install -e .[test])")
def test_mypy():
    r = subprocess.run([tool("mypy"), "src"], cwd=TOP, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
