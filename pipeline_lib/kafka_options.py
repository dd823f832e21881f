"""Kafka client settings for each environment, in the two dialects the project speaks:
Spark's Kafka source/sink options (`kafka.`-prefixed Java client keys) and librdkafka keys for
confluent-kafka producers and admin clients. Secrets are read here, at use (pipeline_lib.secrets),
and never printed: `printable()` masks every option that carries one.

Event Hubs' Kafka endpoint (reference.md): SASL_SSL on port 9093; PLAIN with the user
`$ConnectionString` and the connection string as the password, or OAUTHBEARER with an Entra ID
token for `https://<namespace>.servicebus.windows.net/.default` (client credentials: the Java
client's OAuthBearerLoginCallbackHandler, librdkafka's `oidc` method). Databricks runtimes shade
the Java client under `kafkashaded.` (kafka.shaded_kafka_classes). The limits Event Hubs puts on
producers (1 MB requests, its idle and metadata timeouts) are the overlays' producer_options and
librdkafka_options.
"""

from __future__ import annotations

import re

from pipeline_lib.config import KafkaSettings
from pipeline_lib.secrets import read_secret

# Options whose values carry a secret (JAAS config holds the connection string or client secret).
_SECRET_OPTION = re.compile(r"jaas|password|secret|token(?!\.endpoint)", re.IGNORECASE)
MASK = "*****"


def _java_class(kafka: KafkaSettings, name: str) -> str:
    return f"kafkashaded.{name}" if kafka.shaded_kafka_classes else name


def _jaas_quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def java_client_options(kafka: KafkaSettings) -> dict[str, str]:
    """Options for spark.readStream/writeStream.format("kafka"): all keys carry the `kafka.` prefix."""
    opts = {"kafka.bootstrap.servers": kafka.bootstrap_servers, "kafka.security.protocol": kafka.security_protocol}
    if kafka.security_protocol != "SASL_SSL":
        return opts
    opts["kafka.sasl.mechanism"] = str(kafka.sasl_mechanism)
    if kafka.sasl_mechanism == "PLAIN":
        cs = read_secret(kafka.connection_string, key="kafka.connection_string", purpose="Kafka SASL_SSL/PLAIN")
        module = _java_class(kafka, "org.apache.kafka.common.security.plain.PlainLoginModule")
        opts["kafka.sasl.jaas.config"] = f'{module} required username="$ConnectionString" password={_jaas_quote(cs)};'
        return opts
    oauth = kafka.oauth
    client_id = read_secret(oauth.client_id, key="kafka.oauth.client_id", purpose="Kafka OAUTHBEARER")
    secret = read_secret(oauth.client_secret, key="kafka.oauth.client_secret", purpose="Kafka OAUTHBEARER")
    module = _java_class(kafka, "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule")
    opts["kafka.sasl.oauthbearer.token.endpoint.url"] = str(oauth.token_endpoint_url)
    # OSS kafka-clients 3.4 to 4.x: ...oauthbearer.OAuthBearerLoginCallbackHandler (the .secured alias
    # is gone in 4.x). Databricks documents its shaded .secured class (its runtimes ship 3.x clients).
    handler = "org.apache.kafka.common.security.oauthbearer." + ("secured." if kafka.shaded_kafka_classes else "")
    opts["kafka.sasl.login.callback.handler.class"] = _java_class(kafka, handler + "OAuthBearerLoginCallbackHandler")
    opts["kafka.sasl.jaas.config"] = (
        f"{module} required clientId={_jaas_quote(client_id)} clientSecret={_jaas_quote(secret)} "
        f"scope={_jaas_quote(str(oauth.scope))};"
    )
    return opts


def librdkafka_config(kafka: KafkaSettings) -> dict[str, str]:
    """Settings for confluent-kafka Producer/Consumer/AdminClient (kafka.librdkafka_options included)."""
    conf = {"bootstrap.servers": kafka.bootstrap_servers, "security.protocol": kafka.security_protocol}
    conf.update({k: str(v) for k, v in kafka.librdkafka_options.items()})
    if kafka.security_protocol != "SASL_SSL":
        return conf
    conf["sasl.mechanisms"] = str(kafka.sasl_mechanism)
    if kafka.sasl_mechanism == "PLAIN":
        conf["sasl.username"] = "$ConnectionString"
        conf["sasl.password"] = read_secret(
            kafka.connection_string, key="kafka.connection_string", purpose="Kafka SASL_SSL/PLAIN"
        )
        return conf
    oauth = kafka.oauth
    conf.update(
        {
            "sasl.oauthbearer.method": "oidc",  # librdkafka fetches and refreshes the Entra token itself
            "sasl.oauthbearer.client.id": read_secret(
                oauth.client_id, key="kafka.oauth.client_id", purpose="Kafka OAUTHBEARER"
            ),
            "sasl.oauthbearer.client.secret": read_secret(
                oauth.client_secret, key="kafka.oauth.client_secret", purpose="Kafka OAUTHBEARER"
            ),
            "sasl.oauthbearer.token.endpoint.url": str(oauth.token_endpoint_url),
            "sasl.oauthbearer.scope": str(oauth.scope),
        }
    )
    return conf


def kafka_sink_options(kafka: KafkaSettings) -> dict[str, str]:
    """Options for a Spark Kafka sink: the client options plus producer tuning (kafka.producer_options)."""
    return {**java_client_options(kafka), **{f"kafka.{k}": str(v) for k, v in kafka.producer_options.items()}}


def kafka_source_options(kafka: KafkaSettings) -> dict[str, str]:
    """Options for a Spark Kafka source: the client options plus consumer tuning (kafka.consumer_options)."""
    return {**java_client_options(kafka), **{f"kafka.{k}": str(v) for k, v in kafka.consumer_options.items()}}


def printable(options: dict[str, str]) -> dict[str, str]:
    """The options with every secret-carrying value masked: the only form that may be logged or shown."""
    return {k: MASK if _SECRET_OPTION.search(k) else v for k, v in options.items()}
