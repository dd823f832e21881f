"""Remove secrets from text before it reaches a log, a Kafka payload or a table (invariant 5).

What is replaced by ***:
- query values, default-deny: every parameter value is replaced unless the parameter is known to be
  harmless and useful (expiry and date fields of presigned URLs), so an unknown signature parameter
  is never leaked. This holds in full URLs, in URLs that do not parse (`http://[::1/a?sig=..`), in
  scheme-less paths and fragments as urllib3 writes them (`url: /a.pdf?sig=..`, `?token=..&a=b`,
  `a=1&sig=..`), with JSON-escaped separators (`\\u0026`, `\\u003d`, `\\u003f`, `\\/`) and with
  percent-encoded ones (`%26`, `%3D`, `%3F`: a URL inside another parameter, or on its own);
- URL fragments, and `user:password@` credentials with or without a scheme;
- `Authorization` (and `Proxy-Authorization`) credentials of every scheme, in header form
  (`Authorization: Digest username="u", response=".."`) and in JSON or dict form
  (`'authorization': 'Bearer ..'`); the scheme name is kept;
- values of secret-named keys (password, secret, token, sig, signature, credential, cookie,
  AccountKey, SharedAccessKey, api-key, ...) as `k=v`, `k: v`, `"k": "v"` or `('k', 'v')`;
- bearer tokens and bare JWTs.

Kept text is byte-for-byte the original (nothing is decoded and re-encoded), `redact` is idempotent
and never raises, and one precompiled search lets most strings through untouched (ingest redacts
every string of every event). `redact_payload` decodes JSON before redacting, so no escape can hide
a secret and a secret-named key hides its whole value.
"""

from __future__ import annotations

import functools
import re
from functools import lru_cache
from typing import Any
from urllib.parse import unquote

import orjson

REDACTED = "***"

# Parameters of presigned URLs that carry no secret and help explain failures (expiry, timing).
SAFE_QUERY_PARAMS = frozenset(
    p.lower()
    for p in (
        "X-Amz-Date",
        "X-Amz-Expires",
        "X-Amz-Algorithm",
        "X-Amz-SignedHeaders",
        "se",
        "st",
        "sp",
        "sv",
        "sr",
        "spr",
        "srt",
        "ss",
        "systemDate",
        "expires",
    )
)
# A safe parameter keeps its value only if the value looks like a date, a number or a short list
# (no `=`, `&`, `?`, `/` or escape in which another parameter could be smuggled).
_SAFE_VALUE = re.compile(r"(?:[A-Za-z0-9._~:;,+-]|%(?:2[0BCbc]|3[ABab]))*")


def _safe_value(value: str) -> bool:
    return value.isalnum() or value.replace("-", "").isalnum() or _SAFE_VALUE.fullmatch(value) is not None


# --- Query strings -------------------------------------------------------------------------------
# Separators as they appear raw, JSON-escaped or percent-encoded (after an HTML-escaped `&amp;`,
# `amp;name` is an unknown name: its value goes).
_QMARK = r"(?:\?|\\+u003[fF]|%3[fF])"
_AMP = r"(?:&|\\+u0026|%26)"
_EQ = r"(?:=|\\+u003[dD]|%3[dD])"
# One character of a URL or query run: it ends at whitespace, a quote or an escape other than the
# JSON escapes a URL may hold (`\/`, `\uXXXX`), so `\"` closing a JSON-escaped string ends it.
_RUN = r"(?:[^\s\"'<>`\\]|\\+(?:/|u[0-9a-fA-F]{4}))"
_NAME_CHAR = r"[\w.~%+\[\]-]"

