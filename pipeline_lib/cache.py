"""The download cache on disk: where a task's file lives, and the janitor that removes what is no
longer needed.

    path = cache_path(settings.cache_dir, task.task_id)     # <cache_dir>/<id[:2]>/<id>
    temp = part_path(path)                                   # <cache_dir>/<id[:2]>/<id>.<8 hex>.part
    report = clean_cache(settings.cache_dir, part_max_age_seconds=stale_part_age(
        settings.download.total_timeout_seconds), final_ids=lookup_final_ids)

A cache path is derived from the task id alone, and only from a well-formed one (32 lowercase hex
characters, what `ids.task_id` makes): a message cannot name a file for the upload to read and
publish, and a retry or a replay of a task finds the same file. So every cache name has a fixed
length whatever the attachment's name: 2 bytes for the folder, 32 for a file, 46 for a part
(CACHE_NAME_BYTES), far within the 255 bytes a file system allows for one name (paths.py).

The janitor removes two kinds of file and nothing else:
- `.part` files older than `part_max_age_seconds`: left by a download that crashed before its
  rename. A download in progress writes its part for at most download.total_timeout_seconds, so
  the age must be well above that (`stale_part_age`).
- cache files whose task is final (uploaded or dead), as reported by `final_ids`, which gets a
  batch of task ids and returns the final ones (the Spark side looks them up in xact_attachments).
It recognises files by name (`<2 hex>/<id>` and `<2 hex>/<id>.<8 hex>.part`, with the folder
matching the id), looks only at regular files, never follows a symbolic link below `cache_dir`
(folders are opened with O_NOFOLLOW and files removed relative to them), and leaves anything else
alone. It never raises for what it finds on disk: a file it cannot stat or remove is counted in
`errors` and skipped.
"""

from __future__ import annotations

import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipeline_lib.errors import PipelineError
from pipeline_lib.logs import get_logger

log = get_logger("cache")

_TASK_ID = re.compile(r"[0-9a-f]{32}")
_FOLDER = re.compile(r"[0-9a-f]{2}")
_PART = re.compile(r"([0-9a-f]{32})\.[0-9a-f]{8}\.part")
CACHE_NAME_BYTES = (2, 32, 46)  # folder, file, part: the only names cache_path and part_path make


class InvalidTaskId(PipelineError, ValueError):
    """A task id that is not 32 lowercase hex characters: no cache path is derived from it."""


def is_task_id(value: object) -> bool:
    return isinstance(value, str) and _TASK_ID.fullmatch(value) is not None


def cache_path(cache_dir: str | os.PathLike[str], task_id: str) -> Path:
    """Where a task's file lives in the cache: `<cache_dir>/<id[:2]>/<id>`.

    Raises InvalidTaskId unless `task_id` is exactly 32 lowercase hex characters, so the path is
    always a file two levels below `cache_dir`, whatever a message holds.
    """
    if not is_task_id(task_id):
        shown = repr(task_id)
        shown = shown if len(shown) <= 80 else shown[:77] + "..."
        raise InvalidTaskId(
            f"task id {shown} is not 32 lowercase hex characters (a task id made by ids.task_id): "
            "no cache path is derived from it"
        )
    return Path(cache_dir) / task_id[:2] / task_id


def part_path(final: Path) -> Path:
    """A fresh temporary name beside a cache file, for a download to write and then rename."""
    return final.with_name(f"{final.name}.{uuid.uuid4().hex[:8]}.part")


def stale_part_age(total_timeout_seconds: float) -> float:
    """A `.part` age safely beyond any download still running (download.total_timeout_seconds):
    four times the deadline, and at least an hour more than it."""
    return max(4 * total_timeout_seconds, total_timeout_seconds + 3600)


@dataclass(frozen=True)
class JanitorReport:
    stale_parts: int = 0  # .part files older than the age given, removed
    stale_part_bytes: int = 0
    final_files: int = 0  # cache files of final tasks, removed
    final_bytes: int = 0
    kept_files: int = 0  # cache files of tasks not final (or younger than final_min_age_seconds)
    young_parts: int = 0  # .part files younger than the age given: a download may be writing them
    skipped: int = 0  # entries that are not cache files by name or type (symlinks, folders, ...)
    errors: int = 0  # entries that could not be examined or removed

    @property
    def removed(self) -> int:
        return self.stale_parts + self.final_files

    @property
    def freed_bytes(self) -> int:
        return self.stale_part_bytes + self.final_bytes


@dataclass
class _Counts:
    stale_parts: int = 0
    stale_part_bytes: int = 0
    final_files: int = 0
    final_bytes: int = 0
    kept_files: int = 0
    young_parts: int = 0
    skipped: int = 0
    errors: int = 0


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0)


