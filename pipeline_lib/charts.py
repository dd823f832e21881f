"""The notebooks' charts, one style for all three: a time axis that spans the window asked for, in
buckets of `every`; counts on whole-number ticks; a quiet stream drawn as a line at zero; every
axis labelled with its unit. Pandas and matplotlib only (matplotlib is imported when a chart is
drawn: every notebook runtime has it, the wheel does not need it).

    start, end = time_window(hours=24, every="1 minute")
    time_chart(over_time(...), start, end, "1 minute", title="lag", unit="records", counts=True)

Each chart function returns a Chart: the matplotlib Axes, and a one-line description (its repr,
so a notebook cell shows it under the figure) naming the axis span, the buckets and the series.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

FIGSIZE = (10, 3.6)
QUIET = "no batches"  # the series drawn at zero when the window holds no data at all

_UNITS = {
    "second": "s",
    "seconds": "s",
    "minute": "min",
    "minutes": "min",
    "hour": "h",
    "hours": "h",
    "day": "D",
    "days": "D",
}


def bucket(every: str) -> pd.Timedelta:
    """A Spark window duration ("1 minute", "10 minutes", "1 hour") as a pandas Timedelta."""
    match = re.fullmatch(r"\s*(\d+)\s*([a-z]+)\s*", every.lower())
    if not match or match.group(2) not in _UNITS or int(match.group(1)) < 1:
        raise ValueError(f"every={every!r}: use a count and a unit, e.g. '1 minute', '10 minutes', '1 hour'")
    return pd.Timedelta(int(match.group(1)), unit=_UNITS[match.group(2)])


def time_window(hours: float, every: str, now: datetime | None = None) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The window a chart spans: the last `hours`, ending at the end of the current bucket (UTC,
    naive, as Spark's timestamps reach pandas)."""
    if not hours > 0:
        raise ValueError(f"hours={hours!r}: must be above 0")
    step = bucket(every)
    stamp = pd.Timestamp(now or datetime.now(UTC))
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    end = stamp.floor(step) + step
    return end - pd.Timedelta(hours=hours), end


def on_window(
    frame: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp, every: str, *, gaps: bool = False
) -> pd.DataFrame:
    """`frame` (a time index, one column per series) on every bucket of the window, 0 where a
    bucket has no row (`gaps`: left empty, for a measure such as latency that a quiet bucket does
    not have); a window with no value at all becomes one series of zeros (QUIET)."""
    index = pd.date_range(start, end, freq=bucket(every), inclusive="left", name="time")
    if frame.empty or len(frame.columns) == 0 or frame.isna().all().all():
        return pd.DataFrame({QUIET: 0.0}, index=index)
    data = frame.copy()
    data.index = pd.to_datetime(data.index)
    if data.index.tz is not None:
        data.index = data.index.tz_convert(None)
    data = data[(data.index >= start) & (data.index < end)]
    data = data.groupby(data.index.floor(bucket(every))).sum(min_count=1).reindex(index)
    if gaps:
        return data if data.notna().any().any() else pd.DataFrame({QUIET: 0.0}, index=index)
    return data.fillna(0.0)


@dataclass(frozen=True)
class Chart:
    axes: object  # matplotlib Axes
    description: str

    def __repr__(self) -> str:
        return self.description


def _style(ax, title: str, ylabel: str, counts: bool) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    top = max(ax.get_ylim()[1], 1.0) if counts else max(ax.get_ylim()[1], 1e-9)
    # A little room below zero, so a line at zero (a quiet stream) is drawn above the axis, not on it.
    ax.set_ylim(-0.03 * top, top)
    if counts:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # a quiet count axis reads 0..1, whole numbers


def time_chart(
    frame: pd.DataFrame,
    start: pd.Timestamp,
    end: pd.Timestamp,
    every: str,
    *,
    title: str,
    unit: str,
    counts: bool = False,
    gaps: bool = False,
) -> Chart:
    """A line per series over the window; `unit` labels the y axis (records, rows per second,
    seconds); `counts`: whole-number ticks; `gaps`: quiet buckets stay empty (on_window)."""
    import matplotlib.pyplot as plt
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    data = on_window(frame, start, end, every, gaps=gaps)
    _, ax = plt.subplots(figsize=FIGSIZE)
    # matplotlib's own date axis, not pandas' period axis: the limits are the window, as dates.
    marker = "o" if len(data) <= 48 else None
    for column in data.columns:
        ax.plot(
            data.index.to_pydatetime(),
            data[column].to_numpy(),
            marker=marker,
            markersize=3,
            linewidth=1.2,
            label=str(column),
        )
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_xlim(start.to_pydatetime(), end.to_pydatetime())
    ax.legend(loc="upper left", fontsize="small")
    ax.set_xlabel(f"time (UTC), {every} buckets")
    _style(ax, title, unit, counts)
    series = ", ".join(map(str, data.columns))
    return Chart(ax, f"{title}: {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC, {every} buckets; {series}")


def bar_chart(values: pd.Series | pd.DataFrame, *, title: str, unit: str, horizontal: bool = False) -> Chart:
    """Counts per category (a frame: a bar per column in each group) on whole-number ticks; an
    empty input draws one empty bar, "(none)"."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    data = values if not values.empty else pd.Series({"(none)": 0})
    _, ax = plt.subplots(figsize=FIGSIZE)
    (data.plot.barh if horizontal else data.plot.bar)(ax=ax, rot=0 if horizontal else 30)
    ax.set_title(title)
    axis = ax.xaxis if horizontal else ax.yaxis
    axis.set_major_locator(MaxNLocator(integer=True))
    (ax.set_xlabel if horizontal else ax.set_ylabel)(unit)
    top = float(pd.DataFrame(data).to_numpy(dtype=float).max())
    (ax.set_xlim if horizontal else ax.set_ylim)(0, max(1.0, top * 1.1))
    ax.grid(True, alpha=0.3, axis="x" if horizontal else "y")
    return Chart(ax, f"{title}: {len(values)} bar group(s), {unit}")
