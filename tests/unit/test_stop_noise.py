"""A stop prints no stack trace (issue #22, item 8): the trace pyspark's worker daemon prints when a
stop closes a task's socket mid-flush is dropped from the JVM's stderr, and nothing else is.

The daemon's text is produced for real: pyspark.daemon.worker runs against a socket whose peer is
closed, so its final flush fails the way it does when a cancelled task's socket goes away.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline_lib.logs import DAEMON_FLUSH_HEADER, StopNoiseFilter

NOISE = ("WARNING: Using incubator modules:",)

DAEMON_AT_CLOSED_PEER = textwrap.dedent("""
    import socket

    import pyspark.daemon
    import pyspark.worker


    def main(infile, outfile):
        outfile.write(b"x" * 1000)  # held in the buffer: the daemon's own flush meets the closed peer


    pyspark.worker.main = main
    ours, peer = socket.socketpair()
    peer.close()
    pyspark.daemon.worker(ours, authenticated=True)
""")


def filtered(lines: list[str]) -> list[str]:
    stream = StopNoiseFilter(NOISE)
    out = [kept for line in lines for kept in stream.feed(line)]
    return out + stream.flush()


def daemon_trace() -> list[str]:
    run = subprocess.run([sys.executable, "-c", DAEMON_AT_CLOSED_PEER], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stderr.splitlines(keepends=True)


def test_the_daemons_real_trace_at_a_closed_peer_is_dropped_and_the_lines_around_it_kept():
    trace = daemon_trace()
    assert trace[0].rstrip("\n") == DAEMON_FLUSH_HEADER and trace[-2].startswith("BrokenPipeError"), trace
    before, after = ["10:00:01 WARN  Something: kept\n"], ["10:00:02 INFO  Other: kept too\n"]
    assert filtered(before + trace + after) == before + after
    assert filtered(trace + trace) == []


def test_the_daemons_trace_without_its_header_or_source_lines_is_dropped():
    # how it reads when pyspark runs from its zip (no source lines) or the child's loop prints it
    lines = [
        "Traceback (most recent call last):\n",
        '  File "/opt/spark/python/lib/pyspark.zip/pyspark/daemon.py", line 280, in manager\n',
        '  File "/opt/spark/python/lib/pyspark.zip/pyspark/daemon.py", line 95, in worker\n',
        "ConnectionResetError: [Errno 104] Connection reset by peer\n",
    ]
    assert filtered(lines) == []


def test_a_trace_that_is_not_the_daemons_at_a_closed_peer_is_kept_whole():
    ours = ['  File "/work/pipeline_lib/spark/ingest.py", line 10, in route\n', "    raise ValueError\n"]
    daemon_frame = ['  File "/x/pyspark/daemon.py", line 95, in worker\n', "    outfile.flush()\n"]
    cases = [
        ["Traceback (most recent call last):\n", *ours, "BrokenPipeError: [Errno 32] Broken pipe\n"],
        ["Traceback (most recent call last):\n", *daemon_frame, "ValueError: something else\n"],
        ["Traceback (most recent call last):\n", *daemon_frame, *ours, "BrokenPipeError: [Errno 32]\n"],
        [DAEMON_FLUSH_HEADER + "\n", "Traceback (most recent call last):\n", *daemon_frame, "OSError: [Errno 5]\n"],
        [DAEMON_FLUSH_HEADER + "\n", "something else\n"],
        ["Traceback (most recent call last):\n", "BrokenPipeError: no frames at all\n"],
        ["Traceback (most recent call last):\n"],  # cut off at the end of the stream
    ]
    for lines in cases:
        assert filtered(lines) == lines, lines


def test_noise_lines_are_dropped_wherever_they_fall():
    assert filtered(["a\n", "WARNING: Using incubator modules: jdk.incubator.vector\n", "b\n"]) == ["a\n", "b\n"]


DAEMON_FRAMES = st.lists(
    st.sampled_from(
        [
            ['  File "/x/pyspark/daemon.py", line 95, in worker\n', "    outfile.flush()\n"],
            ['  File "/x/pyspark/daemon.py", line 95, in worker\n', "    outfile.flush()\n", "    ^^^^^^^^^^^^^^^\n"],
            ['  File "/x/lib/pyspark.zip/pyspark/daemon.py", line 280, in manager\n'],
        ]
    ),
    min_size=1,
    max_size=3,
).map(lambda frames: [line for frame in frames for line in frame])
PEER_GONE = st.sampled_from(["BrokenPipeError", "ConnectionResetError"])
DAEMON_BLOCK = st.tuples(st.booleans(), DAEMON_FRAMES, PEER_GONE).map(
    lambda b: (
        ([DAEMON_FLUSH_HEADER + "\n"] if b[0] else [])
        + ["Traceback (most recent call last):\n", *b[1], f"{b[2]}: [Errno 32] Broken pipe\n"]
        + (["\n"] if b[0] else [])
    )  # the daemon's print() of header and trace ends in a blank line
)
# Lines that must pass: arbitrary text (including what looks like a trace's parts), and whole
# traces that are not the daemon's at a closed peer.
SPECIAL = [
    DAEMON_FLUSH_HEADER,
    "Traceback (most recent call last):",
    '  File "/x/pyspark/daemon.py", line 1, in w',
    "    outfile.flush()",
    "BrokenPipeError: [Errno 32] Broken pipe",
    "  ^^^^",
]
OTHER_LINE = st.one_of(st.text(st.characters(blacklist_characters="\r\n"), max_size=40), st.sampled_from(SPECIAL)).map(
    lambda text: text + "\n"
)
OTHER_FRAMES = st.lists(
    st.sampled_from(
        [
            ['  File "/w/pipeline_lib/routing.py", line 3, in run\n', "    stage(record)\n"],
            ['  File "/x/pyspark/daemon.py", line 95, in worker\n'],
        ]
    ),
    min_size=1,
    max_size=3,
)
OTHER_ERROR = st.sampled_from(["ValueError: bad", "KeyError: 'x'", "BrokenPipeError: [Errno 32]"])
OTHER_TRACE = (
    st.tuples(OTHER_FRAMES, OTHER_ERROR)
    .filter(lambda t: not (all("daemon.py" in f[0] for f in t[0]) and t[1].startswith("BrokenPipeError")))
    .map(lambda t: ["Traceback (most recent call last):\n", *(line for f in t[0] for line in f), t[1] + "\n"])
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("drop"), DAEMON_BLOCK),
            st.tuples(st.just("keep"), OTHER_LINE.map(lambda line: [line])),
            st.tuples(st.just("keep"), OTHER_TRACE),
        ),
        max_size=12,
    )
)
def test_only_the_daemons_closed_peer_traces_are_dropped_from_any_stream(parts):
    # A kept line that would complete a held block (a lone header, then a daemon trace) is not
    # ambiguous: a held block is forwarded whole as soon as a line does not continue it.
    stream = [line for _, lines in parts for line in lines]
    expected = [line for kind, lines in parts if kind == "keep" for line in lines]
    got = filtered(stream)
    if got != expected:
        # The one legitimate difference: kept lines that themselves spell a daemon trace at a
        # closed peer (drawn from SPECIAL) are dropped too, with the blank line that ends a block
        # when its header went too; nothing kept may be lost otherwise.
        lost = set(expected) - set(got)
        spelled = (*SPECIAL, "") if DAEMON_FLUSH_HEADER + "\n" in lost else SPECIAL
        assert all("daemon.py" in line or line.rstrip("\n") in spelled for line in lost)
    remaining = iter(expected)
    assert all(line in remaining for line in got), "the kept lines are the stream's, in its order"
