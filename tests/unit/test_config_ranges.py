"""Every numeric setting has a range and every host-like setting a form (issue #22 item 7): a bad
value is refused when the settings load, naming the key, the value, the file and what is accepted,
instead of validating and then overflowing (or never matching) for every record.

The numeric settings are found in the models' own declarations (each number carries a Range), so a
setting added later is covered without touching this file.
"""

from __future__ import annotations

import math
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from pipeline_lib.config import ConfigError, Range, Settings, load_settings
from pipeline_lib.redaction import redact
from pipeline_lib.url_policy import UrlPolicy, UrlRefused

CONF = Path(__file__).resolve().parents[2] / "conf"
INF = float("inf")


def _ranges(annotation: Any, metadata: list[Any], shape: str) -> Iterator[tuple[Range, str]]:
    """The Range of a field's value, looking through Optional, tuple[...] and dict[str, ...]."""
    for meta in metadata:
        if isinstance(meta, Range):
            yield meta, shape
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        yield from _ranges(args[0], list(annotation.__metadata__), shape)
    elif origin is tuple:
        yield from _ranges(args[0], [], "tuple")
    elif origin is dict:
        yield from _ranges(args[1], [], "dict")
    elif args:  # a union: X | None
        for arg in args:
            yield from _ranges(arg, [], shape)


def numeric_settings(model: type[BaseModel] = Settings, prefix: str = "") -> Iterator[tuple[str, Range, str]]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from numeric_settings(annotation, f"{prefix}{name}.")
            continue
        for rng, shape in _ranges(annotation, list(field.metadata), "scalar"):
            yield prefix + name, rng, shape


NUMERIC = sorted(set(numeric_settings()), key=lambda s: s[0])
# A key each numeric mapping accepts, so its value alone is wrong (a new mapping must add one).
MAPPING_KEYS = {"streaming.stage_trigger_seconds": "results"}


