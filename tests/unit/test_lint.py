"""ruff and mypy stay clean on the package (style guide, principle 8); CI runs them through make test."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    subprocess.run(
        [sys.executable, "-m", "ruff", "check", "pipeline_lib", "jobs", "tests", "benchmarks", "fabric"],
        cwd=ROOT,
        check=True,
    )


def test_mypy_is_clean():
    subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, check=True)
