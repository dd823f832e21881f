"""The one config loader: committed base settings, one overlay per environment, command-line
overrides. Secrets are never settings: a SecretRef names where one is read at use (an environment
variable, a Databricks secret scope or an Azure Key Vault; pipeline_lib.secrets reads it).

    settings = load_settings("local")                      # conf/base.yaml + conf/local.yaml
    settings = load_settings("local", overrides=["kafka.bootstrap_servers=127.0.0.1:39092"])

Every error is a ConfigError that names the key, the file that set it (or should have), and the
expected form. Every number is declared with its Range (the one place its bounds live): NaN, the
infinities, true/false, text and values outside the range are refused by name, so no setting can
overflow later into a dead letter of every record. Every host, URL, name and path is given a form
check: a value that validates is one the pipeline can use.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    PlainValidator,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import core_schema

from pipeline_lib.bounds import INT64_MAX
from pipeline_lib.errors import PipelineError
from pipeline_lib.redaction import redact

ENVIRONMENTS = ("local", "fabric", "databricks")
CONF_DIR_ENV = "XACT_CONF_DIR"
_PLACEHOLDER = re.compile(r"<[a-z][a-z0-9_-]*>")


class ConfigError(PipelineError, ValueError):
    """A setting is missing, malformed or unsafe; the message says which key, where, and how to fix it."""

    exit_code = 2


DAY = 86400
KiB, GiB = 1 << 10, 1 << 30


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Range:
    """The values a numeric setting accepts, declared once on its field:

        connect_timeout_seconds: Annotated[float, Range(0, DAY, "seconds", above=True)]

    Only numbers are numbers: true/false, text (even "10") and null are refused, and so are NaN and
    the infinities, which lie outside every range. `whole`: an integer is required (10.0 is refused).
    `above`: `low` itself is refused (a timeout of 0 s ends every download before it starts).
    The error names the range; the loader adds the key, the value and the file.
    """

    low: float
    high: float
    unit: str = ""
    whole: bool = False
    above: bool = False

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        unit = f" {self.unit}" if self.unit else ""
        if self.above:
            return f"{kind} above {_number(self.low)} and at most {_number(self.high)}{unit}"
        return f"{kind} from {_number(self.low)} to {_number(self.high)}{unit}"

    def contains(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.whole and not isinstance(value, int):
            return False
        # Python compares an int with a float exactly, so a 400-digit int is simply out of range.
        return (self.low < value if self.above else self.low <= value) and value <= self.high  # NaN: False

    def __call__(self, value: object) -> int | float:
        if self.contains(value):
            return value if self.whole else float(value)  # type: ignore[arg-type, return-value]
        raise ValueError(f"must be {self.describe()}{self._why(value)}")

    @staticmethod
    def _why(value: object) -> str:
        if isinstance(value, bool):
            return ", not true/false"
        if isinstance(value, str):
            try:
                finite = math.isfinite(float(value))
            except ValueError:
                return ", not text"
            if finite and "e" in value.lower() and "." not in value:
                return ": YAML reads 1e3 as text, so write 1000 or 1.0e+3"  # PyYAML: a dot and a signed exponent
            return ", written without quotes"
        if isinstance(value, float) and value.is_integer():
            return f", written without a fraction ({int(value)})"
        return ""

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(self)


# A timeout or interval: more than 0, at most a day (time.monotonic() + it, timedelta(seconds=it)).
Timeout = Annotated[float, Range(0, DAY, "seconds", above=True)]
# A margin or a grace period: 0 (none) to a day.
Margin = Annotated[float, Range(0, DAY, "seconds")]
# Kafka partitions of a topic: far above any broker's practical limit (Event Hubs: 2000).
Partitions = Annotated[int, Range(1, 100_000, whole=True)]
# Retries, redirects, refetches: a count a human would still call a retry policy.
Retries = Annotated[int, Range(0, 100, whole=True)]
# A retry tier's delay (and the Retry-After cap): a second to a week.
RetryDelay = Annotated[int, Range(1, 7 * DAY, "seconds", whole=True)]
Port = Annotated[int, Range(1, 65535, whole=True)]


def _text(value: str) -> str:
    """Names and paths: not empty, no spaces around it, no control characters (a pasted newline)."""
    if not value.strip():
        raise ValueError("must not be empty")
    if value != value.strip():
        raise ValueError("has spaces or a newline around it; remove them")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError("holds a control character (a tab, newline or NUL)")
    return value


Text = Annotated[str, AfterValidator(_text)]


def _relative_path(value: str) -> str:
    """A path below a root: may be empty (the root itself), never absolute, a URI or above the root."""
    if value:
        _text(value)
    if value.startswith(("/", "\\")) or "://" in value or ".." in value.replace("\\", "/").split("/"):
        raise ValueError("must be a relative path below the lake's files root, e.g. xact/attachments (no /, .. or URI)")
    return value


def _https_url(value: str) -> str:
    """An https URL with a host (an endpoint of Entra ID or of the lake; secrets travel to it)."""
    _text(value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - parsing the port raises on a malformed one
    except ValueError:
        parts = None
    if parts is None or parts.scheme != "https" or not parts.hostname or parts.username or " " in value:
        raise ValueError("must be an https URL with a host, e.g. https://onelake.dfs.fabric.microsoft.com")
    if parts.query or parts.fragment:
        raise ValueError("must be an https URL without a query or fragment")
    return value


HttpsUrl = Annotated[str, AfterValidator(_https_url)]

# One Kafka bootstrap address: host:port or [IPv6]:port, optionally after a listener name (SASL_SSL://).
_BROKER = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*://)?(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):([0-9]{1,5})")


def _bootstrap_servers(value: str) -> str:
    entries = value.split(",")
    for entry in entries:
        match = _BROKER.fullmatch(entry.strip())
        if match is None or not 1 <= int(match[1]) <= 65535:
            which = f"{entry.strip()!r} is not host:port; " if len(entries) > 1 else ""
            raise ValueError(
                f"{which}must be host:port (a comma-separated list of them), "
                "e.g. <namespace>.servicebus.windows.net:9093 or 127.0.0.1:9092"
            )
    return value


HOST_FORMS = (
    "files.example.com (that host), .example.com (example.com and every subdomain), "
    "*.example.com (every subdomain, not example.com itself) or an IP address such as 203.0.113.7; "
    "no scheme, port, path or spaces"
)
_HOST_LABEL = r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?"
_HOST_NAME = re.compile(rf"{_HOST_LABEL}(?:\.{_HOST_LABEL})*")


def _host_problem(entry: str) -> str | None:
    """Why an allowed_hosts entry (lower case, trailing dot dropped) can never match a URL's host."""
    if not entry.strip():
        return "is empty"
    if any(c.isspace() for c in entry):
        return "holds whitespace"
    if "://" in entry:
        return "has a scheme (give the host alone)"
    if any(c in entry for c in "/?#"):
        return "has a path (give the host alone)"
    if "@" in entry:
        return "holds user credentials (give the host alone)"
    if entry.startswith("["):
        return "is in brackets (write an IPv6 address without them, e.g. 2001:db8::1)"
    if "%" in entry:
        return "has a zone index"
    try:
        ipaddress.ip_address(entry)
        return None  # compared as the URL writes it (urlsplit lower-cases it, as here)
    except ValueError:
        pass
    if ":" in entry:
        return "has a port (the policy allows a host on any port; give the host alone)"
    name = entry[2:] if entry.startswith("*.") else entry[1:] if entry.startswith(".") else entry
    if "*" in name:
        return "has a '*' other than one leading '*.' label"
    if len(name) > 253 or not _HOST_NAME.fullmatch(name):
        return (
            "is not a host name (dot-separated labels of letters, digits, '-' and '_', at most 63 each; "
            "an international name in its xn-- form)"
        )
    if name.rsplit(".", 1)[-1].isdigit():
        return "is neither a host name nor an IP address (a name's last label is never all digits)"
    return None


