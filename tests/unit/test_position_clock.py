"""The position clock's sampler: it samples while the log moves or the stream brings bytes, and
only now and then otherwise (a read-only load writes no binlog: nothing to bound)."""

from __future__ import annotations

import time

from proxy.changelog.positionclock import PositionClock


class FakeServer:
    """The binlog position as SHOW MASTER STATUS would give it, and how often it was asked."""

    def __init__(self) -> None:
        self.position = ("binlog.000001", 4)
        self.reads = 0

    def read_position(self) -> tuple[str, int]:
        self.reads += 1
        return self.position


def wait_until(condition, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.005)
    return False


def test_a_still_log_and_no_bytes_received_mean_no_more_samples() -> None:
    server = FakeServer()
    clock = PositionClock(server.read_position, lambda: time.monotonic_ns() // 1000, interval=0.01,
                          wake_on_activity=True, idle_interval=60).start()
    try:
        assert wait_until(lambda: server.reads >= 1)
        time.sleep(0.2)  # twenty turns with nothing received
        assert server.reads == 2  # the first look, and one more that found the log still
        server.position = ("binlog.000001", 500)
        clock.note_activity()  # the stream brought the transaction ending at 500
        assert wait_until(lambda: server.reads >= 3)
        assert clock.written_by(("binlog.000001", 500)) is not None
        time.sleep(0.2)
        assert server.reads <= 4  # one more look finds the log still: asleep again
    finally:
        clock.stop()


def test_bytes_arriving_keep_every_turn() -> None:
    server = FakeServer()
    clock = PositionClock(server.read_position, lambda: time.monotonic_ns() // 1000, interval=0.01,
                          wake_on_activity=True, idle_interval=60).start()
    try:
        deadline = time.monotonic() + 2
        while server.reads < 10 and time.monotonic() < deadline:
            clock.note_activity()  # a busy stream: bytes on every read
            time.sleep(0.002)
        assert server.reads >= 10
    finally:
        clock.stop()


def test_bytes_arriving_during_a_sample_earn_the_next_turn() -> None:
    server = FakeServer()
    clock = PositionClock(server.read_position, lambda: time.monotonic_ns() // 1000, interval=0.01,
                          wake_on_activity=True, idle_interval=60)

    def read_while_bytes_arrive() -> tuple[str, int]:
        clock.note_activity()
        return server.read_position()

    clock.read_position = read_while_bytes_arrive
    clock.start()
    try:
        assert wait_until(lambda: server.reads >= 5)  # each sample's own bytes call the next
    finally:
        clock.stop()


def test_a_moving_log_is_sampled_every_interval_even_while_nothing_is_read() -> None:
    """The streamer may be busy elsewhere (a long store write) while the server commits: the
    commits are still bounded one interval late, not one idle_interval."""
    server = FakeServer()

    def moving_log() -> tuple[str, int]:
        server.position = (server.position[0], server.position[1] + 100)
        return server.read_position()

    clock = PositionClock(moving_log, lambda: time.monotonic_ns() // 1000, interval=0.01,
                          wake_on_activity=True, idle_interval=60).start()
    try:
        assert wait_until(lambda: server.reads >= 10)  # no note_activity at all
    finally:
        clock.stop()


def test_without_activity_notices_it_samples_every_interval() -> None:
    server = FakeServer()
    clock = PositionClock(server.read_position, lambda: time.monotonic_ns() // 1000,
                          interval=0.01).start()
    try:
        assert wait_until(lambda: server.reads >= 10)
    finally:
        clock.stop()


def test_stop_wakes_an_idle_sampler_at_once() -> None:
    clock = PositionClock(FakeServer().read_position, lambda: time.monotonic_ns() // 1000,
                          interval=0.01, wake_on_activity=True, idle_interval=60).start()
    time.sleep(0.05)
    started = time.monotonic()
    clock.stop()
    assert time.monotonic() - started < 1  # not the 5 s join timeout: the thread woke


def test_an_idle_stream_is_still_sampled_every_idle_interval() -> None:
    server = FakeServer()
    clock = PositionClock(server.read_position, lambda: time.monotonic_ns() // 1000, interval=0.01,
                          wake_on_activity=True, idle_interval=0.1).start()
    try:
        time.sleep(0.45)
        assert 3 <= server.reads <= 6  # at 0, ~0.1, ~0.2, ~0.3, ~0.4 s, not 45 turns
    finally:
        clock.stop()