_AMP_SPLIT = re.compile(f"({_AMP})")
_PADDING = re.compile(f"{_EQ}*")
_EQ_SEARCH = re.compile(_EQ)
_QMARK_MATCH = re.compile(_QMARK)
# `?...` or `&...`: a query, or the rest of one, anywhere (scheme-less, escaped, percent-encoded);
# a `?` after `&...` starts a query of its own ("&x?sig=..").
_QUERY_LED = re.compile(f"{_QMARK}{_RUN}+|{_AMP}(?:(?!\\?){_RUN})+")
# `a=1&b=2` without a leading `?`: a query once there is a second pair (it ends at `;`, so in a
# connection string `BlobEndpoint=https://..;SharedAccessSignature=sv=..&sig=..` the endpoint stays).
_PAIRS_RUN = r"(?:[^\s\"'<>`\\;]|\\+(?:/|u[0-9a-fA-F]{4}))"
_QUERY_PAIRS = re.compile(f"(?<!{_NAME_CHAR}){_NAME_CHAR}+{_EQ}{_PAIRS_RUN}*")


def _redact_param(pair: str) -> str:
    eq = _EQ_SEARCH.search(pair)
    if eq is None:  # a bare token ("?abc123") may itself be the secret
        return pair and REDACTED
    key, value = pair[: eq.start()], pair[eq.end() :]
    if _PADDING.fullmatch(value):  # "?dGVzdA==": a bare base64 token, not a name
        return REDACTED
    name = unquote(key).lower() if "%" in key else key.lower()
    if name in SAFE_QUERY_PARAMS and _safe_value(value):
        return pair
    return pair[: eq.end()] + REDACTED


def _redact_plain_pair(pair: str) -> str:
    key, sep, value = pair.partition("=")
    if not value.strip("="):  # a bare token ("?abc123", "?dGVzdA==") may itself be the secret
        return pair and REDACTED
    if (unquote(key) if "%" in key else key).lower() in SAFE_QUERY_PARAMS and _safe_value(value):
        return pair
    return key + "=" + REDACTED


def _redact_query(query: str) -> str:
    """Every value of a query string (without its `?`) replaced, unless safe; separators kept."""
    if not ("\\u00" in query or "%26" in query or "%3d" in query or "%3D" in query):
        return "&".join([_redact_plain_pair(p) for p in query.split("&")])
    pieces = _AMP_SPLIT.split(query)
    pieces[::2] = [_redact_param(p) for p in pieces[::2]]
    return "".join(pieces)


def _query_led(m: re.Match[str]) -> str:
    run = m.group(0)
    if not _EQ_SEARCH.search(run):  # "why?because", "R&D": no parameter, no query
        return run
    lead = _QMARK_MATCH.match(run)
    if lead is None:  # led by a separator: the empty piece before it stays empty
        return _redact_query(run)
    return run[: lead.end()] + _redact_query(run[lead.end() :])


def _query_pairs(m: re.Match[str]) -> str:
    run = m.group(0)
    pieces = _AMP_SPLIT.split(run)
    if not any(_EQ_SEARCH.search(p) for p in pieces[2::2]):  # "a=b" alone is left as it is
        return run
    return _redact_query(run)


# --- URLs ----------------------------------------------------------------------------------------
_URL = re.compile(rf"(?<![A-Za-z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*:(?:\\*/){{2}}{_RUN}+")
_URL_HEAD = re.compile(r"(?:[a-zA-Z][a-zA-Z0-9+.-]*:)?(?:\\*/){2}")
# The authority ends where a password could not go on (the user:password@ rule stops there too).
_AUTHORITY_END = re.compile(r"[/?\s\"'<>]|\\+u003[fF]")
_URL_QMARK = re.compile(r"\?|\\+u003[fF]")  # in a URL, %3F is a character of the path
# scheme://, host and path, query, fragment; no @ or # in the authority and no backslash anywhere.
_PLAIN_URL = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*://)([^/?#\\@\s]*+(?![#@])[^?#\\]*)(?:\?([^#\\]*))?(#.*)?", re.S)


def redact_url(url: str) -> str:
    """The URL with credentials, the fragment and every non-allowlisted query value replaced by ***.

    Works on the raw text without parsing it (so a URL that urlsplit refuses is redacted as well)
    and without decoding and re-encoding, so what is kept is byte-for-byte the original.
    """
    if not url:
        return url
    plain = _PLAIN_URL.fullmatch(url)
    if plain is None:
        return _redact_any_url(url)
    # The common case (a scheme, no credentials, no escapes) in one match; the same result.
    head, path, query, fragment = plain.groups()
    out = head + (_redact_text(path, urls=False) if _maybe_secret(path) else path)
    if query is not None:
        out += "?" + _redact_query(query)
    if fragment is not None:
        out += "#" + REDACTED if len(fragment) > 1 else "#"
    return out


