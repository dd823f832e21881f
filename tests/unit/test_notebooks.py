"""Notebooks stay thin: a tagged parameters cell first, only pipeline_lib logic, no stored outputs."""

import ast
import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_thin_and_stored_without_outputs(path):
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"].get("tags", []), "first code cell must be tagged `parameters`"
    for c in cells:
        assert c["outputs"] == [] and c["execution_count"] is None, "store notebooks without outputs"
        tree = ast.parse("".join(c["source"]))
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.Lambda)) for n in ast.walk(tree)), (
            "business logic belongs in pipeline_lib, not in a notebook"
        )
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module.startswith("pipeline_lib"), node.module


def test_there_is_at_least_one_notebook():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_name_a_notebook_imports_exists(path):
    import importlib

    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                assert not missing, f"{path.name}: {node.module} has no {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_papermill_reads_every_parameter_without_a_warning(path, caplog):
    import logging

    import papermill

    with caplog.at_level(logging.WARNING):
        parameters = papermill.inspect_notebook(str(path))
    assert {"env", "overrides"} <= set(parameters)  # a comment with brackets once hid `overrides`
    assert [r.getMessage() for r in caplog.records if r.name.startswith("papermill")] == []


def test_a_topic_reading_cell_says_in_one_line_that_kafka_is_unreachable_and_returns_nothing(capsys):
    from pipeline_lib.config import load_settings
    from pipeline_lib.spark.dlq_report import peek_topic
    from pipeline_lib.spark.health_report import topic_offsets

    settings = load_settings("local", overrides=["kafka.bootstrap_servers=127.0.0.1:1"])
    assert peek_topic(settings, settings.topics.dlq.name).empty
    assert topic_offsets(settings).empty
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and all(
        line.startswith("topics not read: Kafka at 127.0.0.1:1 is not reachable") for line in lines
    )
