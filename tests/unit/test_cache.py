"""The download cache's paths and janitor (pipeline_lib/cache.py): paths only from well-formed task
ids, never outside the cache; the janitor removes stale parts and the files of final tasks and
nothing else."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline_lib import ids
from pipeline_lib.cache import (
    InvalidTaskId,
    cache_path,
    clean_cache,
    is_task_id,
    part_path,
    stale_part_age,
)
from pipeline_lib.errors import PipelineError

HEX = "0123456789abcdef"
valid_ids = st.text(alphabet=HEX, min_size=32, max_size=32)


def test_a_task_id_maps_to_a_file_two_levels_below_the_cache(tmp_path):
    task_id = ids.task_id("T-1", "https://files.example.com/a.pdf")
    assert cache_path(tmp_path, task_id) == tmp_path / task_id[:2] / task_id
    assert cache_path(str(tmp_path), task_id) == tmp_path / task_id[:2] / task_id


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "../" + "a" * 29,
        "A" * 32,
        "a" * 31,
        "a" * 33,
        "a" * 32 + "\n",
        "/" + "a" * 31,
        "g" * 32,
        "a" * 16 + "/" + "a" * 15,
        "..",
        "٠" * 32,
        None,
        12345,
    ],
)
def test_anything_but_32_lowercase_hex_characters_is_refused(tmp_path, bad):
    with pytest.raises(InvalidTaskId) as caught:
        cache_path(tmp_path, bad)
    assert isinstance(caught.value, PipelineError) and isinstance(caught.value, ValueError)


@given(valid_ids)
def test_every_valid_id_is_accepted_and_lands_in_its_folder(task_id):
    path = cache_path("/cache", task_id)
    assert path.parent.parent == Path("/cache") and path.parent.name == task_id[:2] and path.name == task_id


@given(st.one_of(st.text(), st.text(alphabet=HEX + "ABCDEF./\\\n\x00 ", max_size=40), valid_ids))
def test_no_task_id_can_produce_a_path_outside_the_cache(task_id):
    root = Path("/srv/cache")
    expected = len(task_id) == 32 and all(c in HEX for c in task_id)
    assert is_task_id(task_id) is expected
    try:
        path = cache_path(root, task_id)
    except InvalidTaskId:
        assert not expected
        return
    assert expected
    assert os.path.normpath(path) == str(path)  # no '.', '..' or doubled separator to resolve
    assert path.is_relative_to(root) and len(path.relative_to(root).parts) == 2


def test_part_names_sit_beside_their_file_and_differ_each_time(tmp_path):
    final = cache_path(tmp_path, "ab" + "0" * 30)
    a, b = part_path(final), part_path(final)
    assert a != b and a.parent == final.parent and a.name.startswith(final.name + ".") and a.name.endswith(".part")


def test_the_stale_part_age_is_far_beyond_the_download_deadline():
    assert stale_part_age(120) == 3720 and stale_part_age(3600) == 14400


# The janitor.

NOW = 1_800_000_000.0


def make(root: Path, name: str, data: bytes = b"x", age: float = 0, folder: str | None = None) -> Path:
    path = root / (folder if folder is not None else name[:2]) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (NOW - age, NOW - age))
    return path


def task(n: int) -> str:
    return ids.task_id(f"T-{n}", f"https://files.example.com/{n}.pdf")


def test_stale_parts_go_and_parts_a_download_may_still_write_stay(tmp_path):
    old = make(tmp_path, f"{task(1)}.0badc0de.part", b"12345", age=7200)
    young = make(tmp_path, f"{task(2)}.1234abcd.part", b"123", age=60)
    report = clean_cache(tmp_path, part_max_age_seconds=3600, now=NOW)
    assert not old.exists() and young.exists()
    assert (report.stale_parts, report.stale_part_bytes, report.young_parts) == (1, 5, 1)
    assert (report.removed, report.freed_bytes, report.errors) == (1, 5, 0)


def test_cache_files_of_final_tasks_go_in_batches_and_the_others_stay(tmp_path):
    files = {task(n): make(tmp_path, task(n), b"x" * n, age=10) for n in range(1, 8)}
    final = {task(2), task(5), task(7)}
    batches: list[list[str]] = []

    def final_ids(batch):
        batches.append(list(batch))
        return [t for t in batch if t in final] + ["f" * 32]  # an id it was not asked about: ignored

    report = clean_cache(tmp_path, part_max_age_seconds=3600, final_ids=final_ids, batch_size=3, now=NOW)
    assert {t for t, p in files.items() if not p.exists()} == final
    assert (report.final_files, report.final_bytes, report.kept_files) == (3, 2 + 5 + 7, 4)
    assert [len(b) for b in batches] == [3, 3, 1] and sorted(sum(batches, [])) == sorted(files)


def test_young_cache_files_are_kept_even_when_final(tmp_path):
    young = make(tmp_path, task(1), age=30)
    old = make(tmp_path, task(2), age=600)
    report = clean_cache(
        tmp_path, part_max_age_seconds=3600, final_ids=lambda batch: batch, final_min_age_seconds=300, now=NOW
    )
    assert young.exists() and not old.exists() and (report.kept_files, report.final_files) == (1, 1)


def test_without_a_lookup_only_parts_are_cleaned(tmp_path):
    kept = make(tmp_path, task(1), age=10**6)
    report = clean_cache(tmp_path, part_max_age_seconds=3600, now=NOW)
    assert kept.exists() and report.kept_files == 1 and report.removed == 0


def test_nothing_but_cache_files_by_name_is_touched(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    precious = make(outside, task(9), b"precious", age=10**6)  # a cache-file name, outside the cache
    precious_part = make(outside, f"{task(9)}.0badc0de.part", age=10**6)
    cache = tmp_path / "cache"
    t1, t3 = task(1), task(3)
    others = [
        make(cache, "notes.txt", age=10**6, folder=t1[:2]),
        make(cache, t1.upper(), age=10**6, folder=t1[:2]),
        make(cache, t1 + ".tmp", age=10**6, folder=t1[:2]),
        make(cache, f"{t1}.0badc0de.part.keep", age=10**6, folder=t1[:2]),
        make(cache, t1, age=10**6, folder="zz"),  # not a two-hex folder
        make(cache, t1, age=10**6, folder=("00" if t1[:2] != "00" else "01")),  # the wrong folder for its id
        make(cache, "README", age=10**6, folder=""),  # at the top
    ]
    (cache / t1[:2] / t3).mkdir(parents=True)  # a folder named like a cache file
    link = cache / precious.name[:2] / precious.name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(precious)  # a symlink named like a cache file, to a file outside
    part_link = cache / precious.name[:2] / precious_part.name
    part_link.symlink_to(precious_part)
    target_folder = outside / "ff"
    target_folder.mkdir()
    victim = make(target_folder, "ff" + "0" * 30, age=10**6)
    (cache / "ff").symlink_to(target_folder)  # a symlinked folder: never entered

    report = clean_cache(cache, part_max_age_seconds=1, final_ids=lambda batch: batch, now=NOW)
    assert all(p.exists() for p in [*others, precious, precious_part, victim])
    assert link.is_symlink() and part_link.is_symlink() and (cache / t1[:2] / t3).is_dir()
    assert report.removed == 0 and report.errors == 0 and report.skipped >= len(others) - 1


def test_a_missing_cache_is_an_empty_report_and_nonsense_ages_are_refused(tmp_path):
    assert clean_cache(tmp_path / "nope", part_max_age_seconds=60) == clean_cache(tmp_path, part_max_age_seconds=60)
    with pytest.raises(ValueError):
        clean_cache(tmp_path, part_max_age_seconds=0)


def test_a_file_removed_meanwhile_is_not_an_error(tmp_path):
    gone = make(tmp_path, task(1), age=10)

    def final_ids(batch):
        gone.unlink()  # the upload deleted it after its verified upload
        return batch

    report = clean_cache(tmp_path, part_max_age_seconds=60, final_ids=final_ids, now=NOW)
    assert (report.final_files, report.errors) == (0, 0)


def test_ages_come_from_the_files_mtime_against_the_real_clock(tmp_path):
    old = make(tmp_path, f"{task(1)}.0badc0de.part")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    new = make(tmp_path, f"{task(2)}.0badc0de.part")
    os.utime(new, None)
    clean_cache(tmp_path, part_max_age_seconds=3600)
    assert not old.exists() and new.exists()
