"""Property-based tests of redaction (invariant 5): generated secrets in every carrier, random text
around them, arbitrary text and JSON.

- a secret embedded in any carrier never reaches the output of redact / redact_payload;
- redact, redact_url and redact_payload never raise on any string and are idempotent;
- a JSON payload comes back as valid JSON without the secret, however it was escaped.
"""

from __future__ import annotations

import json
import string
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pipeline_lib import redaction
from pipeline_lib.redaction import redact, redact_payload, redact_url

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

SECRET_ALPHABET = string.ascii_letters + string.digits + "+=_-"
secrets = st.text(SECRET_ALPHABET, min_size=16, max_size=64)
b64url = st.text(string.ascii_letters + string.digits + "_-", min_size=16, max_size=64)
schemes = st.sampled_from(["Basic", "Bearer", "Negotiate", "NTLM", "Token"]) | st.from_regex(
    r"[A-Za-z][A-Za-z0-9-]{0,15}", fullmatch=True
)

# Every place a secret is known to travel; {S} is the secret.
CARRIERS = [
    # query strings
    "https://bucket.s3.amazonaws.com/a/b.pdf?X-Amz-Date=20260101T000000Z&X-Amz-Expires=60&X-Amz-Signature={S}",
    "https://acct.blob.core.windows.net/c/a.pdf?sv=2022-11-02&se=2026-01-01T00%3A00%3A00Z&sig={S}",
    "https://h/a?{S}",
    "/x?sig={S}",
    "?token={S}&a=b",
    "a=1&sig={S}",
    "http://[::1/a.pdf?sig={S}",
    "https:\\/\\/h\\/a?x=1\\u0026X-Amz-Signature={S}",
    "\\/a\\u003fsig\\u003d{S}",
    "https%3A%2F%2Fh%2Fa%3Fsig%3D{S}",
    "https://h/r?next=https%3A%2F%2Fh%2Fa%3Fx%3D1%26sig%3D{S}&X-Amz-Date=20260101T000000Z",
    "HTTPConnectionPool(host='h', port=80): Max retries exceeded with url: /a.pdf?X-Amz-Signature={S} (Caused by x)",
    "https://h/cb#access_token={S}",
    "https://h/a?X-Amz-Date=1\\u0026sig={S}",
    # Authorization without a scheme, and the schemes whose credentials are not one token
    "Authorization: {S}",
    "{{'authorization': '{S}'}}",
    'Authorization: Digest username="u", realm="r", nonce="n", uri="/a", response="{S}", qop=auth',
    "Authorization: AWS4-HMAC-SHA256 Credential=AKIA/1/us-east-1/s3/aws4_request, SignedHeaders=host, Signature={S}",
    "Authorization: SharedKey account:{S}",
    '{{"Authorization": "SharedKey account:{S}"}}',
    "[('Authorization', 'SharedKeyLite account:{S}')]",
    # connection strings
    "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={S};EntityPath=t",
    "DefaultEndpointsProtocol=https;AccountName=a;AccountKey={S};EndpointSuffix=core.windows.net",
    "BlobEndpoint=https://a.blob.core.windows.net/;SharedAccessSignature=sv=2022-11-02&sig={S}",
    "Server=db;Uid=app;Pwd={S};",
    # credentials and secret-named keys
    "user:{S}@cache.local:6379",
    "https://user:{S}@host/x",
    "redis://:{S}@cache:6379/0",
    "https://{S}@github.com/o/r.git",
    '{{"password": "{S}"}}',
    "client_secret={S}",
    "x-api-key: {S}",
    "Cookie: session={S}; theme=dark",
    '{{\\"token\\":\\"{S}\\"}}',
]

surrounding = st.text(max_size=30)
separators = st.sampled_from([" ", "\n", "\t", " | "])


@st.composite
def carried(draw: Any) -> tuple[str, str]:
    """(secret, text carrying it)."""
    kind = draw(st.sampled_from(["template", "authorization", "jwt"]))
    if kind == "jwt":
        parts = [draw(b64url), draw(b64url), draw(b64url)]
        secret = ".".join(parts)
        text = f"eyJ{parts[0]}.eyJ{parts[1]}.{parts[2]}"
        secret = text
    elif kind == "authorization":
        secret = draw(secrets)
        scheme = draw(schemes)
        assume(secret not in scheme)
        value = f"{scheme} {secret}"
        form = draw(
            st.sampled_from(
                [
                    "Authorization: {v}",
                    "proxy-authorization: {v}",
                    "{{'authorization': '{v}'}}",
                    "{j}",
                    "[('Authorization', '{v}')]",
                    '-H "Authorization: {v}"',
                ]
            )
        )
        text = form.format(v=value, j=json.dumps({"Authorization": value}))
    else:
        secret = draw(secrets)
        template = draw(st.sampled_from(CARRIERS))
        assume(secret not in template and secret.lower() not in redaction._AUTH_SCHEMES)  # "Authorization: Basic"
        text = template.format(S=secret)
    before, after = draw(surrounding), draw(surrounding)
    assume(secret not in before + after)
    return secret, f"{before}{draw(separators)}{text}{draw(separators)}{after}"


