"""Sample claim events shaped like XactAnalysis status events, and download tasks built the way
ingest builds them, for the demo, the tests and the benchmarks."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from pipeline_lib import ids
from pipeline_lib.config import Settings
from pipeline_lib.contracts import DownloadTask

SUBTYPES = ("documentsReceived", "firstNoticeOfLossReceived", "estimatePackageReceived")
FILES = ("photo_front.jpg", "inspection_report.pdf", "estimate.docx", "roof.png")


def presigned(url: str, issued: datetime, expires_seconds: int = 3600) -> str:
    """A URL with S3-style presign parameters (the signature is fake; the demo shows it redacted)."""
    sep = "&" if "?" in url else "?"
    return (
        f"{url}{sep}X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101%2Fus-east-1"
        f"&X-Amz-Date={issued.strftime('%Y%m%dT%H%M%SZ')}&X-Amz-Expires={expires_seconds}"
        "&X-Amz-Signature=0123456789abcdef0123456789abcdef"
    )


def sample_event(
    index: int,
    base_url: str,
    *,
    trace_prefix: str = "demo",
    now: datetime | None = None,
    attachments: int | None = None,
) -> dict[str, Any]:
    now = now or datetime.now(UTC)
    subtype = SUBTYPES[index % len(SUBTYPES)]
    count = attachments if attachments is not None else index % 4  # 0..3: some events carry none
    urls = [
        presigned(f"{base_url}/files/{index}/{FILES[(index + k) % len(FILES)]}?size={16384 * (k + 1)}", now)
        for k in range(count)
    ]
    data = {
        "assignmentId": f"A{100000 + index}",
        "attachments": urls,
        "estimateVersion": f"{1 + index % 3}.0" if subtype == "estimatePackageReceived" else None,
        "description": f"sample claim {index}",
        "carrierId": "CARRIER-1",
        "author": "demo",
        "adm": {"coverageLoss": {"claimNumber": f"CLM-{index:05d}"}},
        "contact": {"name": "Pat Doe", "phone": "+1-555-0100", "email": "pat@example.com"},
    }
    return {
        "type": f"verisk.claims.property.xn.{subtype}",
        "version": "1",
        "utcDateTime": (now - timedelta(minutes=index)).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "traceId": f"{trace_prefix}-{index:05d}",
        # Upstream sends `data` as an object or as a JSON string: exercise both.
        "data": json.dumps(data) if index % 2 else data,
    }


def produce_sample_events(settings: Settings, count: int, base_url: str, trace_prefix: str = "demo") -> int:
    from pipeline_lib.kafka_client import produce

    now = datetime.now(UTC)
    events = [sample_event(i, base_url, trace_prefix=trace_prefix, now=now) for i in range(count)]
    return produce(settings, settings.topics.events_raw.name, ((e["traceId"], json.dumps(e)) for e in events))


def sample_task(url: str, file_name: str = "report.pdf", trace_id: str = "T-1", **fields: Any) -> DownloadTask:
    """A pending task for `url`, as ingest would build it (ids derived the same way); `fields` override."""
    event_id = ids.event_id(trace_id, "t", "2026-11-27T10:00:00Z")
    values: dict[str, Any] = {
        "task_id": ids.task_id(event_id, url),
        "trace_id": trace_id,
        "event_id": event_id,
        "url": url,
        "blob_path": f"documentsReceived/A1/{trace_id}/A1_{file_name}",
        "status_subtype": "documentsReceived",
        "assignment_id": "A1",
        "event_type": "verisk.claims.property.xn.documentsReceived",
        "event_time": "2026-11-27T10:00:00Z",
        "event_date": "2026-11-27",
        "created_at": "2026-11-27T10:00:01.000Z",
    }
    values.update(fields)
    return DownloadTask(**values)