def _redact_any_url(url: str) -> str:
    head = _URL_HEAD.match(url)
    start = head.end() if head else 0
    out = [url[:start]]
    rest = url[start:]
    if head:
        end = _AUTHORITY_END.search(rest)
        at = rest.rfind("@", 0, end.start() if end else len(rest))
        if at >= 0:  # user:password@ (a stray # or @ before the path still counts: be safe)
            out.append(REDACTED)
            rest = rest[at:]
    hash_at = rest.find("#")
    q = _URL_QMARK.search(rest, 0, hash_at if hash_at >= 0 else len(rest))
    path_end = q.start() if q else (hash_at if hash_at >= 0 else len(rest))
    path = rest[:path_end]
    out.append(_redact_text(path, urls=False) if _maybe_secret(path) else path)
    if q:
        out.append(q.group(0))
        out.append(_redact_query(rest[q.end() : hash_at if hash_at >= 0 else len(rest)]))
    if hash_at >= 0:
        out.append("#" + (REDACTED if hash_at + 1 < len(rest) else ""))
    return "".join(out)


def _url(m: re.Match[str]) -> str:
    return redact_url(m.group(0))


# --- Secret-named keys and Authorization ---------------------------------------------------------
_KEY_NAMES = (
    r"password|passwd|pwd|passphrase|secret|token|signature|sig|credentials?|cookie|authorization|sas"
    r"|connection[_-]?string"
    r"|(?:account|sharedaccess|api|access|private|secret|subscription|master|signing|storage|encryption"
    r"|functions|client)[_-]?key"
)
# The name, the key's closing quote if it had one, the separator (a comma only after a quoted key,
# as in ('Authorization', 'Basic ..')), and the `[` of a list of values.
_KEYED = re.compile(
    rf"(?i)(?<![\w.-])(?P<name>[\w.-]*?(?:{_KEY_NAMES}))(?![\w.-])"
    r"(?P<q>\\*[\"'])?(?(q)[ \t]*[:=,]|[ \t]*[:=])[ \t]*(?:\[[ \t]*)?"
)
_SECRET_KEY = re.compile(rf"(?i)(?:{_KEY_NAMES})$")
_QUOTE = re.compile(r"(\\*)([\"'])")
# An unquoted value: up to whitespace, a quote, `,` `;` `&` (or an escaped or encoded `&`): wherever
# a query value ends too, so what the query rule leaves after *** is never taken for a value again.
_PLAIN_VALUE = re.compile(r"(?![{\[])(?:[^\s\"'<>`,;&\\%]|%(?!26)|\\+(?:/|u(?!0026)[0-9a-fA-F]{4}))+")
# After a quoted key ("sig": 5}), an unquoted value is a number or a literal: it ends at a bracket.
_LITERAL_VALUE = re.compile(r"(?![{\[])(?:[^\s\"'<>`,;&\\%)}\]]|%(?!26)|\\+(?:/|u(?!0026)[0-9a-fA-F]{4}))+")
_LINE_VALUE = re.compile(r"(?:[^\r\n\"'\\]|\\(?![nrt\"'\\]))+")  # a cookie: the rest of the line
_REDACTED_WORD = re.compile(r"\*\*\*(?![A-Za-z0-9])")
_NOT_SECRET = frozenset(("null", "none", "true", "false", REDACTED))
# Authorization schemes whose name is kept in front of the ***; after any other first word, that
# word could be the secret itself ("Authorization: <token> <more>"), so the whole value goes.
_AUTH_SCHEMES = frozenset(
    s.lower()
    for s in (
        "Basic", "Bearer", "Digest", "Negotiate", "NTLM", "Kerberos", "HOBA", "Mutual", "VAPID",
        "SCRAM-SHA-1", "SCRAM-SHA-256", "SharedKey", "SharedKeyLite", "SharedAccessSignature",
        "AWS4-HMAC-SHA256", "AWS", "OAuth", "Token", "PrivateToken", "DPoP", "GSSAPI", "Hawk", "MAC",
        "ApiKey", "Key", "SSWS", "GoogleLogin",
    )
)  # fmt: skip
_TOK = r"(?:[^\s\"'\\]|\\+(?:/|u[0-9a-fA-F]{4}))+"
_QSTR = r"\\*\"[^\"\r\n]*\""
_PARAM = rf"[\w!#$%&*+.^`|~-]+[ \t]*=[ \t]*(?:{_QSTR}|(?:[^\s\",\\]|\\+(?:/|u[0-9a-fA-F]{{4}}))+)?"
# scheme, then credentials: an auth-param list (Digest, AWS4-HMAC-SHA256), a quoted string or a token.
_AUTH_UNQUOTED = re.compile(rf"([A-Za-z][\w.+-]{{0,31}})(?:[ \t]+({_PARAM}(?:[ \t]*,[ \t]*{_PARAM})*|{_QSTR}|{_TOK}))?")
_AUTH_SCHEME = re.compile(r"[ \t]*([A-Za-z][\w.+-]{0,31})[ \t]+(?=\S)")