def _host_entry(value: object) -> str:
    """An allowed_hosts entry, normalised: lower case (DNS is case-insensitive) and without the
    trailing dot of its fully qualified form (example.com. is example.com; URL hosts lose it too)."""
    if not isinstance(value, str):
        raise ValueError(f"must be text in one of the forms {HOST_FORMS}")
    entry = value.lower()
    if entry.endswith(".") and not entry.endswith(".."):
        entry = entry[:-1]
    problem = _host_problem(entry)
    if problem:
        raise ValueError(f"{problem}, so it can never match an attachment's host; the accepted forms: {HOST_FORMS}")
    return entry


HostEntry = Annotated[str, PlainValidator(_host_entry)]


def _network(value: str) -> str:
    try:
        ipaddress.ip_network(value)
    except ValueError:
        raise ValueError("is not a CIDR network like 127.0.0.1/32 (its host bits zero: 10.0.0.0/8)") from None
    return value


Network = Annotated[str, AfterValidator(_network)]

# Kafka client keys are lower case and dotted (linger.ms); the pipeline sets these from other
# settings, and an option carrying a secret would put a secret in the settings.
_KAFKA_KEY = re.compile(r"[a-z][a-z0-9]*(?:[._-][a-z0-9]+)*")
_CONNECTION_KEYS = frozenset(
    {
        "bootstrap.servers",
        "security.protocol",
        "sasl.mechanism",
        "sasl.mechanisms",
        "sasl.jaas.config",
        "sasl.login.callback.handler.class",
        "sasl.username",
        "sasl.password",
        "sasl.oauthbearer.method",
        "sasl.oauthbearer.client.id",
        "sasl.oauthbearer.client.secret",
        "sasl.oauthbearer.token.endpoint.url",
        "sasl.oauthbearer.scope",
    }
)
_SECRET_KEY = re.compile(r"jaas|password|secret|token(?!\.endpoint)")


