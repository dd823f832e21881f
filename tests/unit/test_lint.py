"""ruff and mypy stay clean on the package (style guide, principle 8), and the import contracts in
pyproject.toml's [tool.importlinter] hold (lint-imports); CI runs them through make test. Each
contract is shown to break on a copy of the package with one violation planted in it."""

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_ruff_is_clean():
    subprocess.run(
        [sys.executable, "-m", "ruff", "check", "pipeline_lib", "jobs", "tests", "benchmarks", "fabric"],
        cwd=ROOT,
        check=True,
    )


def test_the_code_is_ruff_formatted():
    # `ruff format` is the one layout; `# fmt: skip` only where a flat data list reads better filled.
    subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "pipeline_lib", "jobs", "tests", "benchmarks", "fabric"],
        cwd=ROOT,
        check=True,
    )


def test_mypy_is_clean():
    subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, check=True)


LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [LINT_IMPORTS, "--no-cache", "--config", str(ROOT / "pyproject.toml")]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_import_contracts_hold():
    run = lint_imports(ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 broken" in run.stdout


# (file to plant the import in, the import, the id of the contract it breaks)
VIOLATIONS = [
    ("ids.py", "import pipeline_lib.spark.tables", "layers"),  # the core -> spark
    ("routing.py", "import pipeline_lib.download.downloader", "layers"),  # the core -> a stage
    ("spark/session.py", "import pipeline_lib.local.broker", "layers"),  # a job's run path -> the local tooling
    ("spark/tables.py", "import pipeline_lib.cli", "layers"),  # spark -> the CLI
    ("spark/tables.py", "import pipeline_lib.spark.jobs", "spark-entry"),  # a query's helper -> the entry module
    ("ids.py", "import pyspark", "pyspark-only-in-spark"),
    ("download/deadline.py", "import pipeline_lib.download.http_fetch", "no-cycles"),  # a cycle inside a package
]
CONTRACTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
CONTRACT_NAMES = {c["id"]: c["name"] for c in CONTRACTS}


@pytest.mark.parametrize(("where", "line", "contract"), VIOLATIONS, ids=[f"{w}:{c}" for w, _, c in VIOLATIONS])
def test_each_import_contract_breaks_on_a_planted_violation(tmp_path, where, line, contract):
    copy = tmp_path / "pipeline_lib"
    shutil.copytree(ROOT / "pipeline_lib", copy, ignore=shutil.ignore_patterns("__pycache__"))
    planted = copy / where
    planted.write_text(planted.read_text() + f"\n{line}  # planted by the test\n")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    run = lint_imports(tmp_path, env)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"{CONTRACT_NAMES[contract]} BROKEN" in " ".join(run.stdout.split()), run.stdout
