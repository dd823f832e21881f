"""The one config loader: committed base settings, one overlay per environment, command-line
overrides. Secrets are never settings: a SecretRef names where one is read at use (an environment
variable, a Databricks secret scope or an Azure Key Vault; pipeline_lib.secrets reads it).

    settings = load_settings("local")                      # conf/base.yaml + conf/local.yaml
    settings = load_settings("local", overrides=["kafka.bootstrap_servers=127.0.0.1:39092"])

Every error is a ConfigError that names the key, the file that set it (or should have), and the
expected form.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline_lib.errors import PipelineError
from pipeline_lib.redaction import redact

ENVIRONMENTS = ("local", "fabric", "databricks")
CONF_DIR_ENV = "XACT_CONF_DIR"
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9_-]*>")


class ConfigError(PipelineError, ValueError):
    """A setting is missing, malformed or unsafe; the message says which key, where, and how to fix it."""

    exit_code = 2


class _Model(BaseModel):
    """Settings models declare types and constraints; conf/base.yaml holds every default value.

    No field has a default here (tests/unit/test_config.py checks it): a default in two places
    drifts, and base.yaml is the commented reference that ships with the package.
    """

    # Unknown keys are typos until proven otherwise: reject them by name.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """Where a secret is read at use, never the secret itself (pipeline_lib.secrets.read_secret).

    `vault` and `secret` together win: a vault that is an https URL is an Azure Key Vault, read
    through Fabric's notebookutils; any other vault is a Databricks secret scope (a Key Vault-backed
    scope works too), read through dbutils. Otherwise the environment variable `env` is read.
    """

    env: str | None = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    vault: str | None = Field(min_length=1)
    secret: str | None = Field(min_length=1)

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.vault is None) != (self.secret is None):
            raise ValueError("vault and secret go together: the scope (or Key Vault URL) and the secret's name")
        if self.env is None and self.vault is None:
            raise ValueError("needs env (an environment variable) or vault and secret")
        return self


class OAuthSettings(_Model):
    token_endpoint_url: str | None
    scope: str | None
    client_id: SecretRef
    client_secret: SecretRef


class KafkaSettings(_Model):
    bootstrap_servers: str = Field(min_length=1)
    security_protocol: Literal["PLAINTEXT", "SASL_SSL"]
    sasl_mechanism: Literal["PLAIN", "OAUTHBEARER"] | None
    connection_string: SecretRef  # the Event Hubs connection string (SASL_SSL + PLAIN)
    oauth: OAuthSettings
    # Databricks runtimes ship the Kafka client shaded under `kafkashaded.`: the JAAS login modules
    # and callback handlers Spark's Kafka options name must carry that prefix there.
    shaded_kafka_classes: bool
    starting_offsets: Literal["earliest", "latest"]
    max_offsets_per_trigger: int = Field(gt=0)
    min_partitions: int | None = Field(gt=0)  # split Kafka partitions into more Spark tasks
    fail_on_data_loss: bool
    producer_options: dict[str, str | int]  # Kafka producer settings for Spark sinks, e.g. linger.ms
    librdkafka_options: dict[str, str | int]  # the same limits for confluent-kafka (CLI, replay, tests)
    consumer_options: dict[str, str | int]  # Kafka consumer settings for Spark sources, e.g. fetch.max.wait.ms

    @model_validator(mode="after")
    def _sasl_needs_mechanism(self) -> KafkaSettings:
        if self.security_protocol == "SASL_SSL" and self.sasl_mechanism is None:
            raise ValueError("security_protocol SASL_SSL needs sasl_mechanism: PLAIN or OAUTHBEARER")
        if self.sasl_mechanism == "OAUTHBEARER" and not (self.oauth.token_endpoint_url and self.oauth.scope):
            raise ValueError("sasl_mechanism OAUTHBEARER needs oauth.token_endpoint_url and oauth.scope")
        return self


class TopicSpec(_Model):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(gt=0)


class TopicSettings(_Model):
    events_raw: TopicSpec
    pending: TopicSpec
    cached: TopicSpec
    results: TopicSpec
    dlq: TopicSpec
    retry_partitions: int = Field(gt=0)


def delay_label(seconds: int) -> str:
    """Short label of a delay used in retry topic names: 300 -> '5m', 3600 -> '1h', 2 -> '2s'."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


