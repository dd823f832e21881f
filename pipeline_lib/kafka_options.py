"""Kafka client settings for each environment, in the two dialects the project speaks:
Spark's Kafka source/sink options (`kafka.`-prefixed Java client keys) and librdkafka keys for
confluent-kafka producers and admin clients. Secrets are read from the environment here, at use.
"""

from __future__ import annotations

from pipeline_lib.config import KafkaSettings, secret_from_env


def _jaas_plain(connection_string: str) -> str:
    # Event Hubs' Kafka endpoint: user "$ConnectionString", password the connection string.
    escaped = connection_string.replace("\\", "\\\\").replace('"', '\\"')
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="$ConnectionString" password="{escaped}";'
    )


def java_client_options(kafka: KafkaSettings) -> dict[str, str]:
    """Options for spark.readStream/writeStream.format("kafka"): all keys carry the `kafka.` prefix."""
    opts = {"kafka.bootstrap.servers": kafka.bootstrap_servers, "kafka.security.protocol": kafka.security_protocol}
    if kafka.security_protocol == "SASL_SSL":
        opts["kafka.sasl.mechanism"] = str(kafka.sasl_mechanism)
        if kafka.sasl_mechanism == "PLAIN":
            cs = secret_from_env(
                kafka.connection_string_env, purpose="SASL_SSL/PLAIN", key="kafka.connection_string_env"
            )
            opts["kafka.sasl.jaas.config"] = _jaas_plain(cs)
        else:
            oauth = kafka.oauth
            client_id = secret_from_env(oauth.client_id_env, purpose="OAUTHBEARER", key="kafka.oauth.client_id_env")
            secret = secret_from_env(
                oauth.client_secret_env, purpose="OAUTHBEARER", key="kafka.oauth.client_secret_env"
            )
            opts["kafka.sasl.oauthbearer.token.endpoint.url"] = str(oauth.token_endpoint_url)
            opts["kafka.sasl.login.callback.handler.class"] = (
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginCallbackHandler"
            )
            opts["kafka.sasl.jaas.config"] = (
                "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required "
                f'clientId="{client_id}" clientSecret="{secret}" scope="{oauth.scope}";'
            )
    return opts


def librdkafka_config(kafka: KafkaSettings) -> dict[str, str]:
    """Settings for confluent-kafka Producer/Consumer/AdminClient."""
    conf = {"bootstrap.servers": kafka.bootstrap_servers, "security.protocol": kafka.security_protocol}
    if kafka.security_protocol == "SASL_SSL":
        conf["sasl.mechanisms"] = str(kafka.sasl_mechanism)
        if kafka.sasl_mechanism == "PLAIN":
            conf["sasl.username"] = "$ConnectionString"
            conf["sasl.password"] = secret_from_env(
                kafka.connection_string_env, purpose="SASL_SSL/PLAIN", key="kafka.connection_string_env"
            )
        else:
            oauth = kafka.oauth
            conf.update(
                {
                    "sasl.oauthbearer.method": "oidc",
                    "sasl.oauthbearer.client.id": secret_from_env(
                        oauth.client_id_env, purpose="OAUTHBEARER", key="kafka.oauth.client_id_env"
                    ),
                    "sasl.oauthbearer.client.secret": secret_from_env(
                        oauth.client_secret_env, purpose="OAUTHBEARER", key="kafka.oauth.client_secret_env"
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
