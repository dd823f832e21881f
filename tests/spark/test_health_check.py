"""`xact-pipeline health` on real Delta tables and the real broker: generated metrics and dead
letters of a known shape (a stalled stage, growing lag, a dead-letter burst, an old open dead
letter) give the verdicts and the exit codes the rules say."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from confluent_kafka import Producer

from pipeline_lib.kafka_options import librdkafka_config
from pipeline_lib.metrics import METRIC_COLUMNS
from pipeline_lib.spark.health_check import health_command, stage_verdicts
from pipeline_lib.spark.metrics import MetricsRecorder
from pipeline_lib.spark.tables import DLQ_SCHEMA, create_table, dlq_table


def metric(stage: str, at: datetime, batch_id: int, lag: int = 0) -> dict:
    row = dict.fromkeys(METRIC_COLUMNS)
    stamp = at.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    row.update(stage=stage, query_id="q", run_id="r", batch_id=batch_id, batch_time=stamp, batch_date=stamp[:10])
    row.update(input_rows=1, duration_ms=100, lag_max=lag, outcomes={}, breaker_openings=0)
    return row


def dead_letter(i: int, stage: str, failed_at: datetime, status: str = "open") -> dict:
    row = dict.fromkeys(DLQ_SCHEMA.fieldNames())
    row.update(dlq_id=f"d{i}", stage=stage, category="http_transient", failed_at=failed_at, status=status)
    row.update(replay_count=0, first_seen_at=failed_at, updated_at=failed_at, failed_date=f"{failed_at:%Y-%m-%d}")
    return row


def test_generated_tables_give_each_stage_its_verdict_and_the_worst_exit_code(spark, make_kafka_settings, capsys):
    settings = make_kafka_settings()
    now = datetime.now(UTC).replace(microsecond=0)
    recorder = MetricsRecorder(spark, settings)
    rows = [
        metric("ingest", now - timedelta(seconds=30), 1),  # ran just now, nothing waiting: ok
        # download: lag grows past the warn mark over the window
        *(metric("download", now - timedelta(minutes=m), 10 - m, lag) for m, lag in ((9, 10), (5, 5_000), (1, 20_000))),
        metric("upload", now - timedelta(hours=2), 1),  # and input since then: stalled
        metric("retry-scheduler", now - timedelta(days=2), 7),  # holds retries, no input: ok
    ]
    for row in rows:
        recorder.buffer.add(row)
    assert recorder.flush() == len(rows)

    create_table(spark, dlq_table(settings))
    letters = [dead_letter(i, "download", now - timedelta(minutes=i)) for i in range(15)]  # 15/h: warn
    letters.append(dead_letter(97, "ingest", now - timedelta(hours=20)))  # open for 20 h
    # Held 30 h by a replay that stopped: not replayed yet, so it counts as open (warn).
    letters.append(dead_letter(99, "ingest", now - timedelta(hours=30), status="replaying"))
    letters.append(dead_letter(98, "retry", now - timedelta(days=9), status="resolved"))  # resolved: no matter
    spark.createDataFrame(letters, DLQ_SCHEMA).write.format("delta").mode("append").save(dlq_table(settings).path)

    producer = Producer(librdkafka_config(settings.kafka))
    waiting_since = int((now - timedelta(minutes=30)).timestamp() * 1000)
    producer.produce(settings.topics.cached.name, b"{}", timestamp=waiting_since)
    assert producer.flush(10) == 0

    verdicts = {v.stage: v for v in stage_verdicts(spark, settings)}
    assert list(verdicts) == ["ingest", "download", "upload", "retry-scheduler", "results", "dlq-table"]
    assert verdicts["ingest"].level == "warn" and "oldest open dead letter 30.0 h old" in verdicts["ingest"].reasons
    download = verdicts["download"]
    assert download.level == "warn" and len(download.reasons) == 2
    assert "lag 20,000 records and growing" in download.reasons[0] and "15 dead letters" in download.reasons[1]
    assert verdicts["upload"].level == "failing" and verdicts["upload"].reasons[0].startswith(
        "stalled: input waiting 30 min"
    )
    assert verdicts["retry-scheduler"].level == "ok" and "no input waiting" in verdicts["retry-scheduler"].reasons[0]
    assert verdicts["results"].level == "ok" and verdicts["dlq-table"].level == "ok"

    assert health_command(settings, spark=spark) == 2
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("health at ") and printed[-1] == "overall: failing (3 ok, 2 warn, 1 failing)"
    assert [line.split()[1] for line in printed[1:-1]] == ["warn", "warn", "failing", "ok", "ok", "ok"]

    # Once the upload stage has run after that input, only warns are left: 1, or 0 for the task.
    recorder.buffer.add(metric("upload", datetime.now(UTC), 2))
    recorder.flush()
    assert health_command(settings, spark=spark) == 1
    assert health_command(settings, task=True, spark=spark) == 0
    strict = settings.model_copy(update={"health": settings.health.model_copy(update={"fail_on_warn": True})})
    assert health_command(strict, task=True, spark=spark) == 1
