"""Kafka client options for the Event Hubs Kafka endpoint (PLAIN and Entra OAUTHBEARER, plain and
Databricks-shaded Java classes, Event Hubs' producer limits) and secret references (environment,
Databricks secret scope, Fabric Key Vault), without a live call. No secret reaches a printable form
or an error message."""

from __future__ import annotations

import sys
import types

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.config import ConfigError, SecretRef, load_settings
from pipeline_lib.kafka_options import (
    MASK,
    java_client_options,
    kafka_sink_options,
    kafka_source_options,
    librdkafka_config,
    printable,
)
from pipeline_lib.secrets import describe, read_secret

CS = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=k;SharedAccessKey=S3CRET"
EH = "ns.servicebus.windows.net:9093"
OAUTH = [
    "kafka.security_protocol=SASL_SSL",
    "kafka.sasl_mechanism=OAUTHBEARER",
    "kafka.oauth.token_endpoint_url=https://login.microsoftonline.com/t/oauth2/v2.0/token",
    "kafka.oauth.scope=https://ns.servicebus.windows.net/.default",
]


def platform_settings(env: str, *extra: str):
    """A platform overlay with its placeholders filled, as a user's --set would."""
    vault = ["kafka.connection_string.vault=https://kv.vault.azure.net/"] if env == "fabric" else []
    return load_settings(
        env,
        overrides=[
            *vault,
            f"kafka.bootstrap_servers={EH}",
            "kafka.oauth.token_endpoint_url=https://login.microsoftonline.com/t/oauth2/v2.0/token",
            "kafka.oauth.scope=https://ns.servicebus.windows.net/.default",
            "storage.root=abfss://ws@onelake.dfs.fabric.microsoft.com/lh.Lakehouse",
            "storage.lake.onelake.workspace=ws",
            "storage.lake.onelake.lakehouse=lh",
            "download.cache_dir=/shared/cache",
            *extra,
        ],
    )


@pytest.fixture
def fake_dbutils(monkeypatch):
    """Databricks' dbutils as databricks.sdk.runtime provides it in a wheel task (a stub collaborator)."""
    store = {
        ("xact", "eventhubs-connection-string"): CS,
        ("xact", "eventhubs-client-id"): "cid",
        ("xact", "eventhubs-client-secret"): "csecret",
    }
    secrets = types.SimpleNamespace(get=lambda scope, key: store[(scope, key)])
    runtime = types.ModuleType("databricks.sdk.runtime")
    runtime.dbutils = types.SimpleNamespace(secrets=secrets)
    for name in ("databricks", "databricks.sdk"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "databricks.sdk.runtime", runtime)
    return store


@pytest.fixture
def fake_notebookutils(monkeypatch):
    """Fabric's notebookutils.credentials.getSecret(vault_url, name) (a stub collaborator)."""
    calls = []

    def get_secret(vault_url, name):
        calls.append((vault_url, name))
        return {"eventhubs-connection-string": CS}[name]

    module = types.ModuleType("notebookutils")
    module.credentials = types.SimpleNamespace(getSecret=get_secret)
    monkeypatch.setitem(sys.modules, "notebookutils", module)
    return calls


def test_plain_reads_the_connection_string_from_the_environment(monkeypatch):
    s = load_settings("local", overrides=["kafka.security_protocol=SASL_SSL", "kafka.sasl_mechanism=PLAIN"])
    monkeypatch.delenv("EVENTHUBS_CONNECTION_STRING", raising=False)
    with pytest.raises(ConfigError, match="environment variable EVENTHUBS_CONNECTION_STRING") as err:
        java_client_options(s.kafka)
    assert "kafka.connection_string" in str(err.value) and "vault" in str(err.value)

    monkeypatch.setenv("EVENTHUBS_CONNECTION_STRING", CS)
    java = java_client_options(s.kafka)
    assert java["kafka.sasl.mechanism"] == "PLAIN"
    assert java["kafka.sasl.jaas.config"] == (
        f'org.apache.kafka.common.security.plain.PlainLoginModule required username="$ConnectionString" '
        f'password="{CS}";'
    )
    rd = librdkafka_config(s.kafka)
    assert rd["sasl.username"] == "$ConnectionString" and rd["sasl.password"] == CS


