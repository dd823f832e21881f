"""Build the project's wheel offline (as `python -m build --wheel` does, without fetching a build
backend) and read what it declares: for the wheel test and the deploy-item tests."""

from __future__ import annotations

import configparser
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def build_wheel(out: Path) -> Path:
    done = subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    (wheel,) = out.glob("xact_pipeline-*.whl")
    return wheel


def wheel_entry_points(wheel: Path) -> dict[str, str]:
    """console_scripts of the wheel: name -> module:function."""
    with zipfile.ZipFile(wheel) as whl:
        text = whl.read(next(n for n in whl.namelist() if n.endswith(".dist-info/entry_points.txt"))).decode()
    parser = configparser.ConfigParser()
    parser.optionxform = str  # keep names as written
    parser.read_string(text)
    return dict(parser["console_scripts"])


def wheel_distribution_name(wheel: Path) -> str:
    return wheel.name.split("-")[0]
