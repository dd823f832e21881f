"""The whole pipeline through `xact-pipeline run`, against the local broker, a file server serving a
mix of attachments (good, transient then fine, permanent, expired presigned, refused, slow) and the
local lake: every task ends final exactly once, and every invariant holds."""

from __future__ import annotations

import time

from tests.drills.harness import (
    PipelineProcess,
    Report,
    check_invariants,
    make_events,
    produce_events,
    wait_for_tasks,
    wait_until_final,
)


def test_every_task_ends_final_exactly_once_through_run(spark, drill_settings, sample_server, tmp_path):
    s = drill_settings()
    records, work = make_events(sample_server, 30, seed=1)
    report = Report("end-to-end through run")
    report.injected = [f"{work.events} events", ", ".join(f"{n} {k}" for k, n in sorted(work.kinds.items()))]
    log = tmp_path / "run.log"
    started = time.monotonic()
    produce_events(s, records)
    run = PipelineProcess(s, log)
    try:
        expected = sum(n for k, n in work.kinds.items() if k != "refused")
        wait_for_tasks(s, expected, procs=[run])
        wait_until_final(spark, s, expected, timeout=300, procs=[run])
        report.seconds = time.monotonic() - started
    finally:
        code = run.terminate()
    assert code in (0, 75), log.read_text()[-3000:]
    check_invariants(spark, s, work, report, [log])
    report.print()
    assert report.completed == sum(work.kinds[k] for k in ("good", "flaky", "slow"))
    assert report.dead == work.kinds["gone"] + work.kinds["expired"]