def test_oauthbearer_for_the_spark_and_the_confluent_clients(monkeypatch):
    monkeypatch.setenv("AZURE_CLIENT_ID", "cid")
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "csecret")
    s = load_settings("local", overrides=OAUTH)
    java = java_client_options(s.kafka)
    assert java["kafka.sasl.mechanism"] == "OAUTHBEARER"
    assert java["kafka.sasl.oauthbearer.token.endpoint.url"].startswith("https://login.microsoftonline.com/")
    assert java["kafka.sasl.login.callback.handler.class"] == (
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler"
    )
    assert java["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required clientId="cid" '
        'clientSecret="csecret" scope="https://ns.servicebus.windows.net/.default";'
    )
    rd = librdkafka_config(s.kafka)
    assert rd["sasl.mechanisms"] == "OAUTHBEARER" and rd["sasl.oauthbearer.method"] == "oidc"
    assert rd["sasl.oauthbearer.client.id"] == "cid" and rd["sasl.oauthbearer.client.secret"] == "csecret"
    assert rd["sasl.oauthbearer.scope"] == "https://ns.servicebus.windows.net/.default"


def test_databricks_names_the_shaded_classes_and_reads_its_secret_scope(fake_dbutils):
    s = platform_settings("databricks")
    assert s.kafka.shaded_kafka_classes and s.kafka.oauth.client_secret.vault == "xact"
    java = java_client_options(s.kafka)
    assert java["kafka.sasl.login.callback.handler.class"] == (
        "kafkashaded.org.apache.kafka.common.security.oauthbearer.secured.OAuthBearerLoginCallbackHandler"
    )
    assert java["kafka.sasl.jaas.config"].startswith(
        'kafkashaded.org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required clientId="cid"'
    )
    plain = platform_settings("databricks", "kafka.sasl_mechanism=PLAIN")
    assert java_client_options(plain.kafka)["kafka.sasl.jaas.config"].startswith(
        "kafkashaded.org.apache.kafka.common.security.plain.PlainLoginModule required"
    )
    assert librdkafka_config(plain.kafka)["sasl.password"] == CS  # confluent-kafka is not shaded


def test_fabric_reads_its_key_vault_through_notebookutils(fake_notebookutils):
    s = platform_settings("fabric")
    assert not s.kafka.shaded_kafka_classes
    assert CS in java_client_options(s.kafka)["kafka.sasl.jaas.config"]
    ((vault, name),) = fake_notebookutils
    assert vault == s.kafka.connection_string.vault and vault.startswith("https://")
    assert name == "eventhubs-connection-string"


def test_a_vault_outside_its_platform_is_a_clear_error():
    ref = SecretRef(env=None, vault="xact", secret="eventhubs-connection-string")
    with pytest.raises(ConfigError, match="secret scope 'xact' is read through Databricks' dbutils"):
        read_secret(ref, key="kafka.connection_string", purpose="Kafka SASL_SSL/PLAIN")
    kv = SecretRef(env=None, vault="https://kv.vault.azure.net/", secret="cs")
    with pytest.raises(ConfigError, match="notebookutils"):
        read_secret(kv, key="kafka.connection_string", purpose="Kafka SASL_SSL/PLAIN")
    assert describe(kv) == "Azure Key Vault 'https://kv.vault.azure.net/', secret 'cs'"