class RetrySettings(_Model):
    delays_seconds: tuple[int, ...] = Field(min_length=1)
    # The longest wait a source's Retry-After may ask for; null: the last tier's delay.
    max_retry_after_seconds: int | None = Field(gt=0)
    # A task whose host (or the lake) keeps its circuit breaker open waits for the breaker without
    # using attempts, but no longer than this since its first failure: then host_unavailable.
    max_task_age_seconds: float = Field(gt=0)

    @field_validator("delays_seconds")
    @classmethod
    def _increasing_positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(d <= 0 for d in value):
            raise ValueError("every delay must be a positive number of seconds")
        if list(value) != sorted(set(value)):
            raise ValueError("delays must be strictly increasing, e.g. [300, 600, 1200, 2400]")
        return value

    @property
    def max_attempts(self) -> int:
        """The first try plus one per retry tier: derived, so it cannot disagree with the delays."""
        return len(self.delays_seconds) + 1

    @property
    def retry_after_cap_seconds(self) -> int:
        return self.max_retry_after_seconds or self.delays_seconds[-1]


class BreakerSettings(_Model):
    failure_threshold: int = Field(ge=1)  # consecutive transient failures that open it
    open_seconds: float = Field(gt=0)  # how long it stays open before one probe


# Generic types a server may send for any file; they never contradict the extension.
GENERIC_CONTENT_TYPES = (
    "application/octet-stream",
    "binary/octet-stream",
    "application/x-download",
    "application/force-download",
    "application/download",
)


