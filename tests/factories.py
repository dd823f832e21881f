"""Small builders of pipeline messages for tests."""

from __future__ import annotations

from typing import Any

from pipeline_lib import ids
from pipeline_lib.contracts import DownloadTask


def make_task(url: str, file_name: str = "report.pdf", trace_id: str = "T-1", **fields: Any) -> DownloadTask:
    """A pending task for `url`, as ingest would build it (ids derived the same way)."""
    values: dict[str, Any] = {
        "task_id": ids.task_id(trace_id, url),
        "trace_id": trace_id,
        "event_id": ids.event_id(trace_id, "t", "2026-11-27T10:00:00Z"),
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