_PLAIN, _SECRET, _AUTH, _LINE = 0, 1, 2, 3


def _key_mode(name: str) -> int:
    lower = name.lower()
    if lower.endswith("authorization"):
        return _AUTH
    if lower.endswith("cookie"):
        return _LINE
    return _SECRET


def _auth_value(value: str) -> str:
    """An Authorization value with the scheme kept and the credentials replaced."""
    scheme = _AUTH_SCHEME.match(value)
    if scheme and scheme.group(1).lower() in _AUTH_SCHEMES:
        return value[: scheme.end()] + REDACTED
    bare = value.strip()
    if not bare or bare.lower() in _AUTH_SCHEMES or bare == REDACTED:
        return value
    return REDACTED


def _closing_quote(text: str, start: int, quote: str, level: int) -> tuple[int, int]:
    """(end of content, end of span) of a string opened by `level` backslashes and `quote`.

    A string opened with k backslashes (k = 2^n - 1 at the n-th level of JSON escaping) is closed by
    a quote preceded by c backslashes with c % 2(k+1) == k; a quoted value never spans lines.
    """
    newline = text.find("\n", start)
    limit = len(text) if newline < 0 else newline
    period = 2 * (level + 1)
    j = start
    while (j := text.find(quote, j, limit)) >= 0:
        c = 0
        while j - c - 1 >= start and text[j - c - 1] == "\\":
            c += 1
        if c % period == level:
            return j - level, j + 1
        j += 1
    return limit, limit


def _is_header(key: re.Match[str] | None) -> bool:
    return key is not None and key.group(0).rstrip(" \t[").endswith(":")


def _auth_credentials(text: str, start: int) -> tuple[int, int, str] | None:
    """An unquoted Authorization value: a known scheme stays, its credentials go; anything else goes whole."""
    auth = _AUTH_UNQUOTED.match(text, start)
    if auth is None or auth.group(2) is None:
        return None
    credentials = auth.start(2)
    if _is_header(_KEYED.match(text, credentials)) or _REDACTED_WORD.match(text, credentials):
        return None
    known = auth.group(1).lower() in _AUTH_SCHEMES
    return auth.start(2 if known else 1), auth.end(2), REDACTED