class DownloadSettings(_Model):
    concurrency: int = Field(ge=1, le=256)  # downloads in flight per Spark task
    cache_dir: str = Field(min_length=1)  # relative: under storage.root
    connect_timeout_seconds: float = Field(gt=0)
    read_timeout_seconds: float = Field(gt=0)
    total_timeout_seconds: float = Field(gt=0)
    max_redirects: int = Field(ge=0)
    max_bytes: int = Field(gt=0)  # counted after Content-Encoding is decoded
    chunk_bytes: int = Field(ge=4096)
    expiry_margin_seconds: float = Field(ge=0)  # a presigned URL this close to expiry is dead
    auth_errors_transient: bool  # retry 401/403 of URLs that have not expired
    # Extension -> the content types a server may send for it. One mapping, so the two allowlists
    # cannot disagree; the generic types above are accepted for every listed extension.
    content_types: dict[str, tuple[str, ...]] = Field(min_length=1)
    breaker: BreakerSettings

    @field_validator("content_types")
    @classmethod
    def _normalise_types(cls, value: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        out = {}
        for ext, types in value.items():
            if not re.fullmatch(r"\.?[A-Za-z0-9]{1,10}", ext):
                raise ValueError(f"extension {ext!r} must look like .pdf")
            if not types or any("/" not in t for t in types):
                raise ValueError(f"extension {ext!r} needs a list of content types like application/pdf")
            out["." + ext.lower().lstrip(".")] = tuple(t.lower().strip() for t in types)
        return out


class UploadSettings(_Model):
    concurrency: int = Field(ge=1, le=64)  # uploads in flight per Spark task
    chunk_bytes: int = Field(ge=64 * 1024)
    # A cache file this host cannot see (lost, or on another host) is downloaded again by the upload
    # itself, without using an attempt, at most this many times per task; then back to pending.
    max_refetches: int = Field(ge=0, le=100)
    breaker: BreakerSettings


class UrlPolicySettings(_Model):
    allowed_schemes: tuple[Literal["http", "https"], ...]
    allowed_hosts: tuple[str, ...]
    allow_private_addresses: bool  # local overlay only: loopback and private ranges
    allowed_networks: tuple[str, ...]  # CIDRs exempt from the address check, e.g. 127.0.0.1/32

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR network like 127.0.0.1/32") from None
        return value


class OneLakeSettings(_Model):
    account_url: str  # OneLake's DFS endpoint, or any ADLS Gen2 https://<acct>.dfs.core.windows.net
    workspace: str | None  # the file system: a Fabric workspace (name or GUID) or an ADLS container
    lakehouse: str | None  # paths go under <lakehouse>.Lakehouse/Files; null for a plain ADLS account
    # default: DefaultAzureCredential (managed identity, Azure CLI, or AZURE_* environment variables);
    # service_principal: the tenant_id, client_id and client_secret references below;
    # token_provider: `module:function` returning (token, expires_on epoch seconds), e.g. a wrapper
    # of notebookutils in a Fabric notebook.
    auth: Literal["default", "service_principal", "token_provider"]
    tenant_id: SecretRef
    client_id: SecretRef
    client_secret: SecretRef
    token_provider: str | None
    sdk_retries: int = Field(ge=0)  # the SDK's own quick retries before the pipeline's tiers
    timeout_seconds: float = Field(gt=0)

    @model_validator(mode="after")
    def _provider_named(self) -> OneLakeSettings:
        if self.auth == "token_provider" and not (self.token_provider and ":" in self.token_provider):
            raise ValueError("auth token_provider needs token_provider: 'package.module:function'")
        return self


class LakeSettings(_Model):
    backend: Literal["local", "onelake"]
    local_root: str
    files_prefix: str
    onelake: OneLakeSettings

    @model_validator(mode="after")
    def _onelake_needs_names(self) -> LakeSettings:
        if self.backend == "onelake" and not (self.onelake.workspace and self.onelake.lakehouse):
            raise ValueError("backend onelake needs onelake.workspace and onelake.lakehouse")
        return self


class TableSettings(_Model):
    events: str
    attachments: str
    dlq: str
    metrics: str


class StorageSettings(_Model):
    root: str = Field(min_length=1)
    lake: LakeSettings
    tables: TableSettings
    checkpoint_root: str

    def resolve(self, path: str) -> str:
        """An absolute path or URI as is; a relative path under `root`."""
        if "://" in path or path.startswith("/"):
            return path
        root = self.root
        if "://" not in root:
            root = str(Path(root).expanduser().resolve())
        return f"{root.rstrip('/')}/{path}"


# The streaming queries, by the name their checkpoint, metrics and `--stages` use.
STAGES = ("ingest", "download", "upload", "retry-scheduler", "results", "dlq-table")
# The retry scheduler's own trigger, unless set: its first tier / 20, within [trigger, 30 s].
SCHEDULER_TRIGGER_FRACTION = 20
SCHEDULER_TRIGGER_MAX_SECONDS = 30.0
MIN_TRIGGER_SECONDS, MAX_TRIGGER_SECONDS = 0.01, 86400.0


class StreamingSettings(_Model):
    trigger_interval_seconds: float = Field(ge=MIN_TRIGGER_SECONDS, le=MAX_TRIGGER_SECONDS)
    # Per stage, overriding trigger_interval_seconds (e.g. {results: 1}); see Settings.trigger_seconds.
    stage_trigger_seconds: dict[str, float]
    # The supervisor (xact-pipeline run and every job command): a failed query restarts from its
    # checkpoint after a cooldown doubling from the first value to the second while it keeps failing.
    restart_initial_seconds: float = Field(gt=0)
    restart_max_seconds: float = Field(gt=0)
    healthy_after_seconds: float = Field(gt=0)  # running this long resets the cooldown
    status_interval_seconds: float = Field(gt=0)  # one status line of every query this often
    stop_grace_seconds: float = Field(ge=0)  # SIGTERM / Ctrl-C: how long a batch in flight may finish

    @field_validator("stage_trigger_seconds")
    @classmethod
    def _known_stages(cls, value: dict[str, float]) -> dict[str, float]:
        for stage, seconds in value.items():
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r}: the stages are {', '.join(STAGES)}")
            if not (math.isfinite(seconds) and MIN_TRIGGER_SECONDS <= seconds <= MAX_TRIGGER_SECONDS):
                raise ValueError(
                    f"{stage}: a trigger interval must be {MIN_TRIGGER_SECONDS} to {MAX_TRIGGER_SECONDS:g} seconds "
                    f"(got {seconds})"
                )
        return value


class SparkSettings(_Model):
    app_name: str
    master: str | None
    shuffle_partitions: int = Field(gt=0)
    extra_conf: dict[str, str]


class MetricsSettings(_Model):
    enabled: bool  # one xact_pipeline_metrics row per micro-batch of every query
    flush_seconds: float = Field(gt=0)  # rows are buffered and written in one commit this often
    retention_days: int = Field(gt=0)  # tables maintain deletes older rows (apart from VACUUM's retention)


