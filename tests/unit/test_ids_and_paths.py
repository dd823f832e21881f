"""Deterministic ids and safe, collision-free destination paths."""

from __future__ import annotations

import pytest

from pipeline_lib.ids import canonical_url, event_id, task_id
from pipeline_lib.paths import MAX_COMPONENT, destination_path, sanitize_component


def test_task_id_ignores_the_query_string_so_a_re_signed_url_is_the_same_task():
    a = task_id("E1", "https://Files.Example.com:443/c/a.pdf?X-Amz-Signature=1")
    b = task_id("E1", "https://files.example.com/c/a.pdf?X-Amz-Signature=2")
    assert a == b and len(a) == 32
    assert task_id("E2", "https://files.example.com/c/a.pdf") != a  # another event listing it: another task


@pytest.mark.parametrize("url", ["https://h:99999/a.pdf?sig=1", "https://[::1/a.pdf?sig=1", "http://h:-1/x"])
def test_ids_of_unparseable_urls_are_total_and_ignore_the_query(url):
    assert task_id("E1", url) == task_id("E1", url.replace("sig=1", "sig=2"))
    assert "sig" not in canonical_url(url)


def test_canonical_url_keeps_non_default_port_and_the_query_and_drops_fragment():
    assert canonical_url("HTTP://H:8080/x?y#z") == "http://h:8080/x?y"


def test_event_id_is_stable_and_distinguishes_types():
    assert event_id("T", "a.b.documentsReceived", "2026-01-01T00:00:00Z") == event_id(
        "T", "a.b.documentsReceived", "2026-01-01T00:00:00Z"
    )
    assert event_id("T", "a.b.documentsReceived", "x") != event_id("T", "a.b.estimatePackageReceived", "x")


TID = "0123456789abcdef" * 2


@pytest.mark.parametrize(
    ("subtype", "estimate", "expected_name"),
    [
        ("documentsReceived", None, "A1_photo_0123456789.jpg"),
        ("firstNoticeOfLossReceived", None, "A1_FNOL_photo_0123456789.jpg"),
        ("estimatePackageReceived", "2.0", "A1_2.0_photo_0123456789.jpg"),
        ("estimatePackageReceived", None, "A1_unknown_photo_0123456789.jpg"),
    ],
)
def test_file_name_rules(subtype, estimate, expected_name):
    path = destination_path(subtype, "A1", "T1", "https://h/x/photo.jpg?sig=1", TID, estimate)
    assert path == f"{subtype}/A1/T1/{expected_name}"


def test_two_urls_with_the_same_file_name_never_collide():
    urls = ["https://h/one/photo.jpg", "https://h/two/photo.jpg"]
    paths = {destination_path("documentsReceived", "A1", "T1", u, task_id("E1", u)) for u in urls}
    assert len(paths) == 2


@pytest.mark.parametrize(
    "hostile",
    ["../../etc/passwd", "..", ".", "a/b\\c", "x\x00y\x1fz", "CON", "nul.txt", "  ..hidden  ", "", 'a:b*c?d|e<f>g"'],
)
def test_sanitized_components_are_safe(hostile):
    out = sanitize_component(hostile)
    assert out and out not in (".", "..") and ".." not in out
    assert not any(c in out for c in '/\\:*?"<>|') and all(ord(c) >= 32 for c in out)
    assert out.lower().split(".")[0] not in ("con", "nul")


def test_traversal_in_every_component_stays_inside_the_prefix():
    path = destination_path("../x", "../../A", "..", "https://h/%2e%2e%2f%2e%2e%2fpasswd", TID)
    assert ".." not in path and path.count("/") == 3


@pytest.mark.parametrize("char", ["x", "é", "文", "😀"])  # 1, 2, 3 and 4 bytes of UTF-8
def test_long_names_are_bounded_in_bytes_and_keep_extension_and_unique_suffix(char):
    path = destination_path("documentsReceived", "A1", char * 300, "https://h/" + char * 500 + ".pdf", TID)
    trace, name = path.split("/")[2:]
    assert len(name.encode()) <= MAX_COMPONENT == 255 and name.endswith("_0123456789.pdf")
    assert len(trace.encode()) <= 255 and trace.startswith(char)


def test_murmur2_partitioning_matches_kafka_s_default_partitioner():
    from pipeline_lib.kafka_client import murmur2, partition_for

    # Values of org.apache.kafka.common.utils.Utils.murmur2 (Kafka's own unit test, UtilsTest).
    assert murmur2(b"21") == -973932308
    assert murmur2(b"foobar") == -790332482
    assert murmur2(b"a-little-bit-long-string") == -985981536
    assert murmur2(b"a-little-bit-longer-string") == -1486304829
    assert murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") == -58897971
    assert murmur2(b"abc") == 479470107
    assert 0 <= partition_for("T-1", 3) < 3