def _kafka_key(key: str) -> str:
    if not _KAFKA_KEY.fullmatch(key):
        raise ValueError("is not a Kafka client key: lower-case dotted words, e.g. linger.ms")
    if key.startswith("kafka."):
        raise ValueError(
            "carries Spark's kafka. prefix, which the pipeline adds itself: write the client key (linger.ms)"
        )
    if key in _CONNECTION_KEYS:
        raise ValueError(
            "is set by the pipeline from kafka.bootstrap_servers, security_protocol, sasl_mechanism and the "
            "secret references; set those instead"
        )
    if _SECRET_KEY.search(key):
        raise ValueError("carries a secret, and secrets are never settings (give a secret reference instead)")
    return key


def _kafka_value(value: object) -> str | int:
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and -INT64_MAX - 1 <= value <= INT64_MAX:
        return value
    if isinstance(value, bool):
        raise ValueError("must be text or a whole number: quote a flag, 'true' or 'false' (Kafka reads text)")
    raise ValueError(f"must be text or a whole number from {-INT64_MAX - 1} to {INT64_MAX}")


KafkaOptions = dict[Annotated[str, AfterValidator(_kafka_key)], Annotated[str | int, PlainValidator(_kafka_value)]]
# Kafka topic names: 1 to 249 of these characters, and not . or ..
MAX_TOPIC_NAME = 249


_TOKEN_PROVIDER = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
_VAULT = re.compile(r"https://[A-Za-z0-9.-]+(?::[0-9]{1,5})?/?|[A-Za-z0-9._@-]{1,128}")
_SECRET_NAME = re.compile(r"[A-Za-z0-9._@-]{1,128}")
_HEAP = re.compile(r"[1-9][0-9]{0,5}[mMgG]")
_CONF_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]+)*")


def _form(pattern: re.Pattern[str], form: str) -> AfterValidator:
    """A text setting that must match `pattern` whole; the error says the form in words."""

    def check(value: str) -> str:
        if not pattern.fullmatch(value):
            raise ValueError(f"must be {form}")
        return value

    return AfterValidator(check)


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
    # An Azure Key Vault's https URL or a Databricks secret scope's name.
    vault: (
        Annotated[str, _form(_VAULT, "a Key Vault URL (https://<name>.vault.azure.net/) or a secret scope name")] | None
    )
    # A secret's name in that vault or scope: never the secret itself.
    secret: Annotated[str, _form(_SECRET_NAME, "a secret's name: 1 to 128 letters, digits and . _ @ -")] | None

    @model_validator(mode="after")
    def _one_source(self) -> SecretRef:
        if (self.vault is None) != (self.secret is None):
            raise ValueError("vault and secret go together: the scope (or Key Vault URL) and the secret's name")
        if self.env is None and self.vault is None:
            raise ValueError("needs env (an environment variable) or vault and secret")
        return self