def _value(text: str, start: int, mode: int, quoted_key: bool) -> tuple[int, int, str] | None:
    """(start, end, replacement) of the value of a secret-named key that starts at `start`."""
    quote = _QUOTE.match(text, start)
    if quote:
        level = len(quote.group(1))
        content_start = quote.end()
        content_end, _ = _closing_quote(text, content_start, quote.group(2), level)
        content = text[content_start:content_end]
        if mode == _AUTH:
            return content_start, content_end, _auth_value(content)
        return content_start, content_end, REDACTED if content else content
    if _KEYED.match(text, start) or _REDACTED_WORD.match(text, start):  # "token= password=x": a key is
        return None  # no value and needs its own; and *** was redacted before (whatever ends the value here)
    if mode == _AUTH and (credentials := _auth_credentials(text, start)) is not None:
        return credentials
    pattern = _LINE_VALUE if mode == _LINE else _LITERAL_VALUE if quoted_key else _PLAIN_VALUE
    plain = pattern.match(text, start)
    if plain is None:
        return None
    bare = plain.group(0)
    if bare.lower() in _NOT_SECRET or (mode == _AUTH and bare.lower() in _AUTH_SCHEMES):
        return None
    return start, plain.end(), REDACTED


def _redact_keyed(text: str) -> str:
    out: list[str] = []
    done = 0
    pos = 0
    while (m := _KEYED.search(text, pos)) is not None:
        pos = m.end()
        found = _value(text, m.end(), _key_mode(m.group("name")), m.group("q") is not None)
        if found is None:
            continue
        start, end, replacement = found
        out.append(text[done:start])
        out.append(replacement)
        done = pos = max(end, m.end())
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


# --- Free-standing tokens ------------------------------------------------------------------------
# A bearer token (not "Bearer https://..": the URL rule has dealt with that as a whole).
_BEARER = re.compile(r"(?i)\b(bearer)[ \t]+(?:[A-Za-z0-9._~+/=-]|\\+/)++(?![:@])")
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]+){1,4}")
# user:password@host without a scheme (with one, redact_url has already done it); bounded, so a long
# line without `@` costs linear time.
_USERINFO = re.compile(
    r"(?<![\w.+%~-])(?!mailto(?::|%3[aA]))[^\s:/@\"'<>\\]{0,128}(?::|%3[aA])[^\s/\"'<>]{1,256}(@|%40)(?=[\w\[])"
)

# Whether any rule below could apply, in two steps, as ingest redacts every string of every event:
# a search for the characters all rules but two need (most strings have none), then, on the
# lowercased text, one search that matches wherever a rule could.
_SEPARATOR_CHARS = re.compile(r"[:=?&%\\@\"']")
_MAYBE_SECRET = re.compile(
    r"://|:\\+/\\+/"
    r"|(?:[?&]|%3f|%26|\\u00(?:26|3f))[^\s\"'<>`?&]{0,256}?(?:=|%3d|\\u003d)"
    rf"|(?:{_KEY_NAMES})(?:\\*[\"'])?[ \t]*[:=,]"
    r"|bearer[ \t]|eyj"
    r"|(?::|%3a)[^\s@/:]{0,256}(?:@|%40)"
)


def _maybe_secret(text: str) -> bool:
    if _SEPARATOR_CHARS.search(text) is None:  # only a bearer token or a JWT needs no separator
        return "eyJ" in text or "bearer" in text.lower()
    return _MAYBE_SECRET.search(text.lower()) is not None


