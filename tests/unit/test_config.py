"""The config loader: every environment loads, and every bad config fails naming key, file and form."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline_lib.config import ConfigError, delay_label, load_settings
from pipeline_lib.kafka_options import kafka_sink_options, kafka_source_options

CONF = Path(__file__).resolve().parents[2] / "conf"


def write_conf(tmp_path: Path, base_extra: str = "", overlay: str = "") -> Path:
    (tmp_path / "base.yaml").write_text((CONF / "base.yaml").read_text() + base_extra)
    (tmp_path / "local.yaml").write_text(overlay)
    return tmp_path


def test_local_environment_loads_with_production_retry_tiers():
    settings = load_settings("local")
    assert settings.environment == "local"
    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert settings.retry_topics == (
        "xact.downloads.pending.retry.5m",
        "xact.downloads.pending.retry.10m",
        "xact.downloads.pending.retry.20m",
        "xact.downloads.pending.retry.40m",
    )
    assert settings.retry.max_attempts == 5
    assert settings.topic_partitions()["xact.downloads.pending"] == 6
    assert len(settings.topic_partitions()) == 9


@pytest.mark.parametrize("env", ["fabric", "databricks"])
def test_cloud_overlays_refuse_to_start_with_placeholders(env):
    with pytest.raises(ConfigError) as err:
        load_settings(env)
    message = str(err.value)
    assert "placeholder" in message and f"{env}.yaml" in message and "--set" in message


@pytest.mark.parametrize("env", ["fabric", "databricks"])
def test_cloud_overlays_load_once_placeholders_are_filled(env):
    filled = [
        "kafka.bootstrap_servers=ns.servicebus.windows.net:9093",
        "storage.root=abfss://ws@onelake.dfs.fabric.microsoft.com/lh.Lakehouse",
        "storage.lake.onelake.workspace=ws",
        "storage.lake.onelake.lakehouse=lh",
        "download.cache_dir=/mnt/cache",
    ]
    if env == "fabric":
        filled.append("kafka.connection_string.vault=https://kv.vault.azure.net/")
    if env == "databricks":
        filled += [
            "kafka.oauth.token_endpoint_url=https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "kafka.oauth.scope=https://ns.servicebus.windows.net/.default",
        ]
    settings = load_settings(env, overrides=filled)
    assert settings.kafka.security_protocol == "SASL_SSL"
    assert settings.url_policy.allowed_schemes == ("https",)
    assert (
        settings.table_path("events") == "abfss://ws@onelake.dfs.fabric.microsoft.com/lh.Lakehouse/Tables/xact_events"
    )


def test_missing_required_key_names_key_and_files(tmp_path):
    base = (CONF / "base.yaml").read_text().replace("  bootstrap_servers: 127.0.0.1:9092\n", "")
    (tmp_path / "base.yaml").write_text(base)
    (tmp_path / "local.yaml").write_text("")
    with pytest.raises(ConfigError) as err:
        load_settings("local", conf_dir=tmp_path)
    assert "kafka.bootstrap_servers: is required but not set" in str(err.value)
    assert "base.yaml" in str(err.value)


def test_wrong_type_names_key_file_and_value(tmp_path):
    conf = write_conf(tmp_path, overlay="download:\n  concurrency: lots\n")
    with pytest.raises(ConfigError) as err:
        load_settings("local", conf_dir=conf)
    message = str(err.value)
    assert "download.concurrency" in message and "local.yaml" in message and "'lots'" in message


def test_unknown_key_is_reported_as_a_typo(tmp_path):
    conf = write_conf(tmp_path, overlay="kafka:\n  bootstrap_server: 127.0.0.1:9092\n")
    with pytest.raises(ConfigError) as err:
        load_settings("local", conf_dir=conf)
    assert "kafka.bootstrap_server: is not a known setting (a typo?)" in str(err.value)


def test_invalid_yaml_names_the_file(tmp_path):
    conf = write_conf(tmp_path, overlay="kafka: [unclosed\n")
    with pytest.raises(ConfigError, match=r"local\.yaml: not valid YAML"):
        load_settings("local", conf_dir=conf)


def test_unknown_environment_lists_the_choices():
    with pytest.raises(ConfigError, match="choose one of local, fabric, databricks"):
        load_settings("staging")


def test_retry_delays_must_increase(tmp_path):
    with pytest.raises(ConfigError, match=r"retry\.delays_seconds: delays must be strictly increasing"):
        load_settings("local", overrides=["retry.delays_seconds=[600, 300]"])


def test_overrides_win_and_are_typed():
    settings = load_settings("local", overrides=["download.concurrency=3", "retry.delays_seconds=[1,2]"])
    assert settings.download.concurrency == 3
    assert settings.retry_topics == ("xact.downloads.pending.retry.1s", "xact.downloads.pending.retry.2s")
    assert settings.retry.max_attempts == 3


def test_malformed_override_shows_the_expected_form():
    with pytest.raises(ConfigError, match="expected the form key.path=value"):
        load_settings("local", overrides=["download.concurrency"])


def test_sasl_without_mechanism_is_rejected():
    with pytest.raises(ConfigError, match="SASL_SSL needs sasl_mechanism"):
        load_settings("local", overrides=["kafka.security_protocol=SASL_SSL"])


def test_onelake_backend_needs_workspace_and_lakehouse():
    with pytest.raises(ConfigError, match="backend onelake needs onelake.workspace and onelake.lakehouse"):
        load_settings("local", overrides=["storage.lake.backend=onelake"])


def test_relative_paths_resolve_under_storage_root(tmp_path):
    settings = load_settings("local", overrides=[f"storage.root={tmp_path}"])
    assert settings.table_path("events") == f"{tmp_path}/tables/xact_events"
    assert settings.checkpoint("ingest") == f"{tmp_path}/checkpoints/ingest"


@pytest.mark.parametrize(("seconds", "label"), [(300, "5m"), (2400, "40m"), (3600, "1h"), (7, "7s"), (90, "90s")])
def test_delay_labels(seconds, label):
    assert delay_label(seconds) == label


def test_cache_dir_resolves_under_the_storage_root_and_a_uri_is_refused(tmp_path):
    settings = load_settings("local", overrides={"storage": {"root": str(tmp_path)}})
    assert settings.cache_dir == f"{tmp_path}/cache"
    on_lake = load_settings(
        "local", overrides={"storage": {"root": "abfss://ws@onelake.dfs.fabric.microsoft.com/lh.Lakehouse"}}
    )
    with pytest.raises(ConfigError, match=r"download.cache_dir resolves to .*abfss.* give an absolute mounted path"):
        _ = on_lake.cache_dir


def test_allowed_networks_must_be_cidrs():
    with pytest.raises(ConfigError, match=r"url_policy.allowed_networks\[0\]: is not a CIDR network"):
        load_settings("local", overrides={"url_policy": {"allowed_networks": ["localhost"]}})


def test_spark_sources_and_sinks_get_their_own_client_tuning_on_top_of_the_connection():
    settings = load_settings("local", overrides={"kafka": {"consumer_options": {"fetch.max.wait.ms": 20}}})
    source, sink = kafka_source_options(settings.kafka), kafka_sink_options(settings.kafka)
    assert source["kafka.fetch.max.wait.ms"] == "20" and "kafka.linger.ms" not in source
    assert sink["kafka.linger.ms"] == "20" and "kafka.fetch.max.wait.ms" not in sink
    assert source["kafka.bootstrap.servers"] == sink["kafka.bootstrap.servers"] == settings.kafka.bootstrap_servers
    # The shipped default: no half-second stall at the start of every micro-batch.
    assert load_settings("local").kafka.consumer_options["fetch.max.wait.ms"] == 50


def _fields(model, prefix=""):
    from pydantic import BaseModel

    for name, field in model.model_fields.items():
        yield prefix + name, field
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _fields(annotation, f"{prefix}{name}.")


def _leaf_keys(tree, prefix=""):
    for key, value in tree.items():
        yield prefix + key
        if isinstance(value, dict) and key not in (
            "producer_options",
            "consumer_options",
            "content_types",
            "extra_conf",
        ):
            yield from _leaf_keys(value, f"{prefix}{key}.")


def test_every_default_lives_in_base_yaml_and_nowhere_else():
    """One source of truth per default: the models declare no default, base.yaml sets every key."""
    import yaml
    from pydantic_core import PydanticUndefined

    from pipeline_lib.config import Settings, default_conf_dir

    base = yaml.safe_load((default_conf_dir() / "base.yaml").read_text())
    in_base = set(_leaf_keys(base))
    fields = dict(_fields(Settings))
    with_python_default = [
        key for key, f in fields.items() if f.default is not PydanticUndefined or f.default_factory is not None
    ]
    assert with_python_default == [], "set these defaults in conf/base.yaml, not in config.py"
    missing = sorted(set(fields) - in_base - {"environment"})
    assert missing == [], "conf/base.yaml must document every setting"
    assert in_base <= set(fields)


def test_each_stage_triggers_on_its_own_interval_and_the_scheduler_on_a_fraction_of_its_first_tier():
    settings = load_settings("local")  # trigger 2 s, tiers 5/10/20/40 min
    assert settings.trigger_seconds("ingest") == settings.streaming.trigger_interval_seconds == 2
    assert settings.trigger_seconds("retry-scheduler") == 15  # 300 s / 20
    long_tiers = load_settings("local", overrides={"retry": {"delays_seconds": [3600]}})
    assert long_tiers.trigger_seconds("retry-scheduler") == 30  # capped
    short_tiers = load_settings("local", overrides={"retry": {"delays_seconds": [1, 2]}})
    assert short_tiers.trigger_seconds("retry-scheduler") == 2  # never below the pipeline's trigger
    chosen = load_settings(
        "local", overrides={"streaming": {"stage_trigger_seconds": {"retry-scheduler": 4, "results": 0.5}}}
    )
    assert chosen.trigger_seconds("retry-scheduler") == 4
    assert chosen.trigger_seconds("results") == 0.5
    assert chosen.trigger_seconds("upload") == 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"uplaod": 1}, "unknown stage 'uplaod'"),
        ({"results": 0}, "0.01 to 86400 seconds"),
        ({"results": float("inf")}, "got inf"),
    ],
)
def test_a_wrong_stage_trigger_names_the_stage_and_the_fix(value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings("local", overrides={"streaming": {"stage_trigger_seconds": value}})
    assert "stage_trigger_seconds" in str(caught.value)
