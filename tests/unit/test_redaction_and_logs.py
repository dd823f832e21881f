"""Secrets never reach a log line, a payload or a table (invariant 5)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from pipeline_lib.logs import get_logger, setup_logging
from pipeline_lib.redaction import redact, redact_url, truncate

S3 = (
    "https://bucket.s3.amazonaws.com/claims/a.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256"
    "&X-Amz-Credential=AKIA123%2F20260101&X-Amz-Date=20260101T000000Z&X-Amz-Expires=3600"
    "&X-Amz-Signature=deadbeef&X-Amz-Security-Token=tok"
)
SAS = "https://acct.blob.core.windows.net/c/a.pdf?sv=2022-11-02&se=2026-01-01T00%3A00%3A00Z&sr=b&sp=r&sig=abc%2Fdef%3D"


def test_s3_presigned_url_keeps_expiry_and_drops_signature_and_credential():
    out = redact_url(S3)
    assert "deadbeef" not in out and "AKIA123" not in out and "tok" not in out
    assert "X-Amz-Expires=3600" in out and "X-Amz-Date=20260101T000000Z" in out
    assert out.startswith("https://bucket.s3.amazonaws.com/claims/a.pdf?")


def test_sas_url_keeps_expiry_and_drops_sig():
    out = redact_url(SAS)
    # Kept parameters stay byte-for-byte as sent (no decoding and re-encoding).
    assert "abc" not in out and "sig=***" in out and "se=2026-01-01T00%3A00%3A00Z" in out


def test_unknown_query_parameters_are_redacted_by_default():
    assert redact_url("https://h/p?session=abc&code=42") == "https://h/p?session=***&code=***"


def test_a_bare_query_token_is_redacted():
    assert redact_url("https://h/p?s3cr3ttoken&se=1") == "https://h/p?***&se=1"


def test_userinfo_is_redacted():
    assert redact_url("https://user:pw@host/x") == "https://***@host/x"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("Authorization: Bearer eyJhbGciOi.abc.def", "eyJhbGciOi"),
        ("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=x;SharedAccessKey=K3y=", "K3y"),
        ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=abc123==;", "abc123"),
        ('jaas password="p4ss";', "p4ss"),
        (f"failed to fetch {S3} after 3 tries", "deadbeef"),
    ],
)
def test_free_text_redaction(text, secret):
    assert secret not in redact(text)


def test_truncate_says_how_much_was_cut():
    assert truncate("abcdef", 3) == "abc...[3 more chars]"
    assert truncate("abc", 3) == "abc"


def test_log_records_are_redacted_in_text_and_json(capsys):
    for fmt in ("text", "json"):
        stream = io.StringIO()
        setup_logging("INFO", fmt, stream=stream)
        get_logger("test").info("fetching %s with Bearer %s", S3, "tok3n")
        try:
            raise ValueError(f"boom {SAS}")
        except ValueError:
            get_logger("test").exception("failed")
        out = stream.getvalue()
        assert "deadbeef" not in out and "tok3n" not in out and "abc%2Fdef" not in out
        assert "X-Amz-Expires=3600" in out
        if fmt == "json":
            first = json.loads(out.splitlines()[0])
            assert first["level"] == "INFO" and first["logger"] == "xact.test"
    setup_logging("INFO")


def test_urllib3_errors_in_log_records_are_redacted_in_text_and_json():
    error = (
        "HTTPSConnectionPool(host='h', port=443): Max retries exceeded with url: "
        "/a.pdf?X-Amz-Expires=60&X-Amz-Signature=s3cr3tsig (Caused by ReadTimeoutError())"
    )
    for fmt in ("text", "json"):
        stream = io.StringIO()
        setup_logging("INFO", fmt, stream=stream)
        get_logger("test").warning("download failed: %s; headers %s", error, {"Authorization": "SharedKey a:k3y"})
        out = stream.getvalue()
        assert "s3cr3tsig" not in out and "k3y" not in out
        assert "X-Amz-Expires=60" in out and "SharedKey ***" in out
    setup_logging("INFO")


def test_setup_logging_is_idempotent():
    setup_logging("INFO")
    setup_logging("DEBUG")
    assert len(logging.getLogger("xact").handlers) == 1