def test_a_reader_failure_names_the_setting_never_a_value(monkeypatch):
    module = types.ModuleType("notebookutils")

    def denied(vault_url, name):
        raise PermissionError(f"403 for {name}: token=eyJSECRET")

    module.credentials = types.SimpleNamespace(getSecret=denied)
    monkeypatch.setitem(sys.modules, "notebookutils", module)
    ref = SecretRef(env=None, vault="https://kv.vault.azure.net/", secret="cs")
    with pytest.raises(ConfigError) as err:
        read_secret(ref, key="storage.lake.onelake.client_secret", purpose="OneLake service principal")
    text = str(err.value)
    assert "storage.lake.onelake.client_secret" in text and "PermissionError" in text and "eyJSECRET" not in text


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ({"env": None, "vault": "xact", "secret": None}, "vault and secret go together"),
        ({"env": None, "vault": None, "secret": None}, "needs env"),
        ({"env": "NOT A NAME", "vault": None, "secret": None}, "String should match pattern"),
    ],
)
def test_a_malformed_reference_names_its_key(ref, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_settings("local", overrides={"kafka": {"connection_string": ref}})
    assert "kafka.connection_string" in str(err.value)


def test_the_old_env_keys_say_what_replaced_them():
    with pytest.raises(ConfigError, match=r"kafka.connection_string_env: was replaced by connection_string:"):
        load_settings("local", overrides={"kafka": {"connection_string_env": "X"}})


@pytest.mark.parametrize("env", ["fabric", "databricks"])
def test_the_platform_overlays_respect_event_hubs_producer_limits(env, fake_dbutils, fake_notebookutils):
    s = platform_settings(env)
    sink, source = kafka_sink_options(s.kafka), kafka_source_options(s.kafka)
    assert int(sink["kafka.max.request.size"]) <= 1_000_000  # Event Hubs refuses larger requests
    assert int(sink["kafka.batch.size"]) <= int(sink["kafka.max.request.size"])
    assert sink["kafka.compression.type"] == "none"  # Standard tier refuses compressed batches
    assert int(sink["kafka.request.timeout.ms"]) >= 60_000 and int(sink["kafka.metadata.max.age.ms"]) <= 240_000
    assert int(source["kafka.request.timeout.ms"]) >= 60_000
    rd = librdkafka_config(s.kafka)
    assert int(rd["message.max.bytes"]) <= 1_000_000 and "compression.type" not in rd  # producer-only key
    assert int(rd["metadata.max.age.ms"]) <= 240_000 and rd["socket.keepalive.enable"] == "true"


# Any text, marked so that it cannot be a substring of an option's name or of a non-secret value.
secret_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=80).map(lambda t: f"S3CR3T{t}")


@settings(max_examples=60, deadline=None)
@given(connection_string=secret_text, client_secret=secret_text)
def test_no_secret_reaches_a_printable_option(connection_string, client_secret):
    import os

    saved = {k: os.environ.get(k) for k in ("EVENTHUBS_CONNECTION_STRING", "AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET")}
    os.environ.update(
        EVENTHUBS_CONNECTION_STRING=connection_string, AZURE_CLIENT_ID="cid", AZURE_CLIENT_SECRET=client_secret
    )
    try:
        plain = load_settings("local", overrides=["kafka.security_protocol=SASL_SSL", "kafka.sasl_mechanism=PLAIN"])
        oauth = load_settings("local", overrides=OAUTH)
        for options in (
            kafka_sink_options(plain.kafka),
            kafka_source_options(oauth.kafka),
            librdkafka_config(plain.kafka),
            librdkafka_config(oauth.kafka),
        ):
            shown = repr(printable(options))
            assert connection_string not in shown and client_secret not in shown
            assert MASK in shown
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.mark.parametrize(
    "override",
    [
        f"kafka.connection_string={CS}",  # the secret pasted where its reference belongs
        "kafka.oauth.client_secret.env=S3CRET value",
        "storage.lake.onelake.client_secret={env: S3CRET-value}",
    ],
)
def test_a_secret_put_where_a_reference_belongs_is_never_echoed(override):
    with pytest.raises(ConfigError) as err:
        load_settings("local", overrides=[override])
    text = str(err.value)
    assert override.split("=", 1)[0].split(".{")[0] in text  # the setting is named
    assert "S3CRET" not in text and "SharedAccessKey=" not in text


def test_a_secret_is_trimmed_and_one_with_a_line_break_inside_is_refused(monkeypatch):
    ref = SecretRef(env="XACT_TEST_SECRET", vault=None, secret=None)
    monkeypatch.setenv("XACT_TEST_SECRET", "abc\n")  # pasted with its newline
    assert read_secret(ref, key="kafka.connection_string", purpose="t") == "abc"
    monkeypatch.setenv("XACT_TEST_SECRET", "ab\nS3CRET")
    with pytest.raises(ConfigError, match="control character") as err:
        read_secret(ref, key="kafka.connection_string", purpose="t")
    assert "S3CRET" not in str(err.value)