def clean_cache(
    cache_dir: str | os.PathLike[str],
    *,
    part_max_age_seconds: float,
    final_ids: Callable[[Sequence[str]], Iterable[str]] | None = None,
    final_min_age_seconds: float = 0.0,
    batch_size: int = 1000,
    now: float | None = None,
) -> JanitorReport:
    """Remove stale `.part` files and the cache files of final tasks under `cache_dir`.

    `final_ids(batch)` receives up to `batch_size` task ids that have a cache file and returns
    those whose task is final; only ids of that batch are acted on. None: only `.part` files are
    cleaned. A cache file younger than `final_min_age_seconds` is kept whatever its task's state
    (a replayed task may be between its download and its upload). Ages are from st_mtime; `now`
    is a time.time() value (tests). A missing `cache_dir` is an empty report; an error raised by
    `final_ids` propagates (what was removed before it stays removed).
    """
    if part_max_age_seconds <= 0:
        raise ValueError("part_max_age_seconds must be positive (well above download.total_timeout_seconds)")
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    counts = _Counts()
    clock = time.time() if now is None else now
    try:
        folders = sorted(
            e.name for e in os.scandir(cache_dir) if _FOLDER.fullmatch(e.name) and e.is_dir(follow_symlinks=False)
        )
    except FileNotFoundError:
        return JanitorReport()
    batch: list[tuple[str, str]] = []  # (folder, task id)
    for folder in folders:
        for task_id in _scan_folder(cache_dir, folder, clock, part_max_age_seconds, final_min_age_seconds, counts):
            batch.append((folder, task_id))
            if len(batch) >= batch_size:
                _remove_final(cache_dir, batch, final_ids, counts)
                batch = []
    if batch:
        _remove_final(cache_dir, batch, final_ids, counts)
    return JanitorReport(**vars(counts))


def _open_folder(cache_dir: str | os.PathLike[str], folder: str) -> int:
    """A descriptor of `<cache_dir>/<folder>`, refusing a symlink in its place."""
    top = os.open(cache_dir, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        return os.open(folder, _DIR_FLAGS, dir_fd=top)
    finally:
        os.close(top)


def _scan_folder(
    cache_dir: str | os.PathLike[str],
    folder: str,
    clock: float,
    part_max_age: float,
    final_min_age: float,
    counts: _Counts,
) -> Iterator[str]:
    """Remove the folder's stale parts; yield the task ids of its cache files old enough to be
    candidates for the final-task lookup."""
    try:
        fd = _open_folder(cache_dir, folder)
    except OSError:
        counts.errors += 1
        return
    try:
        try:
            names = sorted(os.listdir(fd))
        except OSError:
            counts.errors += 1
            return
        for name in names:
            part = _PART.fullmatch(name)
            is_final_name = _TASK_ID.fullmatch(name) is not None
            if not (part or is_final_name) or name[:2] != folder:
                counts.skipped += 1
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # renamed or removed meanwhile: a download or an upload finished
            except OSError:
                counts.errors += 1
                continue
            if not stat.S_ISREG(st.st_mode):
                counts.skipped += 1
                continue
            age = clock - st.st_mtime
            if part:
                if age <= part_max_age:
                    counts.young_parts += 1
                elif _unlink(fd, name, counts):
                    counts.stale_parts += 1
                    counts.stale_part_bytes += st.st_size
            elif age < final_min_age:
                counts.kept_files += 1
            else:
                yield name
    finally:
        os.close(fd)


def _remove_final(
    cache_dir: str | os.PathLike[str],
    batch: list[tuple[str, str]],
    final_ids: Callable[[Sequence[str]], Iterable[str]] | None,
    counts: _Counts,
) -> None:
    asked = [task_id for _, task_id in batch]
    final = set(final_ids(asked)) if final_ids is not None else set()
    for folder, task_id in batch:
        if task_id not in final:
            counts.kept_files += 1
            continue
        try:
            fd = _open_folder(cache_dir, folder)
        except OSError:
            counts.errors += 1
            continue
        try:
            try:
                st = os.stat(task_id, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                continue  # the upload removed it meanwhile
            except OSError:
                counts.errors += 1
                continue
            if not stat.S_ISREG(st.st_mode):
                counts.skipped += 1
            elif _unlink(fd, task_id, counts):
                counts.final_files += 1
                counts.final_bytes += st.st_size
        finally:
            os.close(fd)


def _unlink(fd: int, name: str, counts: _Counts) -> bool:
    """Remove `name` in the folder `fd` (never through a symlinked folder); False if it could not be."""
    try:
        os.unlink(name, dir_fd=fd)
        return True
    except FileNotFoundError:
        return False  # someone else removed it
    except OSError:
        counts.errors += 1
        return False


def clean_stale_parts(cache_dir: str | Path, download_timeout_seconds: float) -> None:
    """Remove `.part` files far older than any download may take (a crash left them); best effort.

    The upload job calls this at its start; `tables maintain` runs clean_cache in full."""
    try:
        report = clean_cache(cache_dir, part_max_age_seconds=stale_part_age(download_timeout_seconds))
    except OSError as exc:  # the cache may not be mounted on the driver: the next start tries again
        log.warning("cache janitor skipped: %s", exc)
        return
    if report.removed or report.errors:
        log.info(
            "cache janitor: removed %d stale part file(s), %d bytes; %d error(s)",
            report.stale_parts,
            report.stale_part_bytes,
            report.errors,
        )
