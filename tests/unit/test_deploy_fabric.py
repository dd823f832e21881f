"""The Fabric items, loaded and published offline by fabric-cicd itself: a dummy credential, the
network blocked, Fabric's REST endpoint replaced by a recorder. For each environment of
parameter.yml, the payloads fabric-cicd would send hold the wheel (in the Environment), every Spark
Job Definition's main file (the same as jobs/) with arguments that parse and load valid settings,
the lakehouse and environment re-pointed to the deployed items, and every notebook with Fabric
parameters. fabric-cicd's repository parsing is internal API: the version is pinned in pyproject."""

from __future__ import annotations

import base64
import importlib.util
import json
import shlex
import socket
import time
import uuid
from pathlib import Path

import pytest
import yaml

from pipeline_lib.arguments import run_parser
from pipeline_lib.cli import build_parser
from pipeline_lib.config import load_settings
from tests.packaging import ROOT, build_wheel, wheel_entry_points

fabric_cicd = pytest.importorskip("fabric_cicd")
spec = importlib.util.spec_from_file_location("fabric_deploy", ROOT / "fabric" / "deploy.py")
deploy = importlib.util.module_from_spec(spec)
spec.loader.exec_module(deploy)

WORKSPACE = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa"
PARAMETERS = yaml.safe_load((ROOT / "fabric" / "parameter.yml").read_text())
ENVIRONMENTS = sorted(PARAMETERS["find_replace"][0]["replace_value"])


class DummyCredential:
    def get_token(self, *scopes, **kwargs):
        from azure.core.credentials import AccessToken

        return AccessToken("offline", int(time.time()) + 3600)


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    out = tmp_path_factory.mktemp("fabric")
    return deploy.stage(out, build_wheel(out / "dist"))


