"""The pure-Python core never imports pyspark (design: only pipeline_lib.spark wires Spark)."""

import pkgutil
import subprocess
import sys

import pipeline_lib


def test_core_modules_import_without_pyspark():
    core = [f"pipeline_lib.{m.name}" for m in pkgutil.iter_modules(pipeline_lib.__path__) if m.name not in ("spark",)]
    assert "pipeline_lib.events" in core and "pipeline_lib.cli" in core
    code = (
        "import importlib, sys\n"
        f"for name in {core!r}: importlib.import_module(name)\n"
        "bad = sorted(m for m in sys.modules if m == 'pyspark' or m.startswith('pyspark.'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
