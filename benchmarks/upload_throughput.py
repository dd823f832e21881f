"""Upload throughput to the local lake backend against a plain file copy of the same files, in
the same run.

    .venv/bin/python benchmarks/upload_throughput.py                 # 200 x 1 MiB and 4 x 256 MiB
    .venv/bin/python benchmarks/upload_throughput.py --spark         # also the Spark job end to end

Rows:
- copy: shutil.copyfile of each cached file to a fresh folder, one thread (the reference);
- upload stage: `UploadStage.process` over the same files, what one Spark task runs
  (upload.concurrency threads, each file re-hashed while streamed, temp name, rename, cache file
  deleted after the verified upload);
- upload job (--spark): the streaming job with Trigger.AvailableNow from the cached topic to the
  results topic, including Spark's per-query start (Python workers, Kafka clients: seconds).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
from pathlib import Path

from pipeline_lib.config import load_settings
from pipeline_lib.contracts import CachedAttachment, SourceRef
from pipeline_lib.local.samples import sample_task
from pipeline_lib.logs import setup_logging
from pipeline_lib.routing import PendingRecord
from pipeline_lib.upload.stage import UploadStage

MiB = 1024 * 1024
SETS = {"medium": (200, MiB), "large": (4, 256 * MiB)}


def make_cache(folder: Path, name: str, count: int, size: int) -> list[CachedAttachment]:
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(MiB)
    items = []
    for i in range(count):
        task = sample_task(f"https://files.example.com/{name}/{i}.pdf", f"{name}-{i}.pdf", trace_id=f"bench-{name}-{i}")
        path = folder / task.task_id
        digest = hashlib.sha256()
        with open(path, "wb") as f:
            for _ in range(size // MiB or 1):
                chunk = block[: min(size, MiB)]
                f.write(chunk)
                digest.update(chunk)
        items.append(CachedAttachment(task=task.to_dict(), cache_uri=path.as_uri(), bytes=path.stat().st_size,
                                      sha256=digest.hexdigest(), content_type="application/pdf",
                                      downloaded_at="2026-11-27T00:00:00Z"))  # fmt: skip
    return items


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spark", action="store_true", help="also run the streaming job end to end")
    args = parser.parse_args()
    setup_logging("WARNING")
    rows = []
    with tempfile.TemporaryDirectory(prefix="xact-bench-") as tmp:
        root = Path(tmp)
        broker = None
        if args.spark:
            from pipeline_lib.local.broker import LocalKafka, free_port

            broker = LocalKafka(root / "broker", free_port(), free_port(), heap="512m")
            broker.start()
        settings = load_settings("local", overrides={"storage": {"root": str(root / "var")},
                                                     "download": {"cache_dir": str(root / "cache")}})  # fmt: skip
        for name, (count, size) in SETS.items():
            items = make_cache(root / "cache" / name, name, count, size)
            mib = count * size / MiB
            os.sync()
            start = time.perf_counter()
            copies = root / "copies" / name
            copies.mkdir(parents=True)
            for item in items:
                shutil.copyfile(item.cache_uri.removeprefix("file://"), copies / Path(item.cache_uri).name)
            copy_s = time.perf_counter() - start
            shutil.rmtree(copies)

            stage = UploadStage(settings)
            records = [PendingRecord(None, i.encode().encode(), SourceRef("cached", 0, n)) for n, i in enumerate(items)]
            os.sync()
            start = time.perf_counter()
            routed = list(stage.process(records))
            stage_s = time.perf_counter() - start
            done = sum(1 for r in routed if r.messages[0].outcome == "completed")
            assert done == count, [m.message for r in routed for m in r.messages][:2]
            rows.append((f"{name} {count} x {size // MiB} MiB", mib / copy_s, mib / stage_s, None))
            if broker is not None:
                rows[-1] = (*rows[-1][:3], spark_job(broker.bootstrap, root, name, count, size, mib))
        if broker is not None:
            from pipeline_lib.spark.session import session_for

            session_for(settings).stop()  # before the broker: its cached producers would keep reconnecting
            broker.stop()
    print(f"\n{'set':<22} {'copy MiB/s':>11} {'stage MiB/s':>12} {'ratio':>6} {'job MiB/s':>10}")
    for label, copy_rate, stage_rate, job_rate in rows:
        job = f"{job_rate:>10.0f}" if job_rate else f"{'-':>10}"
        print(f"{label:<22} {copy_rate:>11.0f} {stage_rate:>12.0f} {stage_rate / copy_rate:>5.2f}x {job}")


def spark_job(bootstrap: str, root: Path, name: str, count: int, size: int, mib: float) -> float:
    from pipeline_lib.kafka_client import produce
    from pipeline_lib.spark.session import session_for
    from pipeline_lib.spark.upload import run_upload

    s = load_settings("local", overrides={
        "kafka": {"bootstrap_servers": bootstrap}, "storage": {"root": str(root / f"var-{name}")},
        "download": {"cache_dir": str(root / "cache")},
        "topics": {"cached": {"name": f"cached-{name}", "partitions": 2}},
    })  # fmt: skip
    from pipeline_lib.kafka_client import create_topics

    create_topics(bootstrap, s.topic_partitions())
    items = make_cache(root / "cache" / f"{name}-job", f"{name}-job", count, size)
    produce(s, s.topics.cached.name, [(i.download_task.trace_id, i.encode(), i.headers()) for i in items])
    spark = session_for(s)
    start = time.perf_counter()
    run_upload(spark, s, available_now=True).awaitTermination()
    return mib / (time.perf_counter() - start)


if __name__ == "__main__":
    main()