@FAST
@given(carried())
def test_a_carried_secret_never_reaches_the_output(case):
    secret, text = case
    out = redact(text)
    assert secret not in out
    assert redact(out) == out
    payload = redact_payload(text)
    assert secret not in payload
    assert redact_payload(payload) == payload


@FAST
@given(carried())
def test_a_carried_secret_inside_json_never_reaches_the_output(case):
    secret, text = case
    for encoded in (json.dumps({"message": text}), json.dumps([text]).replace("/", "\\/").replace("&", "\\u0026")):
        assert secret not in redact(encoded)  # as text
        assert secret not in redact_payload(encoded)  # decoded


@settings(max_examples=500, deadline=None)
@given(st.text())
def test_redaction_never_raises_and_is_idempotent(text):
    out = redact(text)
    assert isinstance(out, str) and redact(out) == out
    url = redact_url(text)
    assert isinstance(url, str) and redact_url(url) == url
    payload = redact_payload(text)
    assert isinstance(payload, str) and redact_payload(payload) == payload


# Text made of the pieces the rules look for, so the generator reaches their corners.
PIECES = list(":/?&=#@%;,\\\"' .-_*{}[]\n\tu0123456789aDFeyJ") + [
    "\\u0026", "\\u003d", "\\u003f", "%26", "%3D", "%3F", "%3A", "%40", "\\/", '\\"', "https://", "Authorization",
    "password", "token", "sig", "Bearer ", "Digest ", "eyJabcd.efgh", "&amp;", "mailto:", "X-Amz-Date", "se", "cookie",
    '{"', '":', "null",
]  # fmt: skip
tricky = st.lists(st.sampled_from(PIECES), max_size=40).map("".join)


@settings(max_examples=500, deadline=None)
@given(tricky)
def test_tricky_text_never_raises_and_is_idempotent(text):
    out = redact(text)
    assert redact(out) == out
    url = redact_url(text)
    assert redact_url(url) == url
    payload = redact_payload(text)
    assert redact_payload(payload) == payload


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["https://", "http://", "s3://", "a+b.c://"]), tricky)
def test_the_fast_url_path_agrees_with_the_general_one(scheme, rest):
    url = scheme + rest
    if redaction._PLAIN_URL.fullmatch(url):
        assert redact_url(url) == redaction._redact_any_url(url)


# --- JSON payloads ---------------------------------------------------------------------------------

SECRET_KEYS = ["password", "client_secret", "sig", "X-Amz-Signature", "access_token", "AccountKey", "Authorization"]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
keys = st.text(max_size=8) | st.sampled_from(["url", "note", "data", "headers"])


class _Secret:
    """Where a generated JSON value gets a secret: carrier `index` (or, as a dict, a secret-named key)."""

    def __init__(self, index: int) -> None:
        self.index = index


def _fill(value: Any, carriers: list[Any]) -> Any:
    if isinstance(value, _Secret):
        return carriers[value.index % len(carriers)]
    if isinstance(value, list):
        return [_fill(v, carriers) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, carriers) for k, v in value.items()}
    return value


json_values = st.recursive(
    json_scalars | st.builds(_Secret, st.integers(0, 1000)),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=4),
    max_leaves=15,
)


@FAST
@given(json_values, secrets, st.sampled_from(["plain", "escaped", "nested"]))
def test_json_payloads_come_back_valid_without_the_secret(tree, secret, encoding):
    skeleton = orjson.dumps(_fill(tree, [""])).decode()
    assume(secret not in skeleton and secret.lower() not in redaction._AUTH_SCHEMES)
    carriers: list[Any] = [template.format(S=secret) for template in CARRIERS if secret not in template]
    carriers += [{key: secret} for key in SECRET_KEYS] + [f"Bearer {secret}", {"Authorization": f"Basic {secret}"}]
    value = {"event": _fill(tree, carriers), "attachments": [carriers[0]]}
    text = json.dumps(value)
    if encoding == "escaped":  # as Go and PHP encoders write it: & and / escaped
        text = text.replace("&", "\\u0026").replace("/", "\\/")
    elif encoding == "nested":  # an event whose data is a JSON string
        text = json.dumps({"data": text})
    assert secret in text
    out = redact_payload(text)
    assert secret not in out
    orjson.loads(out)  # valid JSON
    assert out == orjson.dumps(orjson.loads(out)).decode()  # compact
    assert redact_payload(out) == out


# --- Encodings and key names (issue #22, item 5) -----------------------------------------------

