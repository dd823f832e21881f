"""The package's shape holds: pyspark only under pipeline_lib/spark/, no streaming job's run path
imports the local tooling, and every job has one entry point that spark-submit and the wheel share."""

from __future__ import annotations

import ast
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pipeline_lib

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "pipeline_lib"


def all_modules() -> list[str]:
    return sorted(m.name for m in pkgutil.walk_packages(pipeline_lib.__path__, "pipeline_lib."))


def imported_names(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_the_walk_sees_every_subpackage():
    modules = all_modules()
    for expected in (
        "pipeline_lib.events", "pipeline_lib.download.downloader", "pipeline_lib.upload.storage",
        "pipeline_lib.local.broker", "pipeline_lib.spark.tables",
    ):  # fmt: skip
        assert expected in modules


def test_no_module_outside_spark_imports_pyspark_or_delta_even_lazily():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.relative_to(PACKAGE).parts[0] == "spark":
            continue
        bad = {n for n in imported_names(path) if n.split(".")[0] in ("pyspark", "delta", "py4j")}
        if bad:
            offenders.append((str(path.relative_to(ROOT)), sorted(bad)))
    assert not offenders


def test_every_core_module_imports_without_pyspark():
    core = [m for m in all_modules() if not m.startswith("pipeline_lib.spark.")]
    code = (
        "import importlib, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'delta', 'py4j'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_streaming_job_run_path_imports_the_local_tooling():
    spark_files = (PACKAGE / "spark").rglob("*.py")
    offenders = [str(p) for p in spark_files if any(n.startswith("pipeline_lib.local") for n in imported_names(p))]
    assert not offenders
    code = (
        "import sys\n"
        "import pipeline_lib.spark.jobs, pipeline_lib.cli\n"
        "bad = sorted(m for m in sys.modules if m.startswith('pipeline_lib.local'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_each_job_has_a_console_script_and_a_spark_submit_file_calling_the_same_main():
    from pipeline_lib.config import STAGES
    from pipeline_lib.spark import jobs

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = project["project"]["scripts"]
    assert scripts["xact-pipeline"] == "pipeline_lib.cli:main"
    assert list(jobs.JOBS) == list(STAGES)
    for stage in (*STAGES, "run"):
        function = f"{stage.replace('-', '_')}_main"
        assert scripts[f"xact-{stage}"] == f"pipeline_lib.spark.jobs:{function}", f"xact-{stage}"
        assert callable(getattr(jobs, function))
        job_file = ROOT / "jobs" / f"{stage.replace('-', '_')}.py"
        assert f"from pipeline_lib.spark.jobs import {function} as main" in job_file.read_text()


def test_the_wheel_installs_no_top_level_jobs_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == ["pipeline_lib"]
    assert not (ROOT / "jobs" / "__init__.py").exists()
