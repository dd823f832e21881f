"""No secret in any stored column, lake path, results or DLQ message (invariants 5 and 11).

Generated secrets go into every field of an event, in every encoding a source or a producer may
use: raw, percent-encoded once and twice, JSON \\u00xx escapes, `&amp;` separators, inside the
last path segment of a URL, as path parameters and under the key names people use. Then the
event runs through ingest and every later stage's outputs (tests/unit/test_chain.py) and none of
them may hold the secret: only the live URL of a task on the work topics (pending, retry, cached)
keeps it, because the download needs it. Issue #22, item 5.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline_lib.contracts import CachedAttachment, DownloadTask
from pipeline_lib.events import EVENT_FIELDS, ingest_record
from tests.unit.test_chain import NOW, OPTIONS, POLICY, SETTINGS, SRC, chain

# A secret: distinctive, so finding it is never an accident of other text.
_secret = st.text(
    st.sampled_from("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789"), min_size=12, max_size=24
).map(lambda s: f"Zq9{s}")
_key = st.sampled_from(
    [
        "sig",
        "X-Amz-Signature",
        "X-Goog-Signature",
        "Signature",
        "token",
        "access_token",
        "password",
        "pass",
        "passwd",
        "key",
        "api_key",
        "session_id",
        "sessionid",
        "client_secret",
    ]
)


def _percent(text: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in "?&=;#" else c for c in text)


# Each takes (key, secret) and gives text that carries the secret in one encoding.
ENCODINGS = {
    "raw query": lambda k, s: f"https://files.example.com/c/a.pdf?fileId=1&{k}={s}",
    "percent once": lambda k, s: "https://h.example.com/r?next=" + _percent(f"https://files.example.com/a.pdf?{k}={s}"),
    "percent twice": lambda k, s: (
        "https://h.example.com/r?next=" + _percent(f"https://files.example.com/a.pdf?{k}={s}").replace("%", "%25")
    ),
    "json escape": lambda k, s: f"https://files.example.com/a.pdf\\u003fx=1\\u0026{k}\\u003d{s}",
    "amp entity": lambda k, s: f"https://files.example.com/a.pdf?x=1&amp;{k}={s}",
    "last segment": lambda k, s: f"https://files.example.com/c/report.pdf{_percent(f'?{k}={s}')}",
    "last segment twice": lambda k, s: (
        "https://files.example.com/c/report.pdf" + _percent(f"?{k}={s}").replace("%", "%25")
    ),
    "jsessionid": lambda k, s: f"https://files.example.com/c/a.pdf;jsessionid={s}",
    "keyed text": lambda k, s: f"note for the adjuster: {k}={s} thanks",
    "quoted json": lambda k, s: f'{{"{k}": "{s}"}}',
}
_carrier = st.builds(lambda enc, k, s: (ENCODINGS[enc](k, s), s), st.sampled_from(sorted(ENCODINGS)), _key, _secret)
# The flattened fields, except the event's time (parsed, never stored as sent) and the type,
# which names the stage of the claim.
_TEXT_FIELDS = [f for f in EVENT_FIELDS if f.type == "string" and f.column != "event_type"]


def _set(tree: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    for key in path[:-1]:
        tree = tree.setdefault(key, {})
    tree[path[-1]] = value


def _event(carriers: dict[str, str], attachments: list[Any]) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": "verisk.claims.property.xn.documentsReceived",
        "utcDateTime": "2026-12-03T10:00:00Z",
        "data": {"assignmentId": "A1", "attachments": attachments},
    }
    for spec in _TEXT_FIELDS:
        _set(event, spec.path, carriers.get(spec.column, "plain"))
    event.setdefault("traceId", "T-1")
    return event


def _strings(value: Any) -> str:
    return json.dumps(value, default=str)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    fields=st.dictionaries(st.sampled_from([f.column for f in _TEXT_FIELDS]), _carrier, max_size=6),
    urls=st.lists(_carrier, min_size=1, max_size=3),
    as_object=st.booleans(),
    escape_json=st.booleans(),
)
def test_a_secret_in_any_field_in_any_encoding_reaches_no_table_path_or_message(fields, urls, as_object, escape_json):
    secrets = [s for _, s in fields.values()] + [s for _, s in urls]
    carriers = {column: text for column, (text, _) in fields.items()}
    attachments: list[Any] = [u for u, _ in urls]
    if as_object:  # an attachment given as a JSON object: stored as redacted JSON, never as its repr
        attachments.append({"url": attachments[0], "note": carriers.get("note", "n")})
    raw = json.dumps(_event(carriers, attachments))
    if escape_json:  # the producer escaped ?, & and = as \\u00xx
        raw = raw.replace("?", "\\u003f").replace("&", "\\u0026").replace("=", "\\u003d")
    result = ingest_record(raw, SRC, POLICY, NOW, OPTIONS)
    stored = [_strings(result.event), *(_strings(d.to_dict()) for d in result.dead)]
    for task in result.tasks:  # the task itself is a work-topic message: only its url is live
        stored.append(_strings({k: v for k, v in task.to_dict().items() if k != "url"}))
    seen = chain(raw, result)
    for topic, key, value, headers, row in seen.records:
        if topic in (SETTINGS.topics.results.name, SETTINGS.topics.dlq.name):
            stored += [value, key or "", _strings(headers), _strings(row)]
        else:  # work topics: everything but the live URL
            kind = json.loads(value)["schema"]
            task = (
                DownloadTask.decode(value)
                if kind == DownloadTask.KIND
                else CachedAttachment.decode(value).download_task
            )
            stored += [key or "", _strings({k: v for k, v in task.to_dict().items() if k != "url"})]
    text = "\n".join(stored)
    for secret in secrets:
        at = text.find(secret)
        assert at < 0, f"{secret} leaked: ...{text[max(0, at - 200) : at + 40]}"
