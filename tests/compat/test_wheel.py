"""The wheel, installed into a fresh venv on top of a platform that already has pyspark (and its
Delta, pandas and pyarrow), runs outside the repository.

The platform is the running interpreter's environment: `make test-compat` runs this in venvs with
Spark 3.5 + Delta 3.2 (Fabric Runtime 1.3) and Spark 4.0 + Delta 4.0 (Databricks 17.3 LTS), which
hold the wheel's dependencies but not the project. The fresh venv sees that environment through a
.pth file (the platform's packages), and installing the wheel there with `--no-index` proves the
wheel asks for nothing the platform lacks and replaces nothing it has. Offline throughout.
"""

from __future__ import annotations

import importlib.metadata
import json
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.packaging import ROOT, build_wheel, wheel_entry_points

JOBS = ("ingest", "download", "upload", "retry-scheduler", "results", "dlq-table", "run")


def _project_installed() -> bool:
    try:
        importlib.metadata.distribution("xact-pipeline")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_project_installed(), reason="runs where the project is not installed: make test-compat"),
]


def run(cmd: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("dist"))


def test_the_wheel_holds_the_package_its_settings_and_one_entry_point_per_job(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = whl.namelist()
        meta = whl.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert {n.split("/")[0] for n in names} == {
        "pipeline_lib",
        wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1] + ".dist-info",
    }
    assert not any(n.startswith("jobs/") for n in names)  # jobs/*.py are spark-submit files, not a package
    for conf in ("base.yaml", "local.yaml", "fabric.yaml", "databricks.yaml"):
        assert f"pipeline_lib/_conf/{conf}" in names
    assert "pipeline_lib/spark/dlq_report.py" in names  # the notebooks' helpers
    entry_points = wheel_entry_points(wheel)
    assert entry_points["xact-pipeline"] == "pipeline_lib.cli:main"
    assert {f"xact-{job}" for job in JOBS} <= set(entry_points)
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    platform_provided = [
        r
        for r in requires
        if r.split(";")[0].split("[")[0].strip().lower().startswith(("pyspark", "delta-spark", "pandas", "pyarrow"))
    ]
    # The platform's Spark, Delta, pandas and pyarrow are never pinned outside the [local] extra.
    assert all("extra ==" in r or r.replace(" ", "").startswith("pandas>=") for r in platform_provided), requires
    assert not any("<" in r or "==" in r for r in platform_provided if "extra ==" not in r), requires


def test_the_wheel_installs_on_the_platform_pyspark_and_runs_outside_the_repository(wheel, tmp_path):
    import pyspark

    venv = tmp_path / "venv"
    created = run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert created.returncode == 0, created.stderr
    python = venv / "bin" / "python"
    (purelib,) = [
        Path(p)
        for p in json.loads(
            run([str(python), "-c", "import json, site; print(json.dumps(site.getsitepackages()))"], tmp_path).stdout
        )
    ]
    (purelib / "platform.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # the preinstalled runtime

    installed = run([str(python), "-m", "pip", "install", "--no-index", "--quiet", str(wheel)], tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    check = run([str(python), "-m", "pip", "check"], tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    probe = run(
        [
            str(python),
            "-c",
            "import pyspark, pipeline_lib, pipeline_lib.spark.dlq_report; "
            "print(pyspark.__version__, pipeline_lib.__file__)",
        ],
        tmp_path,
    )
    assert probe.returncode == 0, probe.stderr
    version, where = probe.stdout.split()
    assert version == pyspark.__version__  # the platform's pyspark, untouched
    assert Path(where).is_relative_to(venv) and not Path(where).is_relative_to(ROOT)

    bin_dir = venv / "bin"
    shown = run([str(bin_dir / "xact-pipeline"), "config", "show"], tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "xact.downloads.pending.retry.5m" in shown.stdout
    unfilled = run([str(bin_dir / "xact-pipeline"), "config", "show", "--env", "fabric"], tmp_path)
    assert unfilled.returncode == 2 and unfilled.stderr.startswith("error: ") and "placeholder" in unfilled.stderr
    assert "Traceback" not in unfilled.stderr
    for job in JOBS:
        helped = run([str(bin_dir / f"xact-{job}"), "--help"], tmp_path)
        assert helped.returncode == 0 and "--env" in helped.stdout, (job, helped.stderr)