def _nest(dotted: str, value: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    node = out
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return out


def _placed(key: str, shape: str, value: Any) -> tuple[dict[str, Any], str]:
    """Overrides that put `value` where the setting's values go, and the key the error must name."""
    if shape == "tuple":
        return _nest(key, [value]), f"{key}[0]"
    if shape == "dict":
        return _nest(key, {MAPPING_KEYS[key]: value}), f"{key}.{MAPPING_KEYS[key]}"
    return _nest(key, value), key


def test_the_numeric_settings_are_all_found():
    keys = {key for key, _, _ in NUMERIC}
    assert len(keys) >= 35
    assert {
        "download.connect_timeout_seconds",
        "download.breaker.open_seconds",
        "retry.delays_seconds",
        "streaming.stage_trigger_seconds",
        "kafka.min_partitions",
        "local_kafka.port",
    } <= keys
    dicts = {key for key, _, shape in NUMERIC if shape == "dict"}
    assert dicts <= set(MAPPING_KEYS), f"add a valid key for {sorted(dicts - set(MAPPING_KEYS))} to MAPPING_KEYS"


def test_every_numeric_default_lies_in_its_range():
    base = yaml.safe_load((CONF / "base.yaml").read_text())
    for key, rng, shape in NUMERIC:
        value: Any = base
        for part in key.split("."):
            value = value[part]
        values = list(value) if shape == "tuple" else list(value.values()) if shape == "dict" else [value]
        assert all(v is None or rng.contains(v) for v in values), (key, value, rng.describe())


def outside(rng: Range) -> st.SearchStrategy[Any]:
    """Values the range refuses: non-finite, huge, negative, booleans, text, fractions of whole ranges."""
    above_high = float(rng.high) if float(rng.high) > rng.high else math.nextafter(float(rng.high), INF)
    high = st.floats(min_value=above_high, allow_nan=False)
    low = st.floats(max_value=rng.low, exclude_max=not rng.above, allow_nan=False)
    choices = [
        st.sampled_from([INF, -INF, math.nan, 1e300, -1e300, -1, True, False, None, "10", "1e3", "lots", ""]),
        high,
        low,
        st.integers(min_value=math.floor(rng.high) + 1, max_value=2**200),
        st.integers(min_value=-(2**200), max_value=math.ceil(rng.low) - (0 if rng.above else 1)),
        st.text(max_size=12),
        st.lists(st.integers(), max_size=2),
    ]
    if rng.whole:
        fractions = st.floats(min_value=rng.low, max_value=float(min(rng.high, 2**53)))
        choices.append(fractions.filter(lambda f: not f.is_integer()))
        choices.append(st.integers(min_value=int(rng.low) + 1, max_value=min(int(rng.high), 2**53)).map(float))
    return st.one_of(choices)


# Refused by every range, whatever it is: each numeric setting is tried with all of them.
ALWAYS_BAD = [INF, -INF, math.nan, 1e300, -1e300, -(2**64), 2**64, True, False, "10", "lots"]


@pytest.mark.parametrize(("key", "rng", "shape"), NUMERIC, ids=[k for k, _, _ in NUMERIC])
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_a_value_outside_a_numeric_settings_range_is_refused_naming_key_value_and_range(key, rng, shape, data):
    assert_refused(key, rng, shape, data.draw(outside(rng), label="bad"))


@pytest.mark.parametrize(("key", "rng", "shape"), NUMERIC, ids=[k for k, _, _ in NUMERIC])
def test_infinities_nan_huge_values_booleans_and_text_are_refused_for_every_numeric_setting(key, rng, shape):
    for bad in ALWAYS_BAD:
        assert_refused(key, rng, shape, bad)


def assert_refused(key: str, rng: Range, shape: str, bad: Any) -> None:
    if shape == "scalar" and bad is None and _optional(key):
        return  # null is a value of this setting (e.g. kafka.min_partitions: null)
    overrides, named = _placed(key, shape, bad)
    with pytest.raises(ConfigError) as caught:
        load_settings("local", overrides=overrides)
    line = next((x for x in str(caught.value).splitlines() if x.strip().startswith(f"{named}:")), None)
    assert line is not None, str(caught.value)
    if bad is not None:
        assert f"must be {rng.describe()}" in line
    assert "(got " in line and line.endswith("[overrides]")


def _optional(key: str) -> bool:
    model: Any = Settings
    *parents, leaf = key.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    return type(None) in typing.get_args(model.model_fields[leaf].annotation)


@pytest.mark.parametrize(
    ("text", "got"),
    [(".inf", "inf"), ("-.inf", "-inf"), (".nan", "nan"), ("1.0e+300", "1e+300"), ("true", "True"), ("-5", "-5")],
)
def test_a_bad_value_in_a_conf_file_names_key_value_range_and_file(tmp_path, text, got):
    (tmp_path / "base.yaml").write_text((CONF / "base.yaml").read_text())
    (tmp_path / "local.yaml").write_text(f"download:\n  breaker:\n    open_seconds: {text}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings("local", conf_dir=tmp_path)
    message = str(caught.value)
    assert "download.breaker.open_seconds: must be a number above 0 and at most 86400 seconds" in message
    assert f"(got {got}) [{tmp_path / 'local.yaml'}]" in message


@given(data=st.data())
@settings(max_examples=60, deadline=None)
def test_values_inside_a_range_pass_as_the_declared_type(data):
    key, rng, _ = data.draw(st.sampled_from(NUMERIC), label="setting")
    if rng.whole:
        value: Any = data.draw(st.integers(min_value=math.ceil(rng.low) + rng.above, max_value=int(rng.high)))
    else:
        value = data.draw(st.floats(min_value=rng.low, max_value=rng.high, exclude_min=rng.above) | st.just(rng.high))
    assert rng(value) == value and type(rng(value)) is (int if rng.whole else float), key


def test_a_yaml_text_number_gets_a_hint():
    with pytest.raises(ConfigError, match=r"YAML reads 1e3 as text, so write 1000 or 1\.0e\+3 \(got '1e3'\)"):
        load_settings("local", overrides={"download": {"max_redirects": "1e3"}})


# ---------------------------------------------------------------------------------------- allowed hosts

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
hostname = st.lists(label, min_size=1, max_size=4).map(".".join).filter(lambda h: not h.split(".")[-1].isdigit())


@st.composite
def unmatchable(draw: st.DrawFn) -> str:
    host = draw(hostname)
    return draw(
        st.sampled_from(
            [
                f"https://{host}",
                f"http://{host}/",
                f"{host}:443",
                f"{host}/files",
                f"{host}?x=1",
                f" {host}",
                f"{host} ",
                f"{host}\t",
                f"files {host}",
                "",
                " ",
                f"user@{host}",
                f"{host}.*",
                f"a.*.{host}",
                f"*{host}",
                "*",
                f"**.{host}",
                f"[{host}]",
                f"{host}..",
                f"..{host}",
                f"{host}#x",
                "10.0.0",
                f"*.{host}:80",
                f"-{host}",
                f"{host}%eth0",
            ]
        )
    )


@given(bad=unmatchable(), good=hostname, before=st.integers(min_value=0, max_value=2))
@example(bad="*.example.com:443", good="files.example.com", before=0)
@example(bad="https://host", good="host", before=1)
@settings(max_examples=150, deadline=None)
def test_an_allowed_host_that_can_never_match_is_refused_naming_its_index_and_the_forms(bad, good, before):
    with pytest.raises(ConfigError) as caught:
        load_settings("local", overrides={"url_policy": {"allowed_hosts": [good] * before + [bad]}})
    message = str(caught.value)
    assert f"url_policy.allowed_hosts[{before}]: " in message, message
    assert "can never match" in message and "*.example.com (every subdomain" in message
    assert f"(got {redact(repr(bad))})" in message and "[overrides]" in message  # a query's values masked
    assert message.count("url_policy.allowed_hosts[") == 1  # the good entries pass


@given(
    host=hostname,
    sub=label,
    form=st.sampled_from(["exact", "suffix", "wildcard"]),
    upper=st.booleans(),
    dot=st.booleans(),
)
@settings(max_examples=150, deadline=None)
def test_every_accepted_host_entry_matches_the_hosts_it_says_and_no_other(host, sub, form, upper, dot):
    entry = {"exact": host, "suffix": f".{host}", "wildcard": f"*.{host}"}[form]
    written = (entry.upper() if upper else entry) + ("." if dot else "")  # normalised: case, a trailing dot
    settings_ = load_settings("local", overrides={"url_policy": {"allowed_hosts": [written]}})
    assert settings_.url_policy.allowed_hosts == (entry,)
    policy = UrlPolicy.from_settings(settings_.url_policy)

    def allowed(name: str) -> bool:
        try:
            policy.check_url(f"https://{name}/a.pdf")
        except UrlRefused as refused:
            assert refused.rule == "host", refused
            return False
        return True

    assert allowed(host) is (form != "wildcard")  # *.example.com: never example.com itself
    assert allowed(f"{sub}.{host}") is (form != "exact")
    assert allowed(f"{sub}.{sub}.{host}".upper()) is (form != "exact")  # any depth, any case
    assert not allowed(f"{sub}{host}") and not allowed(f"{host}.{sub}x")  # no prefix glued on, no suffix


def test_ip_address_entries_match_the_url_that_names_them():
    policy = UrlPolicy.from_settings(
        load_settings(
            "local", overrides={"url_policy": {"allowed_hosts": ["93.184.216.34", "2606:4700:4700::1111"]}}
        ).url_policy
    )
    assert policy.check_url("https://93.184.216.34/a.pdf") == ("93.184.216.34", 443)
    assert policy.check_url("https://[2606:4700:4700::1111]:8443/a.pdf") == ("2606:4700:4700::1111", 8443)
    with pytest.raises(UrlRefused, match="not in url_policy.allowed_hosts"):
        policy.check_url("https://93.184.216.35/a.pdf")


# ------------------------------------------------------------------------------ other forms, one each


@pytest.mark.parametrize(
    ("overrides", "named", "message"),
    [
        ({"url_policy": {"allowed_schemes": []}}, "url_policy.allowed_schemes", "allows no scheme"),
        ({"url_policy": {"allowed_schemes": ["ftp"]}}, "url_policy.allowed_schemes[0]", "'http' or 'https'"),
        ({"url_policy": {"allowed_networks": ["10.0.0.1/8"]}}, "url_policy.allowed_networks[0]", "host bits zero"),
        (
            {"kafka": {"bootstrap_servers": "https://ns.servicebus.windows.net"}},
            "kafka.bootstrap_servers",
            "must be host:port",
        ),
        ({"kafka": {"bootstrap_servers": "a:9092,"}}, "kafka.bootstrap_servers", "'' is not host:port"),
        ({"kafka": {"bootstrap_servers": "a:70000"}}, "kafka.bootstrap_servers", "must be host:port"),
        (
            {"kafka": {"producer_options": {"kafka.linger.ms": 5}}},
            "kafka.producer_options.kafka.linger.ms",
            "Spark's kafka. prefix",
        ),
        (
            {"kafka": {"consumer_options": {"bootstrap.servers": "x:1"}}},
            "kafka.consumer_options.bootstrap.servers",
            "set by the pipeline",
        ),
        (
            {"kafka": {"librdkafka_options": {"ssl.key.password": "x"}}},
            "kafka.librdkafka_options.ssl.key.password",
            "secrets are never settings",
        ),
        (
            {"kafka": {"librdkafka_options": {"socket.keepalive.enable": True}}},
            "kafka.librdkafka_options.socket.keepalive.enable",
            "quote a flag",
        ),
        (
            {"kafka": {"producer_options": {"linger.ms": 2**63}}},
            "kafka.producer_options.linger.ms",
            "whole number from -9223372036854775808 to 9223372036854775807",
        ),
        ({"kafka": {"oauth": {"token_endpoint_url": "http://login/x"}}}, "kafka.oauth.token_endpoint_url", "https URL"),
        (
            {"storage": {"lake": {"onelake": {"account_url": "onelake.dfs.fabric.microsoft.com"}}}},
            "storage.lake.onelake.account_url",
            "https URL",
        ),
        (
            {"storage": {"lake": {"onelake": {"token_provider": "module.function"}}}},
            "storage.lake.onelake.token_provider",
            "'package.module:function'",
        ),
        ({"storage": {"lake": {"files_prefix": "../elsewhere"}}}, "storage.lake.files_prefix", "relative path"),
        ({"storage": {"lake": {"files_prefix": "/abs"}}}, "storage.lake.files_prefix", "relative path"),
        ({"storage": {"root": " var"}}, "storage.root", "spaces or a newline around it"),
        ({"storage": {"tables": {"events": ""}}}, "storage.tables.events", "must not be empty"),
        ({"storage": {"tables": {"dlq": "tables/xact_events"}}}, "storage.tables", "two tables share a path"),
        ({"storage": {"checkpoint_root": "cp\n"}}, "storage.checkpoint_root", "spaces or a newline"),
        ({"download": {"cache_dir": "ca\x00che"}}, "download.cache_dir", "control character"),
        ({"topics": {"dlq": {"name": ".."}}}, "topics.dlq.name", "Kafka refuses"),
        ({"topics": {"dlq": {"name": "x" * 250}}}, "topics.dlq.name", "at most 249 characters"),
        ({"topics": {"pending": {"name": "p" * 240}}}, "topics", "pending.name may have at most 235"),
        ({"topics": {"dlq": {"name": "xact.downloads.pending"}}}, "topics", "each topic needs its own"),
        ({"topics": {"dlq": {"name": "xact.downloads.pending.retry.5m"}}}, "topics", "retry tiers' names"),
        ({"retry": {"delays_seconds": list(range(1, 102))}}, "retry.delays_seconds", "at most 100"),
        ({"streaming": {"restart_max_seconds": 1}}, "streaming", "below restart_initial_seconds"),
        ({"spark": {"extra_conf": {"spark ui": "x"}}}, "spark.extra_conf.spark ui", "Spark configuration key"),
        ({"spark": {"app_name": ""}}, "spark.app_name", "must not be empty"),
        ({"local_kafka": {"heap": "0m"}}, "local_kafka.heap", "JVM heap size"),
        (
            {"kafka": {"connection_string": {"vault": "x y", "secret": "s"}}},
            "kafka.connection_string.vault",
            "secret scope name",
        ),
    ],
)
def test_each_name_url_and_path_setting_has_a_form(overrides, named, message):
    with pytest.raises(ConfigError) as caught:
        load_settings("local", overrides=overrides)
    line = next((x for x in str(caught.value).splitlines() if x.strip().startswith(f"{named}:")), "")
    assert message in line, str(caught.value)
    assert re.search(r"\[(.*overrides.*)\]$", line), line


def test_a_secret_pasted_as_a_secret_name_is_refused_without_echoing_it():
    pasted = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=x;SharedAccessKey=S3CRETvalue="
    with pytest.raises(ConfigError) as caught:
        load_settings("local", overrides={"kafka": {"connection_string": {"vault": "xact", "secret": pasted}}})
    assert "kafka.connection_string.secret: must be a secret's name" in str(caught.value)
    assert "S3CRET" not in str(caught.value)


def test_accepted_forms_load():
    s = load_settings(
        "local",
        overrides={
            "kafka": {
                "bootstrap_servers": "b1.example.com:9093, [::1]:9092,SASL_SSL://b2:9093",
                "producer_options": {"linger.ms": 20, "compression.type": "lz4", "retries": -1},
            },
            "storage": {"lake": {"files_prefix": ""}},
            "spark": {"extra_conf": {"spark.ui.port": "0"}},
            "local_kafka": {"heap": "2g"},
            "retry": {"delays_seconds": [1, 7 * 86400], "max_retry_after_seconds": None},
        },
    )
    assert s.kafka.producer_options["retries"] == -1 and s.retry.delays_seconds == (1, 604800)


# -------------------------------------------------------------------------------- shipped conf files


def _filled(env: str) -> dict[str, Any]:
    """Overrides replacing every <placeholder> the overlay leaves with a plausible name ("x")."""
    merged = yaml.safe_load((CONF / "base.yaml").read_text())
    overlay = yaml.safe_load((CONF / f"{env}.yaml").read_text()) or {}

    def merge(into: dict[str, Any], layer: dict[str, Any]) -> None:
        for k, v in layer.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    merge(merged, overlay)
    out: dict[str, Any] = {}

    def walk(node: dict[str, Any], path: str) -> None:
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{path}{k}.")
            elif isinstance(v, str) and re.search(r"<[a-z][a-z0-9_-]*>", v):
                merge(out, _nest(path + k, re.sub(r"<[a-z][a-z0-9_-]*>", "x", v)))

    walk(merged, "")
    return out


@pytest.mark.parametrize("env", sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "base"))
def test_every_shipped_overlay_loads_on_top_of_base_once_its_placeholders_are_filled(env):
    settings_ = load_settings(env, overrides=_filled(env))
    assert settings_.environment == env
    assert settings_.url_policy.allowed_schemes
