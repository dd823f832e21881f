from datetime import datetime, timedelta, timezone

from pipeline_lib.times import iso_from_millis, iso_utc


def test_iso_utc_normalises_any_offset_to_z():
    plus2 = timezone(timedelta(hours=2))
    assert iso_utc(datetime(2026, 11, 27, 14, 0, tzinfo=plus2)) == "2026-11-27T12:00:00.000Z"


def test_iso_from_millis_handles_missing_values():
    assert iso_from_millis(1_795_744_000_123) == "2026-11-27T01:46:40.123Z"
    assert iso_from_millis(None) is None and iso_from_millis(float("nan")) is None
