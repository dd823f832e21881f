"""When a presigned attachment URL stops working, read from the URL itself (no request made).

Recognised forms (query parameter names are matched case-insensitively):

| form      | parameters                         | expiry                                   |
| --------- | ---------------------------------- | ---------------------------------------- |
| S3 SigV4  | X-Amz-Date=20260101T120000Z, X-Amz-Expires=<seconds> | X-Amz-Date + X-Amz-Expires |
| Azure SAS | se=2026-01-01T12:00:00Z (or a date) | se                                       |
| ClaimX    | systemDate=<epoch ms>, expires=<ms> | systemDate + expires                     |

A URL with none of these never expires as far as the pipeline knows. A form that is present but
unreadable (a garbled date) is reported as unknown, not as expired: the server has the last word.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, urlsplit

from pipeline_lib.times import parse_iso


def _params(url: str) -> dict[str, str]:
    try:
        query = urlsplit(url).query
    except ValueError:
        return {}
    return {k.lower(): v for k, v in parse_qsl(query, keep_blank_values=True)}


def _s3(params: dict[str, str]) -> datetime | None:
    if "x-amz-date" not in params or "x-amz-expires" not in params:
        return None
    signed = datetime.strptime(params["x-amz-date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    return signed + timedelta(seconds=int(params["x-amz-expires"]))


def _sas(params: dict[str, str]) -> datetime | None:
    if "se" not in params or "sig" not in params and "sv" not in params:
        return None  # `se` alone is too common a name to be sure it is a SAS expiry
    text = params["se"].strip()
    if len(text) == 10:  # a date only: valid through that day (UTC)
        return parse_iso(text) + timedelta(days=1)
    return parse_iso(text)


def _claimx(params: dict[str, str]) -> datetime | None:
    if "systemdate" not in params or "expires" not in params:
        return None
    end_ms = int(params["systemdate"]) + int(params["expires"])
    return datetime.fromtimestamp(end_ms / 1000, UTC)


def expires_at(url: str) -> tuple[str | None, datetime | None]:
    """(form, expiry) of a presigned URL: ("s3" | "sas" | "claimx", when) or (None, None).

    A recognised form with unreadable values gives (form, None).
    """
    params = _params(url)
    for form, reader in (("s3", _s3), ("sas", _sas), ("claimx", _claimx)):
        try:
            when = reader(params)
        except (ValueError, OverflowError, OSError):
            return form, None
        if when is not None:
            return form, when
    return None, None


def expiry_problem(url: str, now: datetime, margin_seconds: float) -> str | None:
    """A reason if the URL has expired or expires within `margin_seconds` of `now`, else None."""
    form, when = expires_at(url)
    if when is None:
        return None
    left = (when - now).total_seconds()
    if left <= 0:
        return (
            f"expired: the {form} presigned URL expired at {when.isoformat()} ({-left:.0f}s ago); "
            "ask upstream for a fresh link"
        )
    if left < margin_seconds:
        return (
            f"expired: the {form} presigned URL expires at {when.isoformat()}, in {left:.0f}s, inside the "
            f"download.expiry_margin_seconds margin ({margin_seconds:.0f}s); ask upstream for a fresh link"
        )
    return None
