"""Remove secrets from text before it reaches a log, a Kafka payload or a table (invariant 5).

What is replaced by ***:
- query values, default-deny: every parameter value is replaced unless the parameter is known to be
  harmless and useful (expiry and date fields of presigned URLs), so an unknown signature parameter
  is never leaked. This holds in full URLs, in URLs that do not parse (`http://[::1/a?sig=..`), in
  scheme-less paths and fragments as urllib3 writes them (`url: /a.pdf?sig=..`, `?token=..&a=b`,
  `a=1&sig=..`), with JSON-escaped separators (`\\u0026`, `\\u003d`, `\\u003f`, `\\/`), with
  percent-encoded ones, once or more (`%26`, `%3D`, `%3F`, `%2526`, `%253D`, `%253F`: a URL inside
  another parameter, on its own, or a query encoded into the last path segment), and after `&amp;`;
- URL fragments, and `user:password@` credentials with or without a scheme;
- `Authorization` (and `Proxy-Authorization`) credentials of every scheme, in header form
  (`Authorization: Digest username="u", response=".."`) and in JSON or dict form
  (`'authorization': 'Bearer ..'`); the scheme name is kept;
- values of secret-named keys (password, passwd, pass, secret, token, sig, signature, credential,
  cookie, key, AccountKey, SharedAccessKey, api-key, session ids such as jsessionid, session_id or
  PHPSESSID, an OAuth `code=`, ...) as `k=v`, `k: v`, `"k": "v"` or `('k', 'v')`, and as path
  parameters (`/a.pdf;jsessionid=..`); a name that only ends like one (`monkey`, `bypass`) is no key;
- bearer tokens and bare JWTs.

Kept text is byte-for-byte the original (nothing is decoded and re-encoded), `redact` is idempotent
and never raises, and one precompiled search lets most strings through untouched (ingest redacts
every string of every event). `redact_payload` decodes JSON before redacting, so no escape can hide
a secret and a secret-named key hides its whole value. Every function takes time linear in its
input (invariant 10; see "Linear time" below).
"""

from __future__ import annotations

import functools
import re
from bisect import bisect_left, bisect_right
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


# --- Linear time (invariant 10) ------------------------------------------------------------------
# Every pattern below is searched over whole records, so none may rescan what it has read: a run of
# backslashes is entered only at its first backslash and taken whole (`(?<!\\)\\++`: a search
# that started inside the run would read the rest of it again, for each backslash), repetitions of
# classes that cannot overlap are possessive, and the rules whose regex would try many splits of
# one stretch of text (secret-named keys, user:password@) find their anchors first and are scanned
# in Python (_Keys, _redact_userinfo). tests/unit/test_linear_time.py times them.
_BS = r"(?<!\\)\\++"

# --- Query strings -------------------------------------------------------------------------------
# Separators as they appear raw, JSON-escaped or percent-encoded, once or more (`%3F`, `%253F`:
# a URL inside a parameter, encoded again); after an HTML-escaped `&amp;`, `amp;name` is an
# unknown name: its value goes.
_QMARK = rf"(?:\?|{_BS}u003[fF]|%(?:25)*3[fF])"
_AMP = rf"(?:&|{_BS}u0026|%(?:25)*26)"
_EQ = rf"(?:=|{_BS}u003[dD]|%(?:25)*3[dD])"
# One character of a URL or query run: it ends at whitespace, a quote or an escape other than the
# JSON escapes a URL may hold (`\/`, `\uXXXX`), so `\"` closing a JSON-escaped string ends it.
_RUN = rf"(?:[^\s\"'<>`\\]|{_BS}(?:/|u[0-9a-fA-F]{{4}}))"
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
_PAIRS_RUN = rf"(?:[^\s\"'<>`\\;]|{_BS}(?:/|u[0-9a-fA-F]{{4}}))"
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
    if not ("\\u00" in query or "%26" in query or "%3d" in query or "%3D" in query or "%25" in query):
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
    if "&" not in run and "%" not in run and "\\" not in run:  # no separator, so no second pair
        return run
    pieces = _AMP_SPLIT.split(run)
    if not any(_EQ_SEARCH.search(p) for p in pieces[2::2]):  # "a=b" alone is left as it is
        return run
    return _redact_query(run)