class OAuthSettings(_Model):
    token_endpoint_url: HttpsUrl | None  # the client secret is sent there: https only
    scope: Text | None
    client_id: SecretRef
    client_secret: SecretRef


class KafkaSettings(_Model):
    bootstrap_servers: Annotated[str, AfterValidator(_bootstrap_servers)]  # host:port[,host:port...]
    security_protocol: Literal["PLAINTEXT", "SASL_SSL"]
    sasl_mechanism: Literal["PLAIN", "OAUTHBEARER"] | None
    connection_string: SecretRef  # the Event Hubs connection string (SASL_SSL + PLAIN)
    oauth: OAuthSettings
    # Databricks runtimes ship the Kafka client shaded under `kafkashaded.`: the JAAS login modules
    # and callback handlers Spark's Kafka options name must carry that prefix there.
    shaded_kafka_classes: bool
    starting_offsets: Literal["earliest", "latest"]
    max_offsets_per_trigger: Annotated[int, Range(1, INT64_MAX, "offsets", whole=True)]  # Spark reads a long
    min_partitions: Annotated[int, Range(1, 1_000_000, "Spark tasks", whole=True)] | None  # split partitions
    fail_on_data_loss: bool
    producer_options: KafkaOptions  # Kafka producer settings for Spark sinks, e.g. linger.ms
    librdkafka_options: KafkaOptions  # the same limits for confluent-kafka (CLI, replay, tests)
    consumer_options: KafkaOptions  # Kafka consumer settings for Spark sources, e.g. fetch.max.wait.ms

    @model_validator(mode="after")
    def _sasl_needs_mechanism(self) -> KafkaSettings:
        if self.security_protocol == "SASL_SSL" and self.sasl_mechanism is None:
            raise ValueError("security_protocol SASL_SSL needs sasl_mechanism: PLAIN or OAUTHBEARER")
        if self.sasl_mechanism == "OAUTHBEARER" and not (self.oauth.token_endpoint_url and self.oauth.scope):
            raise ValueError("sasl_mechanism OAUTHBEARER needs oauth.token_endpoint_url and oauth.scope")
        return self


class TopicSpec(_Model):
    name: str = Field(min_length=1, max_length=MAX_TOPIC_NAME, pattern=r"^[A-Za-z0-9._-]+$")
    partitions: Partitions

    @field_validator("name")
    @classmethod
    def _not_dots(cls, value: str) -> str:
        if value in (".", ".."):
            raise ValueError("Kafka refuses the topic names . and ..")
        return value


# The longest retry tier label a RetryDelay can have ("604799s"), after "<pending>.retry.".
_RETRY_SUFFIX = len(".retry.") + len("604799s")


class TopicSettings(_Model):
    events_raw: TopicSpec
    pending: TopicSpec
    cached: TopicSpec
    results: TopicSpec
    dlq: TopicSpec
    retry_partitions: Partitions

    @model_validator(mode="after")
    def _distinct(self) -> TopicSettings:
        names = {role: getattr(self, role).name for role in ("events_raw", "pending", "cached", "results", "dlq")}
        for role, name in names.items():
            for other, other_name in names.items():
                if other < role and name == other_name:
                    raise ValueError(f"{other}.name and {role}.name are both {name!r}: each topic needs its own")
                if other == "pending" and role != "pending" and name.startswith(other_name + ".retry."):
                    raise ValueError(f"{role}.name {name!r} is in the retry tiers' names (<pending>.retry.<delay>)")
        if len(names["pending"]) > MAX_TOPIC_NAME - _RETRY_SUFFIX:
            raise ValueError(
                f"pending.name may have at most {MAX_TOPIC_NAME - _RETRY_SUFFIX} characters: the retry topics "
                f"add .retry.<delay> and Kafka allows {MAX_TOPIC_NAME}"
            )
        return self


def delay_label(seconds: int) -> str:
    """Short label of a delay used in retry topic names: 300 -> '5m', 3600 -> '1h', 2 -> '2s'."""
    if seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0:
        return f"{seconds // 60}m"
    return f"{seconds}s"


