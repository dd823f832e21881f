"""The notebooks' charts (pipeline_lib/charts.py) on generated metrics over a known span: each
time axis is the window asked for within one bucket, counts get whole-number ticks, and a quiet
stream is a line at zero."""

from __future__ import annotations

from datetime import UTC, datetime

import matplotlib
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.charts import QUIET, bar_chart, bucket, on_window, time_chart, time_window

matplotlib.use("Agg")
NOW = datetime(2027, 1, 15, 12, 34, 56, tzinfo=UTC)


def span(chart) -> pd.Timedelta:
    from matplotlib.dates import num2date

    low, high = (num2date(x) for x in chart.axes.get_xlim())
    return high - low


def generated(start, end, every, stages=("download", "upload"), count=5) -> pd.DataFrame:
    times = pd.date_range(start, end, periods=count + 2)[1:-1].floor(bucket(every))
    return pd.DataFrame({s: range(1, count + 1) for s in stages}, index=times)


@pytest.mark.parametrize(("hours", "every"), [(24, "1 minute"), (6, "10 minutes"), (168, "1 hour"), (1, "1 minute")])
def test_the_time_axis_spans_the_hours_asked_for_within_one_bucket(hours, every):
    import matplotlib.pyplot as plt

    start, end = time_window(hours, every, NOW)
    assert end - start == pd.Timedelta(hours=hours) and start <= pd.Timestamp(NOW).tz_localize(None) < end
    chart = time_chart(generated(start, end, every), start, end, every, title="lag", unit="records", counts=True)
    assert abs(span(chart) - pd.Timedelta(hours=hours)) <= bucket(every)
    assert chart.axes.get_ylabel() == "records" and "UTC" in chart.axes.get_xlabel()
    assert f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC" in repr(chart)
    plt.close("all")


def test_counts_get_whole_number_ticks_even_for_one_dead_letter():
    import matplotlib.pyplot as plt

    start, end = time_window(24, "1 hour", NOW)
    one = pd.DataFrame({"download": [1]}, index=[start + pd.Timedelta(hours=3)])
    chart = time_chart(one, start, end, "1 hour", title="dead letters", unit="dead letters", counts=True)
    ticks = [t for t in chart.axes.get_yticks() if chart.axes.get_ylim()[0] <= t <= chart.axes.get_ylim()[1]]
    assert ticks and all(float(t).is_integer() and t >= 0 for t in ticks)
    bars = bar_chart(pd.Series({"http_permanent": 1}), title="dead letters per category", unit="dead letters")
    assert all(float(t).is_integer() for t in bars.axes.get_yticks())
    plt.close("all")


def test_a_quiet_window_draws_a_line_at_zero_not_an_empty_axis():
    import matplotlib.pyplot as plt

    start, end = time_window(6, "10 minutes", NOW)
    chart = time_chart(pd.DataFrame(), start, end, "10 minutes", title="lag", unit="records", counts=True)
    (line,) = chart.axes.get_lines()
    assert line.get_label() == QUIET and len(line.get_ydata()) == 36 and set(line.get_ydata()) == {0.0}
    low, high = chart.axes.get_ylim()
    assert low < 0 and high == 1.0  # the zero line sits above the axis, where it can be seen
    plt.close("all")


@settings(max_examples=50, deadline=None)
@given(
    hours=st.integers(1, 72),
    every=st.sampled_from(["1 minute", "5 minutes", "1 hour"]),
    offsets=st.lists(st.integers(-200 * 3600, 200 * 3600), max_size=30),
)
def test_on_window_gives_one_row_per_bucket_of_the_window_and_drops_what_lies_outside(hours, every, offsets):
    start, end = time_window(hours, every, NOW)
    frame = pd.DataFrame(
        {"s": [1.0] * len(offsets)},
        index=[pd.Timestamp(NOW).tz_localize(None) + pd.Timedelta(seconds=o) for o in offsets],
    )
    data = on_window(frame, start, end, every)
    assert len(data) == (end - start) // bucket(every) and data.index[0] == start
    inside = sum(start <= t < end for t in frame.index)
    assert data.to_numpy().sum() == inside


def test_a_bucket_that_is_not_a_duration_is_refused_naming_the_forms():
    with pytest.raises(ValueError, match="'1 minute', '10 minutes', '1 hour'"):
        bucket("fortnightly")