# --- URLs ----------------------------------------------------------------------------------------
_URL = re.compile(rf"(?<![A-Za-z0-9+.-])[a-zA-Z][a-zA-Z0-9+.-]*:(?:\\*/){{2}}{_RUN}+")
_URL_HEAD = re.compile(r"(?:[a-zA-Z][a-zA-Z0-9+.-]*:)?(?:\\*/){2}")
# The authority ends where a password could not go on (the user:password@ rule stops there too).
_AUTHORITY_END = re.compile(rf"[/?\s\"'<>]|{_BS}u003[fF]")
_URL_QMARK = re.compile(rf"\?|{_BS}u003[fF]")  # in a URL, %3F is a character of the path
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
    # Session ids (`;jsessionid=`, `session_id=`, PHPSESSID), and the short names only as a word of
    # their own or after a separator (`key=`, `db_pass=`, not `monkey=` or `bypass=`); an OAuth
    # `code=` only before `=` (`code: 404` and a postal code stay).
    r"|session[_-]?id|sessid|(?<![^\W_])(?:key|pass)|(?<![\w.-])code(?=[ \t]*=)"
)
# The name, the key's closing quote if it had one, the separator (a comma only after a quoted key,
# as in ('Authorization', 'Basic ..')), and the `[` of a list of values.
_KEY_SEPARATOR = r"(?P<q>\\*[\"'])?(?(q)[ \t]*[:=,]|[ \t]*[:=])[ \t]*(?:\[[ \t]*)?"
_KEYED = re.compile(rf"(?i)(?<![\w.-])(?P<name>[\w.-]*?(?:{_KEY_NAMES}))(?![\w.-]){_KEY_SEPARATOR}")
_SECRET_KEY = re.compile(rf"(?i)(?:{_KEY_NAMES})$")
# _KEYED as searched (_Keys): a key name that ends a word, found on the lower-cased text when that
# keeps every position (ASCII; a case-insensitive search of the alternatives costs five times as
# much), then matched from the key name on (_KEYED's `name` is the whole word; only its ending
# decides anything, and the earliest key name that ends a word is the one _KEYED takes).
_KEY_HIT = re.compile(rf"(?:{_KEY_NAMES})(?![\w.-])")
_KEY_HIT_ANY_CASE = re.compile(rf"(?i)(?:{_KEY_NAMES})(?![\w.-])")
_KEYED_AT = re.compile(rf"(?i)(?P<name>{_KEY_NAMES})(?![\w.-]){_KEY_SEPARATOR}")
_NOT_WORD = re.compile(r"[^\w.-]")
_QUOTE = re.compile(r"(\\*)([\"'])")
# An unquoted value: up to whitespace, a quote, `,` `;` `&` (or an escaped or encoded `&`): wherever
# a query value ends too, so what the query rule leaves after *** is never taken for a value again.
_PLAIN_VALUE = re.compile(rf"(?![{{\[])(?:[^\s\"'<>`,;&\\%]|%(?!(?:25)*26)|{_BS}(?:/|u(?!0026)[0-9a-fA-F]{{4}}))++")
# After a quoted key ("sig": 5}), an unquoted value is a number or a literal: it ends at a bracket.
_LITERAL_VALUE = re.compile(
    rf"(?![{{\[])(?:[^\s\"'<>`,;&\\%)}}\]]|%(?!(?:25)*26)|{_BS}(?:/|u(?!0026)[0-9a-fA-F]{{4}}))++"
)
_LINE_VALUE = re.compile(r"(?:[^\r\n\"'\\]|\\(?![nrt\"'\\]))+")  # a cookie: the rest of the line
_REDACTED_WORD = re.compile(r"\*\*\*(?![A-Za-z0-9])")
_ALNUM = re.compile(r"[^\W_]")
_NOT_SECRET = frozenset(("null", "none", "true", "false", REDACTED))
# Authorization schemes whose name is kept in front of the ***; after any other first word, that
# word could be the secret itself ("Authorization: <token> <more>"), so the whole value goes.
_AUTH_SCHEMES = frozenset(
    s.lower()
    for s in (
        "Basic",
        "Bearer",
        "Digest",
        "Negotiate",
        "NTLM",
        "Kerberos",
        "HOBA",
        "Mutual",
        "VAPID",
        "SCRAM-SHA-1",
        "SCRAM-SHA-256",
        "SharedKey",
        "SharedKeyLite",
        "SharedAccessSignature",
        "AWS4-HMAC-SHA256",
        "AWS",
        "OAuth",
        "Token",
        "PrivateToken",
        "DPoP",
        "GSSAPI",
        "Hawk",
        "MAC",
        "ApiKey",
        "Key",
        "SSWS",
        "GoogleLogin",
    )
)
_TOK = rf"(?:[^\s\"'\\]|{_BS}(?:/|u[0-9a-fA-F]{{4}}))++"
_QSTR = r"\\*\"[^\"\r\n]*\""
_PARAM = rf"[\w!#$%&*+.^`|~-]+[ \t]*=[ \t]*(?:{_QSTR}|(?:[^\s\",\\]|{_BS}(?:/|u[0-9a-fA-F]{{4}}))++)?"
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