class RetrySettings(_Model):
    delays_seconds: tuple[RetryDelay, ...] = Field(min_length=1, max_length=100)  # one topic per tier
    # The longest wait a source's Retry-After may ask for; null: the last tier's delay.
    max_retry_after_seconds: RetryDelay | None
    # A task whose host (or the lake) keeps its circuit breaker open waits for the breaker without
    # using attempts, but no longer than this since its first failure: then host_unavailable.
    max_task_age_seconds: Annotated[float, Range(0, 30 * DAY, "seconds", above=True)]
    # The retry scheduler runs a batch only when input arrives or a held retry falls due (a driver
    # thread follows the tiers' due times and writes a tick then: retry_wakeups.py); false: Spark's
    # no-data batch every trigger interval while anything is held.
    wake_on_due: bool

    @field_validator("delays_seconds")
    @classmethod
    def _increasing(cls, value: tuple[int, ...]) -> tuple[int, ...]:
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
    failure_threshold: Annotated[int, Range(1, 1_000_000, "failures", whole=True)]  # consecutive, open it
    open_seconds: Timeout  # how long it stays open before one probe


# Generic types a server may send for any file; they never contradict the extension.
GENERIC_CONTENT_TYPES = (
    "application/octet-stream",
    "binary/octet-stream",
    "application/x-download",
    "application/force-download",
    "application/download",
)


class DownloadSettings(_Model):
    concurrency: Annotated[int, Range(1, 256, "downloads", whole=True)]  # in flight per Spark task
    cache_dir: Text  # relative: under storage.root
    connect_timeout_seconds: Timeout
    read_timeout_seconds: Timeout
    total_timeout_seconds: Timeout
    max_redirects: Retries
    max_bytes: Annotated[int, Range(1, INT64_MAX, "bytes", whole=True)]  # counted after Content-Encoding is decoded
    chunk_bytes: Annotated[int, Range(4 * KiB, GiB, "bytes", whole=True)]  # one buffer per download in flight
    expiry_margin_seconds: Margin  # a presigned URL this close to expiry is dead
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
    # combined: the download query uploads each file in the same pass and hands the upload stage
    # only what it could not upload; decoupled: every file goes download -> cached -> upload.
    mode: Literal["combined", "decoupled"]
    concurrency: Annotated[int, Range(1, 64, "uploads", whole=True)]  # in flight per Spark task
    chunk_bytes: Annotated[int, Range(64 * KiB, GiB, "bytes", whole=True)]  # one buffer per upload in flight
    # A cache file this host cannot see (lost, or on another host) is downloaded again by the upload
    # itself, without using an attempt, at most this many times per task; then back to pending.
    max_refetches: Retries
    breaker: BreakerSettings


