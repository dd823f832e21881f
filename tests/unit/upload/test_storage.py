"""The storage backends on their own: what OneLake's put verifies (per-append Content-MD5 checked by
the service, the size, our sha256 metadata and the stored Content-MD5 read back), what the DFS
server checks and what it only stores, find_stored on both backends, cache read errors kept apart
from the lake's, and blob paths that cannot leave the lake."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
from pathlib import Path

import pytest

from pipeline_lib.upload import storage as storage_module
from pipeline_lib.upload.storage import (
    CacheProblem,
    CacheUnreadable,
    ChunksChanged,
    LocalLake,
    StorageFailure,
    check_blob_path,
    verified_chunks,
)
from tests.unit.upload.support import onelake

ROOT = "ws/lh.Lakehouse/Files/xact/attachments"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# OneLake: what is verified.


def test_every_append_carries_the_md5_of_its_own_chunk(dfs):
    data = os.urandom(150_000)
    parts = chunks_of(data, 65536)
    stored = onelake(dfs).put(iter(parts), "a/b.pdf", size=len(data), sha256=sha(data), content_type=None)
    assert dfs.append_md5s == [b64md5(p) for p in parts] and len(parts) == 3
    entry = dfs.files[f"{ROOT}/a/b.pdf"]
    assert bytes(entry.data) == data and entry.content_md5 == b64md5(data)  # flush's whole-file MD5, stored
    assert stored.service_checksum is True


def test_a_chunk_damaged_on_the_way_is_refused_by_the_service_and_classified_transient(dfs):
    dfs.corrupt("append")
    data = os.urandom(1000)
    with pytest.raises(StorageFailure) as caught:
        onelake(dfs).put(iter([data]), "a/b.pdf", size=len(data), sha256=sha(data), content_type=None)
    f = caught.value.failure
    assert (f.category, f.transient, f.http_status) == ("truncated", True, 400) and "Md5Mismatch" in f.message
    assert dfs.files == {}  # nothing renamed into place, the temporary path deleted


def test_the_flush_md5_is_stored_not_checked_which_is_why_appends_carry_their_own(dfs):
    """Without per-append MD5 a damaged chunk is committed, and everything that can be read back
    (size, metadata, the Content-MD5 sent on flush) still looks right."""
    from azure.storage.filedatalake import ContentSettings

    data = os.urandom(1000)
    client = onelake(dfs).client.get_file_client("lh.Lakehouse/Files/raw.bin")
    client.create_file(metadata={"sha256": sha(data)})
    dfs.corrupt("append")
    client.append_data(data, offset=0, length=len(data))  # no validate_content: no Content-MD5
    client.flush_data(len(data), content_settings=ContentSettings(content_md5=bytearray(hashlib.md5(data).digest())))
    props = client.get_file_properties()
    assert bytes(dfs.files["ws/lh.Lakehouse/Files/raw.bin"].data) != data  # the damage was stored
    assert props.size == len(data) and props.metadata == {"sha256": sha(data)}
    assert bytes(props.content_settings.content_md5) == hashlib.md5(data).digest()


@pytest.mark.parametrize(
    ("mutation", "words"),
    [
        (lambda e: e.metadata.update(sha256="0" * 64), "sha256 metadata"),
        (lambda e: e.metadata.clear(), "sha256 metadata"),
        (lambda e: setattr(e, "committed", e.committed - 1), "bytes, expected"),
        (lambda e: setattr(e, "content_md5", b64md5(b"other")), "Content-MD5"),
    ],
    ids=["other-sha256", "no-metadata", "size", "stored-md5"],
)
def test_the_properties_read_back_after_the_rename_are_compared(dfs, mutation, words):
    dfs.mutate("rename", mutation)  # another writer replaced the file, or the service lost something
    data = os.urandom(5000)
    with pytest.raises(StorageFailure) as caught:
        onelake(dfs).put(iter([data]), "a/b.pdf", size=len(data), sha256=sha(data), content_type=None)
    assert caught.value.failure.category == "truncated" and caught.value.failure.transient
    assert words in caught.value.failure.message


# find_stored.


def test_onelake_find_stored_matches_size_and_sha256_metadata_only(dfs):
    storage = onelake(dfs)
    data = os.urandom(3000)
    storage.put(iter([data]), "a/b.pdf", size=len(data), sha256=sha(data), content_type=None)
    found = storage.find_stored("a/b.pdf", size=len(data), sha256=sha(data))
    assert found is not None and found.uri.endswith("/lh.Lakehouse/Files/xact/attachments/a/b.pdf")
    assert (found.bytes, found.sha256) == (len(data), sha(data))
    assert storage.find_stored("a/b.pdf", size=len(data) - 1, sha256=sha(data)) is None
    assert storage.find_stored("a/b.pdf", size=len(data), sha256=sha(b"other")) is None
    assert storage.find_stored("a/missing.pdf", size=len(data), sha256=sha(data)) is None
    assert [op for op, _, _ in dfs.log][-4:] == ["properties"] * 4  # a HEAD each, nothing written


@pytest.mark.parametrize(("status", "category", "transient"), [(503, "http_transient", True), (403, "auth", False)])
def test_onelake_find_stored_failures_are_storage_failures(dfs, status, category, transient):
    dfs.fail("properties", status, times=5)
    with pytest.raises(StorageFailure) as caught:
        onelake(dfs).find_stored("a/b.pdf", size=1, sha256=sha(b"x"))
    assert (caught.value.failure.category, caught.value.failure.transient) == (category, transient)


def has_xattrs(path: Path) -> bool:
    try:
        os.setxattr(path, "user.probe", b"1")
        return True
    except OSError:
        return False


def test_local_find_stored_uses_the_xattr_when_there_is_one_else_hashes(tmp_path):
    lake = LocalLake(tmp_path, "p")
    data = os.urandom(4000)
    lake.put(iter([data]), "a/b.pdf", size=len(data), sha256=sha(data), content_type=None)
    final = tmp_path / "p/a/b.pdf"
    assert lake.find_stored("a/b.pdf", size=len(data), sha256=sha(data)).uri == str(final)
    assert lake.find_stored("a/b.pdf", size=len(data) + 1, sha256=sha(data)) is None
    assert lake.find_stored("a/nope.pdf", size=len(data), sha256=sha(data)) is None

    plain = tmp_path / "p/a/plain.pdf"
    plain.write_bytes(data)  # no xattr: hashed
    assert lake.find_stored("a/plain.pdf", size=len(data), sha256=sha(data)) is not None
    assert lake.find_stored("a/plain.pdf", size=len(data), sha256=sha(b"x" * len(data))) is None
    if has_xattrs(plain):
        os.setxattr(plain, "user.sha256", b"0" * 64)  # the xattr wins over the bytes
        assert lake.find_stored("a/plain.pdf", size=len(data), sha256=sha(data)) is None


def test_local_find_stored_ignores_what_is_not_a_regular_file(tmp_path):
    lake = LocalLake(tmp_path, "p")
    (tmp_path / "p/a/dir.pdf").mkdir(parents=True)
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(b"secret")
    (tmp_path / "p/a/link.pdf").symlink_to(outside)
    assert lake.find_stored("a/dir.pdf", size=0, sha256=sha(b"")) is None
    assert lake.find_stored("a/link.pdf", size=6, sha256=sha(b"secret")) is None
    assert lake.find_stored("a/dir.pdf/x", size=0, sha256=sha(b"")) is None  # a missing path below


# The cache's errors are not the lake's.


class FailingRead:
    """A file object whose second read fails, as on a lost mount or a bad disk."""

    def __init__(self, f):
        self.f, self.reads = f, 0

    def read(self, n):
        self.reads += 1
        if self.reads > 1:
            raise OSError(errno.EIO, "Input/output error")
        return self.f.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def failing_open(monkeypatch, target: Path, at: str = "read") -> None:
    real_open = open

    def fake(path, mode="r", *args, **kwargs):
        if Path(path) == target:
            if at == "open":
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return FailingRead(real_open(path, mode, *args, **kwargs))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(storage_module, "open", fake, raising=False)


@pytest.mark.parametrize("at", ["open", "read"])
def test_verified_chunks_turns_os_errors_into_cache_unreadable(tmp_path, monkeypatch, at):
    source = tmp_path / "c"
    source.write_bytes(b"x" * 300)
    failing_open(monkeypatch, source, at)
    with pytest.raises(CacheUnreadable):
        list(verified_chunks(source, 300, sha(b"x" * 300), 100))
    with pytest.raises(CacheUnreadable):
        list(verified_chunks(tmp_path / "missing", 1, sha(b"x"), 100))
    with pytest.raises(CacheUnreadable):
        list(verified_chunks(tmp_path, 1, sha(b"x"), 100))  # a directory where the file should be


def test_a_cache_read_error_during_a_local_put_is_a_cache_problem_not_a_lake_failure(tmp_path, monkeypatch):
    source = tmp_path / "c"
    source.write_bytes(b"x" * 300)
    failing_open(monkeypatch, source)
    lake = LocalLake(tmp_path / "lake", "p")
    with pytest.raises(CacheProblem) as caught:
        lake.put(
            verified_chunks(source, 300, sha(b"x" * 300), 100),
            "a/b.pdf",
            size=300,
            sha256=sha(b"x" * 300),
            content_type=None,
        )
    assert isinstance(caught.value, CacheUnreadable)
    assert [p for p in (tmp_path / "lake").rglob("*") if p.is_file()] == []  # no temp file left, nothing final


def test_a_cache_read_error_during_a_onelake_put_is_a_cache_problem_and_the_temp_path_is_deleted(
    tmp_path, monkeypatch, dfs
):
    source = tmp_path / "c"
    source.write_bytes(b"x" * 300)
    failing_open(monkeypatch, source)
    with pytest.raises(CacheUnreadable):
        onelake(dfs).put(
            verified_chunks(source, 300, sha(b"x" * 300), 100),
            "a/b.pdf",
            size=300,
            sha256=sha(b"x" * 300),
            content_type=None,
        )
    assert dfs.files == {} and "delete" in [op for op, _, _ in dfs.log]


def test_changed_chunks_stop_before_the_flush(dfs):
    def chunks():
        yield b"a" * 10
        raise ChunksChanged("changed")

    with pytest.raises(ChunksChanged):
        onelake(dfs).put(chunks(), "a/b.pdf", size=10, sha256=sha(b"a" * 10), content_type=None)
    assert "flush" not in [op for op, _, _ in dfs.log] and dfs.files == {}


# Blob paths stay inside the lake.

HOSTILE_PATHS = [
    "../../outside.pdf",
    "/etc/passwd",
    "a/../../x.pdf",
    "a//b.pdf",
    "a/./b.pdf",
    "",
    "a\\..\\b",
    "a/b\x00.pdf",
    "a/b/",
    "..",
    "a/\n/b",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_a_blob_path_that_could_leave_the_lake_is_refused_before_any_io(tmp_path, dfs, path):
    with pytest.raises(StorageFailure) as caught:
        check_blob_path(path)
    assert (caught.value.failure.category, caught.value.failure.transient) == ("internal", False)
    lake = LocalLake(tmp_path / "lake", "p")
    with pytest.raises(StorageFailure):
        lake.put(iter([b"x"]), path, size=1, sha256=sha(b"x"), content_type=None)
    with pytest.raises(StorageFailure):
        lake.find_stored(path, size=1, sha256=sha(b"x"))
    storage = onelake(dfs)
    with pytest.raises(StorageFailure):
        storage.put(iter([b"x"]), path, size=1, sha256=sha(b"x"), content_type=None)
    with pytest.raises(StorageFailure):
        storage.find_stored(path, size=1, sha256=sha(b"x"))
    assert dfs.log == [] and not (tmp_path / "outside.pdf").exists()


def test_ordinary_blob_paths_pass():
    for path in ("documentsReceived/A1/T-1/A1_report_0123456789.pdf", "x.pdf", "a b/c-d_e.f.pdf", "ü/ñ.pdf"):
        assert check_blob_path(path) == path


# Blob paths within the bounds every store takes (paths.py), temporary names included.

TOO_LONG_PATHS = ["a/" + "n" * 256, "a/" + "é" * 128, "/".join(["d" * 200] * 4), "/".join("a" * 17)]


@pytest.mark.parametrize("path", TOO_LONG_PATHS, ids=["256-bytes", "256-bytes-utf8", "803-bytes", "17-segments"])
def test_a_blob_path_beyond_the_bounds_is_refused_by_name_before_any_io(tmp_path, dfs, path):
    with pytest.raises(StorageFailure) as caught:
        check_blob_path(path)
    assert (caught.value.failure.category, caught.value.failure.transient) == ("internal", False)
    assert "paths.py" in caught.value.failure.message
    with pytest.raises(StorageFailure):
        LocalLake(tmp_path / "lake", "p").put(iter([b"x"]), path, size=1, sha256=sha(b"x"), content_type=None)
    with pytest.raises(StorageFailure):
        onelake(dfs).put(iter([b"x"]), path, size=1, sha256=sha(b"x"), content_type=None)
    assert dfs.log == []


def test_the_longest_blob_path_within_the_bounds_passes():
    path = "/".join(["d" * 255, "e" * 255, "f" * 254, "g"])  # 768 bytes
    assert check_blob_path(path) == path
    with pytest.raises(StorageFailure):
        check_blob_path(path + "g")
    assert check_blob_path("/".join("a" * 16)) == "/".join("a" * 16)


def test_temporary_names_have_a_fixed_length_and_name_their_final_path():
    from pipeline_lib.upload.storage import TEMP_NAME_BYTES, temp_name

    for final in ("b.pdf", "n" * 255, "😀" * 63):
        a, b = temp_name(final), temp_name(final)
        assert len(a.encode()) == len(b.encode()) == TEMP_NAME_BYTES and a != b  # fresh for each upload
        assert a.startswith("." + hashlib.sha256(final.encode()).hexdigest()[:16] + ".") and a.endswith(".tmp")