_name_mode = lru_cache(maxsize=256)(_key_mode)  # for the key names _KEYED_AT finds: a few dozen spellings


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


def _auth_credentials(text: str, start: int, keys: _Keys) -> tuple[int, int, str] | None:
    """An unquoted Authorization value: a known scheme stays, its credentials go; anything else goes whole."""
    auth = _AUTH_UNQUOTED.match(text, start)
    if auth is None or auth.group(2) is None:
        return None
    credentials = auth.start(2)
    if _is_header(keys.at(credentials)) or _REDACTED_WORD.match(text, credentials):
        return None
    known = auth.group(1).lower() in _AUTH_SCHEMES
    return auth.start(2 if known else 1), auth.end(2), REDACTED


def _value(
    text: str, start: int, mode: int, quoted_key: bool, keys: _Keys, quote: re.Match[str] | None
) -> tuple[int, int, str] | None:
    """(start, end, replacement) of the value of a secret-named key that starts at `start`
    (`quote`: _QUOTE matched there)."""
    if quote:
        level = len(quote.group(1))
        content_start = quote.end()
        content_end, _ = _closing_quote(text, content_start, quote.group(2), level)
        content = text[content_start:content_end]
        if mode == _AUTH:
            return content_start, content_end, _auth_value(content)
        return content_start, content_end, REDACTED if content else content
    if _REDACTED_WORD.match(text, start):  # *** was redacted before (whatever ends the value here)
        return None
    if mode == _AUTH and (credentials := _auth_credentials(text, start, keys)) is not None:
        return credentials
    pattern = _LINE_VALUE if mode == _LINE else _LITERAL_VALUE if quoted_key else _PLAIN_VALUE
    plain = pattern.match(text, start)
    if plain is None:
        return None
    bare = plain.group(0)
    if bare.lower() in _NOT_SECRET or (mode == _AUTH and bare.lower() in _AUTH_SCHEMES):
        return None
    if REDACTED in bare and not _ALNUM.search(bare.replace(REDACTED, "")):
        return None  # ".***:": what another rule left, nothing more to hide (redact stays idempotent)
    return start, plain.end(), REDACTED