# Names under which a secret travels in a query, a path parameter or `key=value` text.
SECRET_NAMES = [
    "sig", "X-Amz-Signature", "X-Goog-Signature", "Signature", "token", "access_token", "password", "pass", "passwd",
    "pwd", "key", "api_key", "apikey", "x-api-key", "session_id", "sessionid", "jsessionid", "PHPSESSID",
    "client_secret", "AccountKey", "db_pass",
]  # fmt: skip
distinct_secrets = st.text(string.ascii_letters + string.digits, min_size=12, max_size=40)


def _percent(text: str, times: int = 1) -> str:
    """The separators of a query percent-encoded, then the whole encoded again `times - 1` times."""
    out = "".join(f"%{ord(c):02X}" if c in "?&=;#" else c for c in text)
    for _ in range(times - 1):
        out = out.replace("%", "%25")
    return out


# URL forms: {k} is the parameter name, {s} the secret; redact_url and redact must both hide it.
URL_FORMS = {
    "raw": lambda k, s: f"https://files.example.com/c/a.pdf?fileId=1001&{k}={s}",
    "percent once": lambda k, s: "https://h.example.com/r?next=" + _percent(f"https://f.example.com/a.pdf?{k}={s}"),
    "percent twice": lambda k, s: "https://h.example.com/r?next=" + _percent(f"https://f.example.com/a.pdf?{k}={s}", 2),
    "percent twice, & first": lambda k, s: (
        "https://h.example.com/r?next=" + _percent(f"https://f.example.com/a.pdf?a=1&{k}={s}", 2)
    ),
    "json escapes": lambda k, s: f"https://files.example.com/a.pdf\\u003fx=1\\u0026{k}\\u003d{s}",
    "json escapes, escaped slashes": lambda k, s: f"https:\\/\\/files.example.com\\/a.pdf\\u003f{k}\\u003d{s}",
    "&amp;": lambda k, s: f"https://files.example.com/a.pdf?a=1&amp;{k}={s}",
    "query in the last segment": lambda k, s: f"https://h.example.com/path/file.pdf{_percent(f'?{k}={s}')}",
    "query in the last segment, twice": lambda k, s: (
        f"https://h.example.com/path/file.pdf{_percent(f'?x=1&{k}={s}', 2)}"
    ),
    "path parameter": lambda k, s: f"https://files.example.com/c/a.pdf;{k}={s}",
    "path parameter and query": lambda k, s: f"https://files.example.com/c/a.pdf;{k}={s}?fileId=1001",
    "scheme-less": lambda k, s: f"/c/a.pdf?{k}={s}",
    "scheme-less, percent once": lambda k, s: _percent(f"/c/a.pdf?x=1&{k}={s}"),
    "scheme-less, percent twice": lambda k, s: _percent(f"/c/a.pdf?x=1&{k}={s}", 2),
}
# Text forms: only redact sees them.
TEXT_FORMS = {
    "key=value": lambda k, s: f"note for the adjuster: {k}={s} thanks",
    "header": lambda k, s: f"{k}: {s}",
    "json": lambda k, s: json.dumps({k: s}),
    "json escaped in json": lambda k, s: json.dumps(json.dumps({k: s})),
    "dict repr": lambda k, s: repr({k: s}),
}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(sorted(URL_FORMS)),
    st.sampled_from(SECRET_NAMES),
    distinct_secrets,
    surrounding,
    surrounding,
)
def test_a_secret_in_any_url_encoding_is_hidden_by_redact_url_and_redact(form, name, secret, before, after):
    url = URL_FORMS[form](name, secret)
    assume(secret not in URL_FORMS[form](name, "") and secret not in before + after)
    out = redact_url(url)
    assert secret not in out
    assert redact_url(out) == out
    text = f"{before} {url} {after}"
    out = redact(text)
    assert secret not in out
    assert redact(out) == out
    assert secret not in redact_payload(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(TEXT_FORMS)), st.sampled_from(SECRET_NAMES), distinct_secrets, surrounding)
def test_a_secret_under_a_secret_name_is_hidden_in_text(form, name, secret, before):
    text = f"{before} {TEXT_FORMS[form](name, secret)}"
    assume(secret not in before)
    out = redact(text)
    assert secret not in out
    assert redact(out) == out
    assert secret not in redact_payload(text)


# Names that only end like a secret name, and ordinary values: what they hold stays visible.
VISIBLE = [
    "fileId=1001",
    "see fileId=1001 and page=3",
    "monkey=5",
    "bypass=1",
    "compass: north",
    "hotkey: F5",
    "postal code: 90210",
    "error code: 404",
    "sessions=4",
    "passenger=2",
]


@pytest.mark.parametrize("text", VISIBLE)
def test_names_that_only_end_like_a_secret_name_stay_visible(text):
    assert redact(text) == text