def _redact_text(text: str, urls: bool = True) -> str:
    if urls:
        text = _URL.sub(_url, text)
    text = _redact_keyed(text)
    text = _QUERY_LED.sub(_query_led, text)
    text = _QUERY_PAIRS.sub(_query_pairs, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _JWT.sub(REDACTED, text)
    return _USERINFO.sub(lambda m: REDACTED + m.group(1), text)


def redact_text_without_urls(text: str) -> str:
    """`redact` without the URL rule (query strings, keys, tokens and credentials still go)."""
    if not text or not _maybe_secret(text):
        return text
    return _redact_text(text, urls=False)


def redact(text: str) -> str:
    """Redact URLs, query strings, Authorization values, bearer tokens, JWTs, connection-string keys,
    passwords and user:password@ credentials in free text, raw or JSON-escaped."""
    if not text or not _maybe_secret(text):
        return text
    return _redact_text(text)


# --- JSON payloads -------------------------------------------------------------------------------
_ENCODED = re.compile(r"\\\\|\\/|\\u00(?:26|3[dDfF]|2[fF])|%(?:26|3[dDfF])")
# The escapes of `&`, `=`, `?` and `/` that JSON encoders and URL encoders write.
_DECODED = {
    "\\/": "/",
    "\\u002f": "/",
    "\\u0026": "&",
    "\\u003d": "=",
    "\\u003f": "?",
    "%26": "&",
    "%3d": "=",
    "%3f": "?",
}


def _normalise(text: str) -> str:
    """Decode the escapes a secret could hide behind (an escaped backslash stays as it is)."""
    if "\\" not in text and "%" not in text:
        return text
    return _ENCODED.sub(lambda m: _DECODED.get(m.group(0).lower(), m.group(0)), text)


def _json_key(key: str) -> tuple[str, int]:
    """A decoded object key, redacted, and how its value is to be treated."""
    return _json_key_cached(key) if len(key) <= 64 else _json_key_uncached(key)


def _json_key_uncached(key: str) -> tuple[str, int]:
    return redact(key), _key_mode(key) if _SECRET_KEY.search(key) else _PLAIN


_json_key_cached = lru_cache(maxsize=4096)(_json_key_uncached)  # keys repeat from one payload to the next


def _json_string(text: str) -> str:
    if text.lstrip()[:1] in ("{", "["):  # a JSON document inside a string (an event's `data`)
        try:
            inner = orjson.loads(text)
        except ValueError:
            return redact(text)
        if isinstance(inner, (dict, list)):
            redacted = _redact_json(inner, _PLAIN)
            return text if redacted == inner else orjson.dumps(redacted).decode()
    return redact(text)


def _redact_json(value: Any, mode: int) -> Any:
    if isinstance(value, str):
        if mode == _PLAIN:
            return _json_string(value)
        if mode == _AUTH:
            return _auth_value(value)
        return REDACTED if value else value
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            key, key_mode = _json_key(k)
            out[key] = _redact_json(v, mode or key_mode)
        return out
    if isinstance(value, list):
        return [_redact_json(v, mode) for v in value]
    if mode != _PLAIN and isinstance(value, (int, float)) and not isinstance(value, bool):
        return REDACTED
    return value


def redact_json(value: Any) -> Any:
    """A decoded JSON value with every string redacted and every value of a secret-named key
    (password, token, sig, authorization, ...) replaced; object keys are redacted too."""
    return _redact_json(value, _PLAIN)


def _redact_json_text(text: str) -> str | None:
    try:
        decoded = orjson.loads(text)
    except ValueError:  # orjson.JSONDecodeError: not JSON (lone surrogates, huge integers included)
        return None
    try:
        return orjson.dumps(_redact_json(decoded, _PLAIN)).decode()
    except (TypeError, RecursionError):  # a lone surrogate escape; nesting deeper than Python recurses
        return None


def redact_payload(text: str) -> str:
    """A payload (a message body, a dead letter's input) with its secrets removed.

    JSON is decoded, every string in it redacted (object keys too, and a secret-named key hides its
    whole value), and re-encoded compactly, so no escape (`\\u0026`, `\\/`) can hide a secret.
    Anything else is redacted as text after the escapes a secret could hide behind (`\\u0026`,
    `\\u003d`, `\\u003f`, `\\/`, `%26`, `%3D`, `%3F`) are decoded.
    """
    if not text:
        return text
    encoded = _redact_json_text(text)
    if encoded is not None:
        return encoded
    redacted = redact(_normalise(text))
    # Redacting broken JSON can mend it ('{"sig": "\\x"}'): then the JSON form is the fixed point.
    encoded = _redact_json_text(redacted) if redacted != text else None
    return redacted if encoded is None else encoded


def truncate(text: str, limit: int) -> str:
    """Cut text to `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more chars]"


@functools.lru_cache(maxsize=4096)  # an event's keys repeat across events
def is_secret_key(name: str) -> bool:
    """Whether a field named `name` holds a secret as a whole (password, token, sig, authorization, ...)."""
    return bool(_SECRET_KEY.search(name))