class _Keys:
    """_KEYED.search and _KEYED.match over one text, in time linear in the text.

    _KEYED starts at a word and lazily tries every key name at every character of it (each time
    with every alternative: a 1 MB word took 0.75 s); here the key names are found first, once
    for the whole text (the last hit is kept: the searches go forward), then matched from there.
    """

    def __init__(self, text: str) -> None:
        self.text = text
        self.lower = text.lower() if text.isascii() else None
        # The last search: where it started, its hit and where the hit starts.
        self._from, self._start = len(text) + 1, 0
        self._hit: re.Match[str] | None = None

    def _next_hit(self, pos: int) -> re.Match[str] | None:
        hit = self._hit
        if not (self._from <= pos and (hit is None or pos <= self._start)):
            lower = self.lower
            hit = _KEY_HIT.search(lower, pos) if lower is not None else _KEY_HIT_ANY_CASE.search(self.text, pos)
            self._from, self._hit, self._start = pos, hit, hit.start() if hit else 0
        return hit

    def _one_word(self, pos: int, end: int) -> bool:
        """Whether text[pos:end] is all word: a key name at `end` ends a word that holds `pos`."""
        return end == pos or _NOT_WORD.search(self.text, pos, end) is None

    def _in_word(self, pos: int) -> bool:
        return pos > 0 and ((c := self.text[pos - 1]).isalnum() or c in "_.-")  # [\w.-]

    def at(self, pos: int) -> re.Match[str] | None:
        """`_KEYED.match(text, pos)`: a secret-named key whose word starts at `pos`."""
        text = self.text
        if pos >= len(text) or not ((c := text[pos]).isalnum() or c in "_.-") or self._in_word(pos):
            return None  # no word starts here
        if self._next_hit(pos) is None or not self._one_word(pos, self._start):
            return None
        return _KEYED_AT.match(self.text, self._start)

    def search(self, pos: int) -> re.Match[str] | None:
        """`_KEYED.search(text, pos)`."""
        while (hit := self._next_hit(pos)) is not None:
            start = self._start
            # The word of the key name must start at `pos` or later (_KEYED starts at a word).
            if not (self._in_word(pos) and self._one_word(pos, start)):
                m = _KEYED_AT.match(self.text, start)
                if m is not None:
                    return m
            pos = hit.end()
        return None


def _redact_keyed(text: str) -> str:
    out: list[str] = []
    done = 0
    keys = _Keys(text)
    m = keys.search(0)
    while m is not None:
        pos = m.end()
        quote = _QUOTE.match(text, pos)
        if not quote and (key := keys.at(pos)) is not None:
            m = key  # "token= password=x": a key is no value, and needs its own
            continue
        found = _value(text, pos, _name_mode(m.group("name")), m.group("q") is not None, keys, quote)
        if found is not None:
            start, end, replacement = found
            out.append(text[done:start])
            out.append(replacement)
            done = pos = max(end, pos)
        m = keys.search(pos)
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