class UrlPolicySettings(_Model):
    allowed_schemes: tuple[Literal["http", "https"], ...]
    # Empty: any public host. Entries: files.example.com (that host), .example.com (it and every
    # subdomain), *.example.com (every subdomain, not example.com itself) or an IP address.
    allowed_hosts: tuple[HostEntry, ...]
    allow_private_addresses: bool  # local overlay only: loopback and private ranges
    allowed_networks: tuple[Network, ...]  # CIDRs exempt from the address check, e.g. 127.0.0.1/32

    @field_validator("allowed_schemes")
    @classmethod
    def _some_scheme(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("allows no scheme, so every attachment would be refused: give [https] (or [http, https])")
        return value


# A query parameter's name as URLs spell it (compared case-insensitively, percent-decoded).
_PARAM_NAME = re.compile(r"[A-Za-z0-9._~!$'()*+,;:@%-]{1,128}", re.ASCII)


class IngestSettings(_Model):
    # Query parameters that never name an attachment's object, besides the signing forms that
    # ids.SIGNING_FORMS knows (S3 SigV4/V2, GCS V4/V2, Azure SAS, ClaimX): a source's own
    # cache-buster or session parameter. Two URLs differing only in them are one task.
    identity_ignored_params: tuple[
        Annotated[str, _form(_PARAM_NAME, "a query parameter name such as token_ts (no =, & or spaces)")], ...
    ]


class OneLakeSettings(_Model):
    account_url: HttpsUrl  # OneLake's DFS endpoint, or any ADLS Gen2 https://<acct>.dfs.core.windows.net
    workspace: Text | None  # the file system: a Fabric workspace (name or GUID) or an ADLS container
    lakehouse: Text | None  # paths go under <lakehouse>.Lakehouse/Files; null for a plain ADLS account
    # default: DefaultAzureCredential (managed identity, Azure CLI, or AZURE_* environment variables);
    # service_principal: the tenant_id, client_id and client_secret references below;
    # token_provider: `module:function` returning (token, expires_on epoch seconds), e.g. a wrapper
    # of notebookutils in a Fabric notebook.
    auth: Literal["default", "service_principal", "token_provider"]
    tenant_id: SecretRef
    client_id: SecretRef
    client_secret: SecretRef
    token_provider: Annotated[str, _form(_TOKEN_PROVIDER, "'package.module:function'")] | None
    sdk_retries: Retries  # the SDK's own quick retries before the pipeline's tiers
    timeout_seconds: Timeout

    @model_validator(mode="after")
    def _provider_named(self) -> OneLakeSettings:
        if self.auth == "token_provider" and not self.token_provider:
            raise ValueError("auth token_provider needs token_provider: 'package.module:function'")
        return self


class LakeSettings(_Model):
    backend: Literal["local", "onelake"]
    local_root: Text
    files_prefix: Annotated[str, AfterValidator(_relative_path)]
    onelake: OneLakeSettings

    @model_validator(mode="after")
    def _onelake_needs_names(self) -> LakeSettings:
        if self.backend == "onelake" and not (self.onelake.workspace and self.onelake.lakehouse):
            raise ValueError("backend onelake needs onelake.workspace and onelake.lakehouse")
        return self


class TableSettings(_Model):
    events: Text
    attachments: Text
    dlq: Text
    metrics: Text

    @model_validator(mode="after")
    def _distinct(self) -> TableSettings:
        paths = [self.events, self.attachments, self.dlq, self.metrics]
        if len({p.rstrip("/") for p in paths}) < len(paths):
            raise ValueError("two tables share a path: events, attachments, dlq and metrics each need their own")
        return self


class StorageSettings(_Model):
    root: Text
    lake: LakeSettings
    tables: TableSettings
    checkpoint_root: Text

    def resolve(self, path: str) -> str:
        """An absolute path or URI as is; a relative path under `root`."""
        if "://" in path or path.startswith("/"):
            return path
        root = self.root
        if "://" not in root:
            root = str(Path(root).expanduser().resolve())
        return f"{root.rstrip('/')}/{path}"


class Stage(StrEnum):
    """The streaming queries, by the name their checkpoint, metrics, trigger and `--stages` use:
    the one list of stage names (a member is its name: Stage.INGEST == "ingest")."""

    INGEST = "ingest"
    DOWNLOAD = "download"
    UPLOAD = "upload"
    RETRY_SCHEDULER = "retry-scheduler"
    RESULTS = "results"
    DLQ_TABLE = "dlq-table"


STAGES: tuple[str, ...] = tuple(stage.value for stage in Stage)
# The retry scheduler's own trigger, unless set: its first tier / 20, within [trigger, 30 s].
SCHEDULER_TRIGGER_FRACTION = 20
SCHEDULER_TRIGGER_MAX_SECONDS = 30.0
MIN_TRIGGER_SECONDS, MAX_TRIGGER_SECONDS = 0.01, float(DAY)
TriggerSeconds = Annotated[float, Range(MIN_TRIGGER_SECONDS, MAX_TRIGGER_SECONDS, "seconds")]


class StreamingSettings(_Model):
    trigger_interval_seconds: TriggerSeconds
    # Per stage, overriding trigger_interval_seconds (e.g. {results: 1}); see Settings.trigger_seconds.
    stage_trigger_seconds: dict[str, TriggerSeconds]
    # The supervisor (xact-pipeline run and every job command): a failed query restarts from its
    # checkpoint after a cooldown doubling from the first value to the second while it keeps failing.
    restart_initial_seconds: Timeout
    restart_max_seconds: Timeout
    healthy_after_seconds: Timeout  # running this long resets the cooldown
    status_interval_seconds: Timeout  # one status line of every query this often
    stop_grace_seconds: Margin  # SIGTERM / Ctrl-C: how long a batch in flight may finish

    @field_validator("stage_trigger_seconds")
    @classmethod
    def _known_stages(cls, value: dict[str, float]) -> dict[str, float]:
        for stage in value:
            if stage not in STAGES:
                raise ValueError(f"unknown stage {stage!r}: the stages are {', '.join(STAGES)}")
        return value

    @model_validator(mode="after")
    def _cooldown_grows(self) -> StreamingSettings:
        if self.restart_max_seconds < self.restart_initial_seconds:
            raise ValueError(
                f"restart_max_seconds ({self.restart_max_seconds:g}) is below restart_initial_seconds "
                f"({self.restart_initial_seconds:g}): the cooldown doubles from the first up to the second"
            )
        return self


class SparkSettings(_Model):
    app_name: Text
    master: Text | None
    shuffle_partitions: Annotated[int, Range(1, 1_000_000, "partitions", whole=True)]
    extra_conf: dict[Annotated[str, _form(_CONF_KEY, "a Spark configuration key such as spark.ui.port")], str]


class MetricsSettings(_Model):
    enabled: bool  # one xact_pipeline_metrics row per micro-batch of every query
    flush_seconds: Timeout  # rows are buffered and written in one commit this often
    # tables maintain deletes older rows (apart from VACUUM's retention); today - timedelta(days=it)
    retention_days: Annotated[int, Range(1, 36500, "days", whole=True)]


Count = Annotated[int, Range(1, 1_000_000_000, whole=True)]
PerHour = Annotated[float, Range(0, 1_000_000_000, "per hour", above=True)]
Hours = Annotated[float, Range(0, 365 * 24, "hours", above=True)]


class HealthSettings(_Model):
    """`xact-pipeline health` (pipeline_lib/health.py): what makes a stage warn or fail."""

    window_minutes: Annotated[float, Range(1, 7 * 24 * 60, "minutes")]  # the span every rate is over
    stall_triggers: Annotated[float, Range(1, 100_000, "trigger intervals")]
    min_stall_seconds: Annotated[float, Range(0, DAY, "seconds")]
    lag_warn_records: Count
    lag_fail_records: Count
    dead_letters_warn_per_hour: PerHour
    dead_letters_fail_per_hour: PerHour
    open_dead_letter_warn_hours: Hours
    open_dead_letter_fail_hours: Hours
    breaker_openings_warn: Count
    breaker_openings_fail: Count
    latency_p95_warn_seconds: Annotated[float, Range(0, 30 * DAY, "seconds", above=True)]
    latency_p95_fail_seconds: Annotated[float, Range(0, 30 * DAY, "seconds", above=True)]
    fail_on_warn: bool  # the scheduled health task fails on a warn too (default: only on failing)

    @model_validator(mode="after")
    def _warn_before_fail(self) -> HealthSettings:
        pairs = [
            ("lag_warn_records", "lag_fail_records"),
            ("dead_letters_warn_per_hour", "dead_letters_fail_per_hour"),
            ("open_dead_letter_warn_hours", "open_dead_letter_fail_hours"),
            ("breaker_openings_warn", "breaker_openings_fail"),
            ("latency_p95_warn_seconds", "latency_p95_fail_seconds"),
        ]
        for warn, fail in pairs:
            if getattr(self, warn) > getattr(self, fail):
                raise ValueError(
                    f"health.{warn} ({getattr(self, warn):g}) must be at most health.{fail} "
                    f"({getattr(self, fail):g}): a warn comes before a failure"
                )
        return self


RowsPerSecond = Annotated[float, Range(0, 100_000, "rows per second", above=True)]


class ReplaySettings(_Model):
    """`xact-pipeline dlq replay` (pipeline_lib/replay.py): how fast a replay re-publishes tasks."""

    rows_per_second: RowsPerSecond  # every host together
    rows_per_second_per_host: RowsPerSecond  # one source host: the download stage fetches at about this pace
    mark_chunk_rows: Annotated[int, Range(1, 100_000, "rows", whole=True)]  # xact_dlq rows per status commit
    progress_seconds: Timeout  # a progress line this often

    @model_validator(mode="after")
    def _host_within_total(self) -> ReplaySettings:
        if self.rows_per_second_per_host > self.rows_per_second:
            raise ValueError(
                f"replay.rows_per_second_per_host ({self.rows_per_second_per_host:g}) must be at most "
                f"replay.rows_per_second ({self.rows_per_second:g}): one host cannot go faster than all of them"
            )
        return self


class LoggingSettings(_Model):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"]
    format: Literal["text", "json"]
    # Spark's own JVM log level for sessions the pipeline builds (local runs, tests); --verbose: WARN.
    spark_level: Literal["ERROR", "WARN", "INFO", "DEBUG"]


class LocalKafkaSettings(_Model):
    home: Text | None  # None: <XACT_CACHE_DIR or ~/.cache/xact-pipeline>/broker
    port: Port
    controller_port: Port
    heap: Annotated[str, _form(_HEAP, "a JVM heap size such as 512m or 2g")]  # the broker's -Xmx
    start_timeout_seconds: Timeout

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
    ingest: IngestSettings
    storage: StorageSettings
    streaming: StreamingSettings
    spark: SparkSettings
    logging: LoggingSettings
    metrics: MetricsSettings
    health: HealthSettings
    replay: ReplaySettings
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

    def stage_inputs(self, stage: str) -> list[str]:
        """The topics `stage`'s query reads (its StageQuery starts from these)."""
        t = self.topics
        return {
            Stage.INGEST: [t.events_raw.name],
            Stage.DOWNLOAD: [t.pending.name],
            Stage.UPLOAD: [t.cached.name],
            Stage.RETRY_SCHEDULER: list(self.retry_topics),
            Stage.RESULTS: [t.results.name],
            Stage.DLQ_TABLE: [t.dlq.name],
        }[Stage(stage)]

    def stage_topics(self, stage: str) -> list[str]:
        """The topics a stage reads or writes (what must exist before its query starts); every
        topic for a name that is not a stage."""
        if stage not in STAGES:
            return list(self.topic_partitions())
        t, retry = self.topics, list(self.retry_topics)
        writes = {
            Stage.INGEST: [t.pending.name, t.dlq.name],
            Stage.DOWNLOAD: [t.cached.name, t.results.name, t.dlq.name, *retry],
            Stage.UPLOAD: [t.pending.name, t.results.name, t.dlq.name, *retry],
            Stage.RETRY_SCHEDULER: [t.pending.name, t.cached.name, t.dlq.name],
            Stage.RESULTS: [t.dlq.name],
            Stage.DLQ_TABLE: [],
        }[Stage(stage)]
        return self.stage_inputs(stage) + writes

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


# libyaml's parser when PyYAML has it (ten times faster, the same safe types), else PyYAML's own.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_YAML_LOADER)
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
    if isinstance(error.get("input"), Mapping):
        return message  # a check across a section's keys: the message names them
    return f"{message} (got {redact(repr(error.get('input')))})"


def _key(loc: Iterable[int | str]) -> str:
    """The setting an error is about: url_policy.allowed_hosts[2], kafka.producer_options.linger.ms."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part != "[key]":  # a mapping's key that is wrong: the message says so
            out += f".{part}" if out else part
    return out or "settings"


def _origin_key(loc: Iterable[int | str]) -> str:
    """The dotted key the loader recorded an origin for (list items take their list's)."""
    return ".".join(p for p in loc if isinstance(p, str) and p != "[key]")


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
            dotted = _origin_key(error["loc"])
            if isinstance(error.get("input"), Mapping):  # a check across a section: every file that set part of it
                where = ", ".join(sorted({o for k, o in origins.items() if k.startswith(dotted + ".") or k == dotted}))
            else:
                where = _origin(origins, dotted) or ""
            where = where or f"not set in {base} or {overlay}"
            lines.append(f"  {_key(error['loc'])}: {_describe(error)} [{where}]")
        raise ConfigError(f"invalid settings for environment {env!r}:\n" + "\n".join(lines)) from None


def _leaves(tree: Mapping[str, Any], prefix: str) -> Iterable[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value
