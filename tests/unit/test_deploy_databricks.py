"""The Databricks bundle, checked offline: every task's entry point is a console script of the
built wheel and its arguments parse; every `--set` key is a setting, and each target's values load
into valid settings (no placeholder left); every referenced file exists; dev and prod differ only
in variables. No Databricks CLI or workspace is involved (none is reachable from the tests)."""

from __future__ import annotations

import glob
import re
from pathlib import Path

import pytest
import yaml

from pipeline_lib.arguments import job_parser, run_parser
from pipeline_lib.cli import build_parser
from pipeline_lib.config import load_settings
from tests.packaging import ROOT, build_wheel, wheel_distribution_name, wheel_entry_points

VAR = re.compile(r"\$\{var\.([a-z_]+)\}")


def bundle() -> tuple[dict, list[tuple[Path, dict]]]:
    root = yaml.safe_load((ROOT / "databricks.yml").read_text())
    resources = [
        (Path(p), yaml.safe_load(Path(p).read_text()))
        for pattern in root["include"]
        for p in sorted(glob.glob(str(ROOT / pattern)))
    ]
    return root, resources


def tasks() -> list[tuple[Path, str, dict]]:
    _, resources = bundle()
    return [
        (path, name, task)
        for path, doc in resources
        for name, job in doc["resources"]["jobs"].items()
        for task in job["tasks"]
    ]


def substitute(value, variables: dict[str, object]):
    if isinstance(value, str):
        return VAR.sub(lambda m: str(variables[m.group(1)]), value)
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    return value


PLACEHOLDER = re.compile(r"<([a-z][a-z0-9_-]*)>")


def target_variables(target: str, *, filled: bool = True) -> dict[str, object]:
    """The target's variable values; `filled`: its <placeholders> replaced as a user would."""
    root, _ = bundle()
    values = {name: spec.get("default") for name, spec in root["variables"].items()}
    values.update(root["targets"][target].get("variables", {}))
    missing = [n for n, v in values.items() if v is None]
    assert not missing, f"target {target} leaves variables without a value: {missing}"
    if filled:
        values = {
            n: PLACEHOLDER.sub(lambda m: m.group(1).replace("-", ""), v) if isinstance(v, str) else v
            for n, v in values.items()
        }
    return values


def sets(parameters: list[str]) -> list[str]:
    return [parameters[i + 1] for i, p in enumerate(parameters) if p == "--set"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build_wheel(tmp_path_factory.mktemp("dist"))


def test_the_bundle_has_a_streaming_job_and_scheduled_replay_maintenance_and_health():
    _, resources = bundle()
    jobs = {name: job for _, doc in resources for name, job in doc["resources"]["jobs"].items()}
    streaming = [j for j in jobs.values() if "continuous" in j]
    assert [t["python_wheel_task"]["entry_point"] for j in streaming for t in j["tasks"]] == ["xact-run"]
    scheduled = {t["python_wheel_task"]["parameters"][0] for j in jobs.values() if "schedule" in j for t in j["tasks"]}
    assert scheduled == {"dlq", "tables", "health"}
    (health,) = [j for j in jobs.values() if j["tasks"][0]["python_wheel_task"]["parameters"][0] == "health"]
    # The task's exit code is the alert: it runs as the scheduled task, and a failed run notifies.
    assert health["tasks"][0]["python_wheel_task"]["parameters"][:2] == ["health", "--task"]
    assert health["email_notifications"]["on_failure"] == "${var.alert_emails}"
    # A replay run that timed out (and is retried, or runs tomorrow) leaves rows `replaying`: finish them.
    (replay,) = [j for j in jobs.values() if j["tasks"][0]["python_wheel_task"]["parameters"][0] == "dlq"]
    assert replay["tasks"][0]["python_wheel_task"]["parameters"][:3] == ["dlq", "replay", "--resume-unfinished"]
    for job in jobs.values():
        if "schedule" in job:
            assert all(t["max_retries"] >= 1 for t in job["tasks"])  # job-level retries for the batch jobs
        assert job["max_concurrent_runs"] == 1


def test_every_task_runs_a_console_script_of_the_built_wheel_with_arguments_it_accepts(wheel):
    scripts = wheel_entry_points(wheel)
    for path, name, task in tasks():
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == wheel_distribution_name(wheel), name
        entry = wheel_task["entry_point"]
        assert entry in scripts, f"{path.name}: {name} names entry point {entry}, not in the wheel"
        params = substitute(wheel_task["parameters"], target_variables("prod"))
        parser = (
            build_parser()
            if entry == "xact-pipeline"
            else run_parser()
            if entry == "xact-run"
            else (job_parser(entry.removeprefix("xact-")))
        )
        args = parser.parse_args(params)
        assert args.env == "databricks"
        assert [lib["whl"] for lib in task["libraries"]] == ["../dist/*.whl"]


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_each_targets_arguments_load_valid_settings(target):
    variables = target_variables(target)
    for _, name, task in tasks():
        params = substitute(task["python_wheel_task"]["parameters"], variables)
        settings = load_settings("databricks", overrides=sets(params))  # no placeholder left, every key known
        assert settings.kafka.bootstrap_servers == f"{variables['eventhubs_namespace']}.servicebus.windows.net:9093"
        assert settings.kafka.oauth.client_secret.vault == variables["secret_scope"]
        assert settings.download.cache_dir == variables["cache_dir"], name


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_a_target_left_unfilled_stops_at_start_naming_the_setting(target):
    from pipeline_lib.config import ConfigError

    params = substitute(tasks()[0][2]["python_wheel_task"]["parameters"], target_variables(target, filled=False))
    with pytest.raises(ConfigError, match="still holds the placeholder"):
        load_settings("databricks", overrides=sets(params))


def test_every_set_key_is_a_setting_and_every_job_passes_the_same_ones():
    from pipeline_lib.config import Settings

    keys = {name: [s.split("=", 1)[0] for s in sets(t["python_wheel_task"]["parameters"])] for _, name, t in tasks()}
    assert len({tuple(k) for k in keys.values()}) == 1, keys  # one configuration for every job
    for key in next(iter(keys.values())):
        model = Settings
        for part in key.split("."):
            assert part in model.model_fields, f"--set {key}: {part!r} is not a setting"
            model = model.model_fields[part].annotation


def test_referenced_files_exist_and_targets_differ_only_in_variables():
    root, resources = bundle()
    assert resources, "include matched no resource file"
    for artifact in root["artifacts"].values():
        assert (ROOT / artifact["path"] / "pyproject.toml").is_file()
        assert artifact["build"] == "python -m build --wheel"  # writes dist/*.whl, which the tasks install
    for path, _, task in tasks():
        for lib in task["libraries"]:
            assert (path.parent / lib["whl"]).parent.resolve() == ROOT / "dist"
    for name, target in root["targets"].items():
        assert set(target) <= {"default", "variables"}, f"target {name} sets more than variables: {set(target)}"
    used = {m for _, doc in resources for m in VAR.findall(yaml.safe_dump(doc))}
    used |= set(VAR.findall(yaml.safe_dump({k: v for k, v in root.items() if k != "variables"})))
    assert used <= set(root["variables"]), used - set(root["variables"])