# --- Free-standing tokens ------------------------------------------------------------------------
# A bearer token (not "Bearer https://..": the URL rule has dealt with that as a whole).
_BEARER = re.compile(rf"(?i)\b(bearer)[ \t]+(?:[A-Za-z0-9._~+/=-]|{_BS}/)++(?![:@])")
_JWT = re.compile(r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{4,}(?:\.[A-Za-z0-9_-]+){1,4}")
# user:password@host without a scheme (with one, redact_url has already done it): the rule as a
# regex. Searched as it is, it costs up to 128 x 256 steps a character (every start, every colon
# within 128 characters, every end within 256 of it), so _redact_userinfo computes the same
# matches by scanning (tests/unit/test_linear_time.py compares the two).
_USER_MAX, _PASSWORD_MAX = 128, 256
_USERINFO = re.compile(
    r"(?<![\w.+%~-])(?!mailto(?::|%3[aA]))[^\s:/@\"'<>\\]{0,128}(?::|%3[aA])[^\s/\"'<>]{1,256}(@|%40)(?=[\w\[])"
)
_AT_TOKEN = re.compile(r"(?:@|%40)(?=[\w\[])")  # where a password may end
_COLON_TOKEN = re.compile(r"(?::|%3[aA])(?=[^\s/\"'<>])")  # where a user name ends (a password follows)
_ENCODED_COLON = re.compile(r"%3[aA]")
_NOT_USER = re.compile(r"[\s:/@\"'<>\\]")  # a user name holds none of these
_NOT_PASSWORD = re.compile(r"[\s/\"'<>]")  # nor a password these
_USER_START = re.compile(r"(?<![\w.+%~-])(?!mailto(?::|%3[aA]))")


def _redact_userinfo(text: str) -> str:
    """`_USERINFO.sub(REDACTED + the @, text)` in linear time.

    The regex's match is the leftmost start, then the longest user name (the last colon that can
    reach an `@`), then the longest password (the last `@` within 256 characters). Here the `@`s
    are listed once; the colons are visited in order (only those within reach of an `@`); for a
    colon that reaches one, the leftmost start is the first allowed start within 128 characters
    before it and after the last character a user name cannot hold. Every step moves a position
    forward: the next colon, the earliest possible start, or the end of the last match.
    """
    if "@" not in text and "%40" not in text:
        return text
    ats = [m.start() for m in _AT_TOKEN.finditer(text)]
    if not ats:
        return text
    size = len(text)
    run = [0, 0]  # [lo, hi): characters a password may hold, hi the first one it may not (cached)

    def reach(end: int) -> int | None:
        """The last `@` a password starting at `end` can end at."""
        if not run[0] <= end < run[1]:
            stop = _NOT_PASSWORD.search(text, end)
            run[0], run[1] = end, stop.start() if stop else size
        last = bisect_right(ats, min(end + _PASSWORD_MAX, run[1] - 1)) - 1
        return ats[last] if last >= 0 and ats[last] > end else None

    out: list[str] = []
    done = floor = at = 0  # floor: no match starts before it; at: no colon before it is left
    while (i := bisect_left(ats, at + 2)) < len(ats):
        at = max(at, ats[i] - _PASSWORD_MAX - 3)  # a colon further back reaches no `@`
        colon = _COLON_TOKEN.search(text, at)
        if colon is None:
            break
        c = colon.start()
        last = reach(colon.end())
        if last is None:
            after = bisect_right(ats, colon.end())
            if after == len(ats):
                break
            at = run[1] if ats[after] >= run[1] else c + 1  # no `@` left in this run: skip it
            continue
        low = max(floor, c - _USER_MAX)
        if (stop := _NOT_USER.search(text[low:c][::-1])) is not None:
            low = floor = c - stop.start()  # the user name starts after what it cannot hold
        start_match = _USER_START.search(text, low)
        if start_match is None:
            break
        start = start_match.start()
        if start > c:  # no allowed start before this colon
            floor, at = start, max(c + 1, start)
            continue
        if text[c] != ":":  # after `%3A` the user name may go on: the last colon that reaches an `@` wins
            user_end = _NOT_USER.search(text, start, start + _USER_MAX + 1)
            top = user_end.start() if user_end else start + _USER_MAX + 1
            limit = min(top - 1, start + _USER_MAX)
            later = [m.end() for m in _ENCODED_COLON.finditer(text, c + 1, limit + 3) if m.start() <= limit]
            if c < top <= start + _USER_MAX and text[top] == ":":
                later.append(top + 1)
            for end in reversed(later):
                if (longer := reach(end)) is not None:
                    last = longer
                    break
        end = last + (1 if text[last] == "@" else 3)
        out += (text[done:start], REDACTED, text[last:end])
        done = floor = at = end
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


# Whether any rule below could apply, in two steps, as ingest redacts every string of every event:
# a search for the characters all rules but two need (most strings have none), then, on the
# lowercased text, one search that matches wherever a rule could.
_SEPARATOR_CHARS = re.compile(r"[:=?&%\\@\"']")
# Each alternative reads a stretch once: a query separator, then what cannot be another separator
# up to `=`; a colon, then what cannot be another colon up to `@`.
_MAYBE_SECRET = re.compile(
    r"://|:\\++/\\++/"
    r"|(?:[?&]|%(?:25)*(?:3f|26)|\\u00(?:26|3f))"
    r"(?:[^\s\"'<>`?&=%\\]|%(?!(?:25)*(?:3f|26|3d))|\\(?!u00(?:26|3f|3d)))*+(?:=|%(?:25)*3d|\\u003d)"
    rf"|(?:{_KEY_NAMES})(?:\\*[\"'])?[ \t]*[:=,]"
    r"|bearer[ \t]|eyj"
    r"|(?::|%3a)(?:[^\s@/:%]|%(?!3a|40))*+(?:@|%40)"
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
    return _redact_userinfo(text)


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
    return redact(key), _key_mode(key) if _SECRET_KEY.search(key[-64:]) else _PLAIN


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
    return bool(_SECRET_KEY.search(name[-64:]))  # a key name ends the name: its tail is enough
