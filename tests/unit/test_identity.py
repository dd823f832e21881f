"""An attachment's identity keeps what names the file and drops only what signs or expires a URL
(ids.canonical_url, ids.SIGNING_FORMS): issue #22, item 1."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_lib import ids
from pipeline_lib.contracts import SourceRef
from pipeline_lib.events import IngestOptions, ingest_record
from pipeline_lib.url_policy import UrlPolicy

NOW = datetime(2026, 12, 3, 12, tzinfo=UTC)
SRC = SourceRef("xact.events.raw", 0, 1, "2026-12-03T11:59:59.000Z")
POLICY = UrlPolicy(frozenset({"https"}), ())
BASE = "https://files.example.com/claims/download"

# One signed query per form, as its signer writes them (two signings of one object differ in values).
SIGNED = {
    "s3-sigv4": "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIA{n}%2F20261203%2Fus-east-1%2Fs3%2Faws4_request"
    "&X-Amz-Date=20261203T1{n}0000Z&X-Amz-Expires=3600&X-Amz-SignedHeaders=host"
    "&X-Amz-Security-Token=tok{n}&X-Amz-Signature=abc{n}&x-id=GetObject"
    "&response-content-disposition=attachment%3B%20filename%3Dv{n}.pdf",
    "s3-sigv2": "AWSAccessKeyId=AKIA{n}&Expires=17000000{n}&Signature=sig{n}%3D&x-amz-security-token=t{n}",
    "gcs-v4": "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa{n}%40p.iam.gserviceaccount.com"
    "&X-Goog-Date=20261203T1{n}0000Z&X-Goog-Expires=900&X-Goog-SignedHeaders=host&X-Goog-Signature=f{n}",
    "gcs-v2": "GoogleAccessId=sa{n}%40p.iam.gserviceaccount.com&Expires=17000000{n}&Signature=s{n}",
    "azure-sas": "sv=2022-11-02&ss=b&srt=o&sp=r&se=2026-12-0{n}T00%3A00%3A00Z&st=2026-12-01&spr=https"
    "&sig=Z{n}%3D&skoid=o{n}&sktid=t&skt=x{n}&ske=y&sks=b&skv=2022-11-02&skdutid=d{n}&rscd=inline{n}",
    "claimx": "systemDate=17330000{n}000&expires=3600000",
}


@pytest.mark.parametrize("form", sorted(SIGNED))
def test_a_re_signed_url_is_the_same_task_in_every_signing_form(form):
    first = f"{BASE}?fileId=1001&{SIGNED[form].format(n=1)}"
    again = f"{BASE}?{SIGNED[form].format(n=2)}&fileId=1001"  # another signature, another order
    assert ids.task_id("E", first) == ids.task_id("E", again)
    assert ids.canonical_url(first) == f"{BASE}?fileId=1001"


@pytest.mark.parametrize("form", sorted(SIGNED))
def test_urls_whose_query_only_signs_keep_their_task_ids(form):
    url = f"{BASE}?{SIGNED[form].format(n=1)}"
    assert ids.task_id("E", url) == ids.legacy_task_id("E", url)


def test_parameters_that_name_the_file_make_two_tasks():
    a, b = f"{BASE}?fileId=1001", f"{BASE}?fileId=1002"
    assert ids.task_id("E", a) != ids.task_id("E", b)
    result = ingest_record(json.dumps(_event([a, b])), SRC, POLICY, NOW)
    assert len(result.tasks) == 2 and len({t.blob_path for t in result.tasks}) == 2
    # Both were one task before: each new task remembers that old id, for redeliveries.
    assert set(result.legacy_task_ids) == {t.task_id for t in result.tasks}
    assert len(set(result.legacy_task_ids.values())) == 1 and result.legacy_revision is not None


def test_a_lone_expiry_or_signature_name_outside_its_form_is_someone_s_parameter():
    # `se` without `sig`/`sv` is not a SAS; `Signature` without its access id is not SigV2/GCS V2.
    for query in ("se=2026-12-01", "Signature=1", "expires=5", "systemDate=1"):
        assert ids.canonical_url(f"{BASE}?{query}") == f"{BASE}?{query}"


def test_configured_parameters_are_ignored_case_insensitively():
    url = f"{BASE}?fileId=7&CacheBust=123"
    assert ids.canonical_url(url, ["cachebust"]) == f"{BASE}?fileId=7"
    options = IngestOptions(identity_ignored_params=("cachebust",))
    a = ingest_record(json.dumps(_event([url])), SRC, POLICY, NOW, options).tasks[0]
    b = ingest_record(json.dumps(_event([f"{BASE}?cachebust=999&fileId=7"])), SRC, POLICY, NOW, options).tasks[0]
    assert a.task_id == b.task_id


def _event(urls: list) -> dict:
    return {
        "traceId": "T-1",
        "type": "verisk.claims.property.xn.documentsReceived",
        "utcDateTime": "2026-12-03T10:00:00Z",
        "data": {"assignmentId": "A1", "attachments": urls},
    }


_name = st.text(st.characters(codec="ascii", categories=["L", "N"], include_characters="-_."), min_size=1, max_size=8)
_value = st.text(st.characters(codec="ascii", categories=["L", "N"], include_characters="-_.%~"), max_size=12)
_plain_params = st.lists(st.tuples(_name, _value), max_size=4).map(
    lambda pairs: [(n, v) for n, v in pairs if ids.identity_query(f"{n}={v}") == f"{n}={v}"]
)


@given(
    form=st.sampled_from(sorted(SIGNED)),
    plain=_plain_params,
    n1=st.integers(0, 9),
    n2=st.integers(0, 9),
    order=st.randoms(use_true_random=False),
    case=st.booleans(),
)
def test_identity_is_the_non_signing_parameters_whatever_the_signature_order_or_case(form, plain, n1, n2, order, case):
    """Generated: signed URLs of one object, signed twice, parameters shuffled and re-cased."""

    def url(n: int) -> str:
        signing = [p.split("=", 1) for p in SIGNED[form].format(n=n).split("&")]
        if case:
            signing = [[k.upper(), v] for k, v in signing]
        pairs = [f"{k}={v}" for k, v in [*signing, *plain]]
        order.shuffle(pairs)
        return f"{BASE}?{'&'.join(pairs)}"

    first, second = url(n1), url(n2)
    assert ids.task_id("E", first) == ids.task_id("E", second)
    kept = sorted(f"{k}={v}" for k, v in plain)
    assert ids.canonical_url(first) == (f"{BASE}?{'&'.join(kept)}" if kept else BASE)
    if not plain:
        assert ids.task_id("E", first) == ids.legacy_task_id("E", first)  # existing inventories stay valid
    # A parameter that names the file changes the identity.
    assert ids.task_id("E", first) != ids.task_id("E", f"{first}&fileId=x{quote(str(n1))}")


@given(st.text(max_size=300))
def test_canonical_url_is_total_and_its_query_is_a_subset_of_the_url_s(text):
    canonical = ids.canonical_url(text)
    legacy = ids.legacy_canonical_url(text)
    assert canonical.split("?", 1)[0] == legacy
    if "?" in canonical:
        kept = canonical.split("?", 1)[1].split("&")
        assert set(kept) <= set(text.split("#", 1)[0].split("?", 1)[1].split("&"))
