"""What the import contracts (pyproject.toml [tool.importlinter], run by tests/unit/test_lint.py)
cannot say: the core really imports without pyspark, a job's run path loads no local tooling at
run time, the pyspark contract names every module outside spark/, no import hides in importlib,
and every job has one entry point that spark-submit and the wheel share."""

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


def test_the_walk_sees_every_subpackage():
    modules = all_modules()
    for expected in (
        "pipeline_lib.events",
        "pipeline_lib.download.downloader",
        "pipeline_lib.upload.storage",
        "pipeline_lib.local.broker",
        "pipeline_lib.spark.tables",
    ):
        assert expected in modules


def test_the_pyspark_contract_names_every_module_outside_spark():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    (pyspark,) = [c for c in contracts if c["id"] == "pyspark-only-in-spark"]
    top_level = {m.split(".")[1] for m in all_modules()} - {"spark"}
    assert {m.removeprefix("pipeline_lib.") for m in pyspark["source_modules"]} == top_level


def loaded_by_name(path: Path) -> list[str]:
    """Calls that load a module by a name the import contracts cannot see."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name in ("import_module", "__import__", "reload", "spec_from_file_location", "exec_module"):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    return found


def test_no_import_hides_from_the_contracts_but_the_configured_token_provider():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in loaded_by_name(path)]
    # storage.lake.onelake.token_provider names a user's own "module:function", loaded at run time.
    assert [hit.split(":")[0] for hit in found] == ["pipeline_lib/upload/storage.py"], found


def test_every_core_module_imports_without_pyspark():
    core = [m for m in all_modules() if not m.startswith("pipeline_lib.spark.")]
    code = (
        "import importlib, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'delta', 'py4j'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_streaming_job_run_path_loads_the_local_tooling():
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
