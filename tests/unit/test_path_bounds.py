"""Every name derived from an attachment fits every store (invariant 9) and keeps no secret
(invariant 11): generated over the whole class of inputs, not listed cases.

- each component of destination_path, the upload's temporary names and the cache's names take at
  most 255 bytes of UTF-8; the path passes contracts.check_blob_path and storage.check_blob_path,
  and with the longest root OneLakeStorage accepts it stays within Microsoft's documented limits
  ("Naming and Referencing Containers, Blobs, and Metadata": a blob name of at most 1,024
  characters in at most 254 segments, no segment ending with a dot);
- two task ids that differ in their first 10 hex characters never share a path, whatever the
  URLs, the extension, the assignment id or the trace id; the path is deterministic;
- no signature in a URL's query, fragment, percent-encoded (once or twice) query or path
  parameter reaches the path;
- both lake backends really write a file whose name takes all of its 255 bytes.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from pipeline_lib import ids, paths
from pipeline_lib.cache import cache_path, part_path
from pipeline_lib.config import ConfigError, load_settings
from pipeline_lib.contracts import check_blob_path as contract_check
from pipeline_lib.local.dfs_server import DfsServer
from pipeline_lib.paths import (
    ESTIMATE_SUBTYPE,
    FNOL_SUBTYPE,
    MAX_BLOB_NAME,
    MAX_BLOB_SEGMENTS,
    MAX_COMPONENT,
    MAX_ROOT_BYTES,
    destination_path,
)
from pipeline_lib.upload.storage import (
    TEMP_NAME_BYTES,
    CallableTokenCredential,
    LocalLake,
    OneLakeStorage,
    temp_name,
)
from pipeline_lib.upload.storage import check_blob_path as storage_check
from tests.unit.upload.support import cache, onelake, uploader

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
HEX = "0123456789abcdef"
LONGEST_ROOT = "r" * (MAX_ROOT_BYTES - 1)  # the longest root OneLakeStorage accepts

# Text of any length in bytes: short or huge, ASCII or up to four bytes a character.
wide_chars = st.sampled_from(["x", "é", "文", "😀", ".", " ", "_", "%", "?", "#", ";", "=", "/"]) | st.characters(
    blacklist_categories=("Cs",)
)
repeated = st.builds(lambda c, n: c * n, wide_chars, st.integers(0, 700))
texts = st.text(wide_chars, max_size=80) | repeated | st.builds(lambda a, b: a + b, repeated, repeated)
subtypes = st.sampled_from(["documentsReceived", FNOL_SUBTYPE, ESTIMATE_SUBTYPE]) | texts
versions = st.none() | st.sampled_from(["1", "2.0"]) | texts
extensions = st.sampled_from(["", "pdf", "jpeg", "x" * 16, "x" * 17, "x_0123456789", "e" * 244]) | texts


@st.composite
def urls(draw):
    """A URL whose last segment has a generated stem and extension, percent-encoded, maybe with a
    query; or any text at all."""
    if draw(st.booleans()):
        return draw(texts)
    stem, ext = draw(texts), draw(extensions)
    segment = quote(stem, safe="") + (("." + quote(ext, safe="")) if ext else "")
    query = draw(st.sampled_from(["", "?X-Amz-Signature=abc", "?sig=1&se=2", "#frag"]))
    return f"https://files.example.com/{draw(st.sampled_from(['', 'a/', 'a/b/']))}{segment}{query}"


task_ids = st.text(HEX, min_size=32, max_size=32)


def check_bounded(path: str) -> None:
    parts = path.split("/")
    assert len(parts) == 4
    assert all(0 < len(p.encode()) <= MAX_COMPONENT for p in parts), [len(p.encode()) for p in parts]
    assert all(p not in (".", "..") and not p.endswith(".") and not p.startswith(" ") for p in parts)
    contract_check("download_task", path)  # raises ContractError
    assert storage_check(path) == path  # raises StorageFailure
    # Microsoft's limits, counted from the file system with the longest root accepted; the
    # temporary path beside the final one too.
    folder = path.rpartition("/")[0]
    for full in (f"{LONGEST_ROOT}/{path}", f"{LONGEST_ROOT}/{folder}/{temp_name(parts[-1])}"):
        assert len(full) <= len(full.encode()) <= MAX_BLOB_NAME
        assert len(full.split("/")) <= MAX_BLOB_SEGMENTS


@PROPS
@given(subtypes, texts, texts, urls(), task_ids, versions)
@example("documentsReceived", "A" * 245, "T", "https://h/x." + "e" * 244, "0123456789" + "a" * 22, None)
@example("😀" * 300, "😀" * 300, "😀" * 300, "https://h/" + "😀" * 300 + ".pdf", "f" * 32, "😀" * 300)
@example(ESTIMATE_SUBTYPE, "A" * 255, "T" * 255, "https://h/" + "a" * 254 + "." + "é" * 8, "0" * 32, "v" * 255)
def test_every_component_and_derived_name_fits_and_the_path_is_deterministic(
    subtype, assignment, trace, url, tid, version
):
    path = destination_path(subtype, assignment, trace, url, tid, version)
    check_bounded(path)
    name = path.rpartition("/")[2]
    assert f"_{tid[:10]}" in name  # the unique suffix survives, whatever was cut
    assert len(temp_name(name).encode()) == TEMP_NAME_BYTES <= MAX_COMPONENT
    assert temp_name(name).startswith(".") and temp_name(name).endswith(".tmp")
    final = cache_path("/cache", tid)
    assert all(len(p.encode()) <= MAX_COMPONENT for p in (final.name, final.parent.name, part_path(final).name))
    paths.sanitize_component.cache_clear()
    paths._bounded_folder.cache_clear()
    assert destination_path(subtype, assignment, trace, url, tid, version) == path


@PROPS
@given(subtypes, texts, texts, urls(), urls(), task_ids, task_ids, versions)
@example(
    "documentsReceived",
    "A" * 245,
    "T",
    "https://h/x." + "e" * 244,
    "https://h/x." + "e" * 244,
    "0123456789" + "a" * 22,
    "f123456789" + "a" * 22,
    None,
)
@example(  # a kept extension that looks like the other task's suffix, against a shortened name
    "documentsReceived",
    "A",
    "T",
    "https://h/" + "S" * 229 + ".x_bbbbbbbbbb",
    "https://h/" + "S" * 229 + "_aaaaaaaaaa.x" + "Z" * 20,
    "a" * 32,
    "b" * 32,
    None,
)
def test_two_task_ids_never_share_a_path_whatever_the_lengths(subtype, assignment, trace, url1, url2, t1, t2, version):
    """Two tasks in the same folder (same subtype, assignment, trace and version), any URLs: the
    task id's first 10 hex characters are always recoverable from the name, so they tell the paths
    apart. (Task ids are sha256 digests: two that share their first 10 hex characters in one
    folder are a 2**-40 chance per pair, the accepted cost of a short suffix.)"""
    assume(t1[:10] != t2[:10])
    assert destination_path(subtype, assignment, trace, url1, t1, version) != destination_path(
        subtype, assignment, trace, url2, t2, version
    )


@PROPS
@given(st.text(min_size=1, max_size=20), st.text(max_size=300), st.text(max_size=300))
def test_real_task_ids_of_one_event_never_share_a_path(event, url1, url2):
    t1, t2 = ids.task_id(event, url1), ids.task_id(event, url2)
    assume(t1 != t2)
    p1 = destination_path("documentsReceived", "A1", "T1", url1, t1)
    assert p1 != destination_path("documentsReceived", "A1", "T1", url2, t2)
    check_bounded(p1)


secrets_ = st.text("0123456789ABCDEFabcdef", min_size=12, max_size=40).map(lambda s: "Zq9" + s)
SECRET_FORMS = [
    "?X-Amz-Signature={s}", "%3FX-Amz-Signature%3D{s}", "%253FX-Amz-Signature%253D{s}", "%25253Fsig%25253D{s}",
    "%3fsig={s}", "#{s}", "%23{s}", "%2523{s}", ";jsessionid={s}", "%3Bjsessionid%3D{s}", ";JSESSIONID%253D{s}",
    ";a;jsessionid={s};b=c", "&sig={s}",
]  # fmt: skip


@PROPS
@given(texts, st.sampled_from(["", ".pdf", ".jpeg"]), st.sampled_from(SECRET_FORMS), secrets_, texts, texts)
@example("report", ".pdf", "%3FX-Amz-Signature%3D{s}", "Zq9abcdef123456", "A1", "T1")
def test_no_signature_in_the_url_reaches_the_path(stem, ext, form, secret, assignment, trace):
    assume(secret[3:] not in stem + ext + assignment + trace)
    url = f"https://files.example.com/c/{quote(stem, safe='')}{ext}{form.format(s=secret)}"
    path = destination_path("documentsReceived", assignment, trace, url, "0123456789" + "a" * 22)
    assert secret not in path and secret[3:] not in path
    check_bounded(path)


@pytest.mark.parametrize(
    ("url", "name"),
    [
        ("https://h/a/report.pdf%3FX-Amz-Signature%3Dabcdef123456", "A1_report_0123456789.pdf"),
        ("https://h/a/report.pdf%253FX-Amz-Signature%253Dabcdef123456", "A1_report_0123456789.pdf"),
        ("https://h/a/report.pdf;jsessionid=ABCDEF123456", "A1_report_0123456789.pdf"),
        ("https://h/a/report.pdf%23page=2", "A1_report_0123456789.pdf"),
        ("https://h/a/sig=abcdef123456.pdf", "A1_sig=_0123456789"),  # what redact would hide is cut off
        ("https://[::1/a.pdf?sig=1", "A1_a_0123456789.pdf"),  # urlsplit refuses it: read as text
        # ordinary names: exactly as before
        ("https://h/x/photo.jpg?sig=1", "A1_photo_0123456789.jpg"),
        ("https://h/x/a;b.pdf", "A1_a;b_0123456789.pdf"),
        ("https://h/x/Roof%20photo%20(2).JPG", "A1_Roof photo (2)_0123456789.JPG"),
        ("https://h/x/report.final%20version%20from%20adjuster", "A1_report_0123456789.final version from adjuster"),
    ],
)
def test_file_names_of_listed_urls(url, name):
    assert destination_path("documentsReceived", "A1", "T1", url, "0123456789" + "a" * 22) == (
        f"documentsReceived/A1/T1/{name}"
    )


def test_secrets_in_folders_are_cut_like_the_file_name():
    path = destination_path("documentsReceived", "A1", "sig=abcdef123456", "https://h/a.pdf", "0" * 32)
    assert "abcdef123456" not in path and path.split("/")[2] == "sig="


def test_folders_that_fit_are_kept_whole_and_longer_ones_get_their_shares():
    tid = "0123456789" + "a" * 22
    path = destination_path("documentsReceived", "A" * 246, "T" * 247, "https://h/r.pdf", tid)
    assert path.split("/")[:3] == ["documentsReceived", "A" * 246, "T" * 247]  # 512 bytes: they fit
    path = destination_path("documentsReceived", "A" * 246, "T" * 248, "https://h/r.pdf", tid)
    assert [len(p) for p in path.split("/")[:3]] == [17, 223, 223]  # 513 bytes: each to its share
    path = destination_path("S" * 255, "A" * 255, "T" * 255, "https://h/r.pdf", tid)
    assert [len(p) for p in path.split("/")] == [64, 223, 223, 255]
    assert path.endswith("_0123456789.pdf") and path.split("/")[3].startswith("A" * 223)


def test_a_long_extension_gives_way_only_when_the_name_must_be_shortened():
    tid = "0123456789" + "a" * 22
    name = lambda url: destination_path("documentsReceived", "A1", "T1", url, tid).rpartition("/")[2]  # noqa: E731
    assert name("https://h/r." + "e" * 30) == "A1_r_0123456789." + "e" * 30  # fits: as before
    assert name("https://h/" + "r" * 300 + ".pdf") == "A1_" + "r" * 237 + "_0123456789.pdf"  # as before
    long = name("https://h/r." + "e" * 300)
    assert long == ("A1_r." + "e" * 300)[:244] + "_0123456789" and len(long) == 255


def test_path_handling_is_linear_in_the_url():
    start = time.perf_counter()
    for hostile in (";" * 200_000 + "%25" * 200_000 + "a" * 200_000, "a=1&" * 150_000, "sig=" * 150_000):
        check_bounded(destination_path(hostile, hostile, hostile, f"https://h/{hostile}", "0" * 32, hostile))
    assert time.perf_counter() - start < 1.0


# The lake backends write a name that takes all of its 255 bytes.

LONG_PATH = destination_path("documentsReceived", "A1", "T-1", "https://h/x" + "😀" * 300 + ".pdf", "0" * 32)


def test_the_long_path_has_a_255_byte_name():
    assert len(LONG_PATH.rpartition("/")[2].encode()) == 255


@pytest.fixture
def upload_settings(tmp_path):
    return load_settings(
        "local",
        overrides={
            "storage": {"root": str(tmp_path / "var"), "lake": {"local_root": str(tmp_path / "lake")}},
            "download": {"cache_dir": str(tmp_path / "cache")},
            "upload": {"chunk_bytes": 65536},
        },
    )


@pytest.fixture
def dfs(tmp_path):
    with DfsServer(tmp_path) as server:
        yield server


def test_the_local_lake_writes_a_255_byte_name(tmp_path):
    data = b"x" * 1000
    stored = LocalLake(tmp_path / "lake", "xact/attachments").put(
        iter([data]), LONG_PATH, size=len(data), sha256=hashlib.sha256(data).hexdigest(), content_type=None
    )
    final = Path(stored.uri)
    assert final.read_bytes() == data and len(final.name.encode()) == 255
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no temporary file left


def test_an_upload_of_a_255_byte_name_completes_on_both_backends(upload_settings, dfs):
    for storage in (None, onelake(dfs)):
        item = cache(upload_settings, "a.pdf", b"y" * 5000, blob_path=LONG_PATH)
        outcome = uploader(upload_settings, storage).upload(item)
        assert outcome.failure is None and outcome.stored.uri.endswith(LONG_PATH)
    assert list(dfs.files) == [f"ws/lh.Lakehouse/Files/xact/attachments/{LONG_PATH}"]
    created = [path for op, _, path in dfs.log if op == "create"]
    assert created and all(".tmp" in p for p in created)  # written under a temporary name first


def test_the_dfs_server_refuses_a_segment_over_255_bytes_so_the_test_above_can_fail(dfs):
    from azure.core.exceptions import HttpResponseError

    client = onelake(dfs).client
    for name in ("n" * 256, "😀" * 63 + "nnnn"):  # the old `.{name}.{8 hex}.tmp` was 269 bytes
        with pytest.raises(HttpResponseError) as caught:
            client.get_file_client(f"lh.Lakehouse/Files/{name}").create_file()
        assert caught.value.status_code == 400 and caught.value.error_code == "InvalidResourceName"
    client.get_file_client("lh.Lakehouse/Files/" + "😀" * 63 + "nnn").create_file()  # 255 bytes: taken
    with pytest.raises(HttpResponseError):  # Microsoft's 1,024 characters of a blob name
        client.get_file_client("/".join(["d" * 200] * 6)).create_file()


def test_a_onelake_root_that_leaves_no_room_for_the_paths_is_refused_at_start(dfs):
    credential = CallableTokenCredential(lambda: ("t", int(time.time()) + 3600))
    OneLakeStorage(dfs.url, "ws", LONGEST_ROOT, credential, connection_verify=dfs.ca_file)
    with pytest.raises(ConfigError, match="files_prefix"):
        OneLakeStorage(dfs.url, "ws", LONGEST_ROOT + "r", credential, connection_verify=dfs.ca_file)


@pytest.mark.parametrize(
    ("url", "name"),
    [  # a lone ? or # and a path parameter with an ordinary name are characters of the file's name
        ("https://h/a/Invoice%20%2312.pdf", "A1_Invoice _12_0123456789.pdf"),
        ("https://h/a/What%3F.pdf", "A1_What__0123456789.pdf"),
        ("https://h/a/report;type=final.pdf", "A1_report;type=final_0123456789.pdf"),
        ("https://h/a/report.pdf", "A1_report_0123456789.pdf"),
    ],
)
def test_ordinary_names_keep_their_characters_and_extension(url, name):
    assert destination_path("documentsReceived", "A1", "T1", url, "0123456789" + "a" * 22).endswith(f"/{name}")