class LoggingSettings(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    format: Literal["text", "json"]
    # Spark's own JVM log level for sessions the pipeline builds (local runs, tests); --verbose: WARN.
    spark_level: Literal["ERROR", "WARN", "INFO", "DEBUG"]


class LocalKafkaSettings(_Model):
    home: str | None  # None: <XACT_CACHE_DIR or ~/.cache/xact-pipeline>/broker
    port: int = Field(gt=0, lt=65536)
    controller_port: int = Field(gt=0, lt=65536)
    heap: str = Field(pattern=r"^\d+[mMgG]$")
    start_timeout_seconds: float = Field(gt=0)

    @model_validator(mode="after")
    def _distinct_ports(self) -> LocalKafkaSettings:
        if self.port == self.controller_port:
            raise ValueError("port and controller_port must differ")
        return self


class Settings(_Model):
    environment: str  # set by the loader: the overlay's name
    kafka: KafkaSettings
    topics: TopicSettings
    retry: RetrySettings
    download: DownloadSettings
    upload: UploadSettings
    url_policy: UrlPolicySettings
    storage: StorageSettings
    streaming: StreamingSettings
    spark: SparkSettings
    logging: LoggingSettings
    metrics: MetricsSettings
    local_kafka: LocalKafkaSettings

    @property
    def retry_topics(self) -> tuple[str, ...]:
        """Retry tier topics in order, named from the pending topic and each delay."""
        base = self.topics.pending.name
        return tuple(f"{base}.retry.{delay_label(d)}" for d in self.retry.delays_seconds)

    def trigger_seconds(self, stage: str) -> float:
        """How often `stage`'s query triggers: streaming.stage_trigger_seconds[stage] when set, else
        streaming.trigger_interval_seconds. The retry scheduler, unless set, triggers every
        first tier / 20 within [trigger_interval_seconds, 30 s]: its idle batches scan its state,
        and a release at most that late is 5 % of the shortest wait (15 s of 5 min)."""
        streaming = self.streaming
        if stage in streaming.stage_trigger_seconds:
            return streaming.stage_trigger_seconds[stage]
        if stage == "retry-scheduler":
            derived = min(self.retry.delays_seconds) / SCHEDULER_TRIGGER_FRACTION
            return max(streaming.trigger_interval_seconds, min(derived, SCHEDULER_TRIGGER_MAX_SECONDS))
        return streaming.trigger_interval_seconds

    def topic_partitions(self) -> dict[str, int]:
        """Every pipeline topic with its partition count, as the broker should have them."""
        t = self.topics
        specs = {s.name: s.partitions for s in (t.events_raw, t.pending, t.cached, t.results, t.dlq)}
        specs.update({name: t.retry_partitions for name in self.retry_topics})
        return specs

    def stage_topics(self, stage: str) -> list[str]:
        """The topics a stage reads or writes (what must exist before its query starts)."""
        t, retry = self.topics, list(self.retry_topics)
        return {
            "ingest": [t.events_raw.name, t.pending.name, t.dlq.name],
            "download": [t.pending.name, t.cached.name, t.results.name, t.dlq.name, *retry],
            "upload": [t.cached.name, t.pending.name, t.results.name, t.dlq.name, *retry],
            "retry-scheduler": [*retry, t.pending.name, t.cached.name, t.dlq.name],
            "results": [t.results.name, t.dlq.name],
            "dlq-table": [t.dlq.name],
        }.get(stage, list(self.topic_partitions()))

    def checkpoint(self, job: str) -> str:
        return self.storage.resolve(f"{self.storage.checkpoint_root.rstrip('/')}/{job}")

    def table_path(self, table: Literal["events", "attachments", "dlq", "metrics"]) -> str:
        return self.storage.resolve(getattr(self.storage.tables, table))

    @property
    def cache_dir(self) -> str:
        """The download cache as an absolute path (relative cache_dir: under storage.root).

        It is opened with plain file I/O by every executor, so it must be a POSIX path: a local
        directory on one node, or a mount of shared storage on a cluster (docs/operations.md).
        """
        path = self.storage.resolve(self.download.cache_dir)
        if "://" in path:
            raise ConfigError(
                f"download.cache_dir resolves to {path!r}, a URI; executors write the cache with file I/O, "
                "so give an absolute mounted path (e.g. /lakehouse/default/Files/_cache or /Volumes/...)"
            )
        return path


def default_conf_dir() -> Path:
    """conf/ beside the package in a checkout, or the copy packaged inside the wheel."""
    override = os.environ.get(CONF_DIR_ENV)
    if override:
        return Path(override)
    here = Path(__file__).resolve().parent
    for candidate in (here.parent / "conf", here / "_conf"):
        if (candidate / "base.yaml").is_file():
            return candidate
    raise ConfigError(
        f"no conf/base.yaml found beside {here} or inside the package; "
        f"set {CONF_DIR_ENV} to the folder that holds base.yaml and the overlays"
    )


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _merge(
    into: dict[str, Any], layer: Mapping[str, Any], source: str, origins: dict[str, str], prefix: str = ""
) -> None:
    """Deep-merge `layer` into `into`, recording which source set each dotted key."""
    for key, value in layer.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            _merge(into[key], value, source, origins, dotted + ".")
        else:
            into[key] = _plain(value)
            origins[dotted] = source
            if isinstance(value, Mapping):
                for sub in _dotted_keys(value, dotted + "."):
                    origins[sub] = source


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _dotted_keys(mapping: Mapping[str, Any], prefix: str) -> Iterable[str]:
    for key, value in mapping.items():
        yield prefix + key
        if isinstance(value, Mapping):
            yield from _dotted_keys(value, f"{prefix}{key}.")


def _parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {redact(text)!r}: expected the form key.path=value, e.g. kafka.port=9092")
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip().split("."), value


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {path[-1]: value}
    for part in reversed(path[:-1]):
        out = {part: out}
    return out


def _origin(origins: Mapping[str, str], dotted: str) -> str | None:
    while dotted:
        if dotted in origins:
            return origins[dotted]
        dotted = dotted.rpartition(".")[0]
    return None


# Settings renamed since an earlier release: the error says what replaced them.
_RENAMED = {
    "connection_string_env": "connection_string: {env: VARIABLE} (or vault: and secret:)",
    "client_id_env": "client_id: {env: VARIABLE} (or vault: and secret:)",
    "client_secret_env": "client_secret: {env: VARIABLE} (or vault: and secret:)",
    "tenant_id_env": "tenant_id: {env: VARIABLE} (or vault: and secret:)",
}


# Settings that hold secret references: a value set there by mistake may be the secret itself.
_SECRET_REFERENCES = frozenset({"connection_string", "client_id", "client_secret", "tenant_id"})


def _describe(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "is required but not set"
    if error["type"] == "extra_forbidden":
        renamed = _RENAMED.get(str(error["loc"][-1]))
        return f"was replaced by {renamed}" if renamed else "is not a known setting (a typo?)"
    message = error["msg"].removeprefix("Value error, ")
    if _SECRET_REFERENCES & {str(p) for p in error["loc"]}:
        # Never echo what was given: it may be the secret pasted where its reference belongs.
        return f"{message} (a secret reference: {{env: VARIABLE}} or {{vault: ..., secret: ...}}, never the value)"
    return f"{message} (got {redact(repr(error.get('input')))})"


def load_settings(
    env: str = "local",
    *,
    conf_dir: str | Path | None = None,
    overrides: Iterable[str] | Mapping[str, Any] = (),
) -> Settings:
    """Load base.yaml, the environment's overlay and overrides; validate everything.

    Args:
        env: an overlay name from ENVIRONMENTS, or the path of any overlay YAML file.
        conf_dir: the folder holding base.yaml and the overlays (default: default_conf_dir()).
        overrides: `key.path=value` strings (YAML values) or a nested mapping, applied last.

    Raises:
        ConfigError: naming the key, the file that set it and the expected form.
    """
    folder = Path(conf_dir) if conf_dir else default_conf_dir()
    base = folder / "base.yaml"
    if not base.is_file():
        raise ConfigError(f"{base} not found: the base settings file is required")
    overlay = Path(env) if env.endswith((".yaml", ".yml")) else folder / f"{env}.yaml"
    if not overlay.is_file():
        raise ConfigError(
            f"environment {env!r}: overlay {overlay} not found; choose one of {', '.join(ENVIRONMENTS)} "
            "or pass the path of an overlay file"
        )
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    _merge(merged, _read_yaml(base), str(base), origins)
    _merge(merged, _read_yaml(overlay), str(overlay), origins)
    if isinstance(overrides, Mapping):
        _merge(merged, overrides, "overrides", origins)
    else:
        for text in overrides:
            path, value = _parse_override(text)
            _merge(merged, _nest(path, value), f"--set {'.'.join(path)}=...", origins)  # never echo a value
    merged["environment"] = overlay.stem
    origins["environment"] = str(overlay)

    for dotted, value in _leaves(merged, ""):
        if isinstance(value, str) and _PLACEHOLDER.search(value):
            raise ConfigError(
                f"{dotted}: still holds the placeholder {value!r} (set in {_origin(origins, dotted)}); "
                f"replace it in the overlay or pass --set {dotted}=<value>"
            )
    try:
        return Settings.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            dotted = ".".join(str(p) for p in error["loc"])
            where = _origin(origins, dotted) or f"not set in {base} or {overlay}"
            lines.append(f"  {dotted}: {_describe(error)} [{where}]")
        raise ConfigError(f"invalid settings for environment {env!r}:\n" + "\n".join(lines)) from None


def _leaves(tree: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value
