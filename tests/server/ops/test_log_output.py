"""server/ops/log_output.py: a log line never blocks and never raises, whatever the reader of
stderr does (issue 20, item 13: a cluster process stuck after SIGTERM behind its log pipe).
Real pipes, no mocks."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from server.ops.log_output import MAX_PENDING_BYTES, LogOutput
from tests.server_process import ROOT, STOP_WITHIN

LINE = b'{"event":"draining","level":"info","padding":"' + b"x" * 200 + b'"}\n'


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    try:
        yield read_end, write_end
    finally:
        os.close(read_end)
        os.close(write_end)


def _in_thread(work: LogOutput, lines: int) -> threading.Thread:
    """Write ``lines`` lines from another thread, so that a blocking write would show as
    a thread still alive rather than a hung test."""

    def run() -> None:
        for _ in range(lines):
            work.write(LINE)
            work.flush()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_reader_that_never_reads_does_not_block_the_writer(pipe: tuple[int, int]) -> None:
    _, write_end = pipe
    output = LogOutput(write_end)
    # Far more than the pipe holds (64 KiB) and than the queue keeps.
    lines = 4 * MAX_PENDING_BYTES // len(LINE)
    writer = _in_thread(output, lines)
    writer.join(30)
    assert not writer.is_alive(), "a log write blocked"
    assert output.dropped > 0
    assert output.drain(0.2) is False  # bounded: the lines cannot be written


def test_a_reader_that_is_gone_raises_nothing() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)
    output = LogOutput(write_end)
    output.write(LINE)
    assert output.drain(10) is True
    assert output.broken  # EPIPE seen once: given up for good
    writer = _in_thread(output, 1000)
    writer.join(30)
    assert not writer.is_alive()
    output.write("text lines too\n")
    os.close(write_end)


def test_lines_reach_a_reader_in_order(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    output = LogOutput(write_end)
    for i in range(50):
        output.write(f"line {i}\n")
    assert output.drain(10)
    expected = sum(len(f"line {i}\n") for i in range(50))
    received = b""
    while len(received) < expected:
        received += os.read(read_end, 65536)
    assert received.decode().splitlines() == [f"line {i}" for i in range(50)]


FORCED_EXIT = """
import threading
from server import cli
from server.ops.logging import configure_logging

configure_logging("info", "json")
cli._exit_watchdog(0.3)
threading.Event().wait()  # no event loop, nothing else will ever end this process
"""


def test_forced_exit_holds_with_no_loop_and_a_broken_log_pipe() -> None:
    """The shutdown watchdog ends the process even when the event loop is gone and its
    ``shutdown_forced`` line cannot be written (the reader of stderr is gone)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", FORCED_EXIT],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=write_end,
        )
    finally:
        os.close(write_end)
    try:
        assert proc.wait(timeout=STOP_WITHIN) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