@pytest.fixture
def offline(monkeypatch):
    def refuse(self, address, *args, **kwargs):
        raise AssertionError(f"the Fabric items test tried to reach {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def publish(staged: Path, environment: str) -> dict[str, dict]:
    """Run fabric-cicd's publish_all_items against a recorder; the item definitions it would POST."""
    from azure.core.credentials import TokenCredential

    credential = type("Offline", (DummyCredential, TokenCredential), {})()
    workspace = fabric_cicd.FabricWorkspace(
        workspace_id=WORKSPACE,
        repository_directory=str(staged),
        item_type_in_scope=deploy.ITEM_TYPES,
        environment=environment,
        token_credential=credential,
    )
    sent: dict[str, dict] = {}

    def invoke(method, url, body="{}", files=None, **kwargs):
        reply = {"header": {}, "status_code": 200}
        if method == "GET" and url.rstrip("/").endswith(WORKSPACE):
            return {**reply, "body": {"capacityId": "capacity"}}
        if method == "GET" and "/lakehouses/" in url:
            return {**reply, "body": {"properties": {"sqlEndpointProperties": {"provisioningStatus": "Success"}}}}
        if method == "GET" and url.endswith("/environments/"):
            return {
                **reply,
                "body": {
                    "value": [
                        {"displayName": "xact_environment", "properties": {"publishDetails": {"state": "success"}}}
                    ]
                },
            }
        if method == "GET":
            return {**reply, "body": {"value": []}}
        item_id = str(uuid.uuid4())
        if isinstance(body, dict) and "displayName" in body:
            sent[body["displayName"]] = {"id": item_id, **body}
        return {**reply, "status_code": 201, "body": {"id": item_id}}

    workspace.endpoint.invoke = invoke
    fabric_cicd.publish_all_items(workspace)
    return sent


def parts(item: dict) -> dict[str, bytes]:
    definition = item.get("definition") or {"parts": []}
    return {p["path"]: base64.b64decode(p["payload"]) for p in definition["parts"]}


def test_the_repository_parses_as_fabric_cicd_expects(staged, offline):
    workspace = fabric_cicd.FabricWorkspace(
        workspace_id=WORKSPACE,
        repository_directory=str(staged),
        item_type_in_scope=deploy.ITEM_TYPES,
        environment=ENVIRONMENTS[0],
        token_credential=type("C", (DummyCredential,), {})(),
    )
    workspace._refresh_repository_items()
    found = {kind: sorted(items) for kind, items in workspace.repository_items.items()}
    assert found == {
        "Environment": ["xact_environment"],
        "Lakehouse": ["xact_lakehouse"],
        "Notebook": ["dlq_analysis", "ingest_overview", "pipeline_health"],
        "SparkJobDefinition": ["xact_dlq_replay", "xact_health", "xact_pipeline", "xact_tables_maintain"],
    }
    assert {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")} == set(found["Notebook"])  # every notebook


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_publishing_sends_the_wheel_the_main_files_and_arguments_that_load(staged, offline, environment):
    sent = publish(staged, environment)
    assert set(sent) >= {
        "xact_lakehouse",
        "xact_environment",
        "xact_pipeline",
        "xact_tables_maintain",
        "xact_dlq_replay",
        "xact_health",
        "dlq_analysis",
        "pipeline_health",
        "ingest_overview",
    }

    ((wheel_path, wheel_bytes),) = [(p, b) for p, b in parts(sent["xact_environment"]).items() if p.endswith(".whl")]
    assert wheel_path.startswith("Libraries/CustomLibraries/xact_pipeline-")
    local = staged.parent / "check.whl"
    local.write_bytes(wheel_bytes)
    assert "xact-run" in wheel_entry_points(local)

    for job in ("xact_pipeline", "xact_tables_maintain", "xact_dlq_replay", "xact_health"):
        files = parts(sent[job])
        spec = json.loads(files["SparkJobDefinitionV1.json"])
        main = spec["executableFile"]
        assert files[f"Main/{main}"] == (ROOT / "jobs" / main).read_bytes()  # the thin main file, unchanged
        assert spec["defaultLakehouseArtifactId"] == sent["xact_lakehouse"]["id"]  # re-pointed per workspace
        assert spec["environmentArtifactId"] == sent["xact_environment"]["id"]
        args = shlex.split(spec["commandLineArguments"])
        parsed = (run_parser() if main == "run.py" else build_parser()).parse_args(args)
        assert parsed.env == "fabric"
        if job == "xact_health":  # the scheduled task: its failed run is the alert
            assert parsed.command == "health" and parsed.task
        if job == "xact_dlq_replay":  # a stopped run's rows are finished by the next one
            assert parsed.command == "dlq" and parsed.resume_unfinished
        settings = load_settings("fabric", overrides=parsed.overrides)  # no placeholder left; every key known
        assert settings.kafka.connection_string.vault.startswith("https://") and environment.lower() in (
            settings.kafka.bootstrap_servers
        )

    for notebook in ("dlq_analysis", "pipeline_health", "ingest_overview"):
        content = json.loads(parts(sent[notebook])["notebook-content.ipynb"])
        (cell,) = [c for c in content["cells"] if "parameters" in c["metadata"].get("tags", [])]
        scope: dict = {}
        exec("".join(cell["source"]), scope)  # the parameters cell is plain assignments
        assert scope["env"] == "fabric"
        load_settings("fabric", overrides=scope["overrides"])
        dependencies = content["metadata"]["dependencies"]  # the wheel's environment, the lakehouse
        assert dependencies["environment"]["environmentId"] == sent["xact_environment"]["id"]
        assert dependencies["lakehouse"]["default_lakehouse"] == sent["xact_lakehouse"]["id"]
        assert dependencies["environment"]["workspaceId"] == WORKSPACE


def test_staging_keeps_the_committed_tree_free_of_wheels_and_copies():
    committed = [p.relative_to(ROOT).as_posix() for p in (ROOT / "fabric").rglob("*") if p.is_file()]
    assert not [p for p in committed if p.endswith((".whl", ".ipynb")) or "/Main/" in p], committed
