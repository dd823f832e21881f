from datetime import UTC, datetime

import pytest

from pipeline_lib.download.presigned import expires_at, expiry_problem

NOW = datetime(2026, 11, 27, 12, 0, 0, tzinfo=UTC)
S3 = "https://b.s3.amazonaws.com/k.pdf?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date={date}&X-Amz-Expires={exp}&X-Amz-Signature=abc"
SAS = "https://acct.blob.core.windows.net/c/k.pdf?sv=2024-11-04&se={se}&sr=b&sp=r&sig=abc%3D"
CLAIMX = "https://claimx.example.com/f/k.pdf?systemDate={sd}&expires={exp}&sig=abc"
NOW_MS = int(NOW.timestamp() * 1000)


@pytest.mark.parametrize(
    ("url", "form", "when"),
    [
        (S3.format(date="20261127T110000Z", exp=3600), "s3", datetime(2026, 11, 27, 12, 0, tzinfo=UTC)),
        (SAS.format(se="2026-11-27T13:00:00Z"), "sas", datetime(2026, 11, 27, 13, 0, tzinfo=UTC)),
        (SAS.format(se="2026-11-27"), "sas", datetime(2026, 11, 28, 0, 0, tzinfo=UTC)),
        (CLAIMX.format(sd=NOW_MS, exp=90_000), "claimx", datetime(2026, 11, 27, 12, 1, 30, tzinfo=UTC)),
        ("https://files.example.com/a.pdf?se=tomorrow", None, None),  # `se` alone is not a SAS
        ("https://files.example.com/a.pdf", None, None),
    ],
)
def test_each_presigned_form_gives_its_expiry(url, form, when):
    assert expires_at(url) == (form, when)


def test_a_garbled_expiry_is_unknown_not_expired():
    url = S3.format(date="yesterday", exp=60)
    assert expires_at(url) == ("s3", None)
    assert expiry_problem(url, NOW, 60) is None


def test_expired_and_inside_the_margin_are_refused_with_reason_expired():
    past = S3.format(date="20261127T100000Z", exp=3600)  # 11:00
    soon = CLAIMX.format(sd=NOW_MS, exp=30_000)  # in 30 s
    later = SAS.format(se="2026-11-27T12:10:00Z")
    assert expiry_problem(past, NOW, 60).startswith("expired: the s3 presigned URL expired at 2026-11-27T11:00:00")
    assert "inside the download.expiry_margin_seconds margin (60s)" in expiry_problem(soon, NOW, 60)
    assert expiry_problem(soon, NOW, 10) is None
    assert expiry_problem(later, NOW, 60) is None
