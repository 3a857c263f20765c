"""The position clock's sampler: it samples while the stream brings bytes, and only now and then
while it brings none (a read-only load writes no binlog: nothing to bound)."""

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


def test_no_bytes_received_means_no_samples_after_the_first() -> None:
    server, last_data = FakeServer(), [0.0]
    clock = PositionClock(server.read_position, lambda: time.monotonic_ns() // 1000, interval=0.01,
                          activity=lambda: last_data[0], idle_interval=60).start()
    try:
        assert wait_until(lambda: server.reads == 1)
        time.sleep(0.2)  # twenty turns with nothing received
        assert server.reads == 1
        server.position = ("binlog.000001", 500)
        last_data[0] = time.monotonic()  # the stream brought the transaction ending at 500
        assert wait_until(lambda: server.reads == 2)
        assert clock.written_by(("binlog.000001", 500)) is not None
    finally:
        clock.stop()


def test_bytes_arriving_keep_every_turn() -> None:
    server = FakeServer()
    clock = PositionClock(server.read_position, lambda: time.monotonic_ns() // 1000, interval=0.01,
                          activity=time.monotonic, idle_interval=60).start()
    try:
        assert wait_until(lambda: server.reads >= 10)
    finally:
        clock.stop()


def test_an_idle_stream_is_still_sampled_every_idle_interval() -> None:
    server = FakeServer()
    clock = PositionClock(server.read_position, lambda: time.monotonic_ns() // 1000, interval=0.01,
                          activity=lambda: 0.0, idle_interval=0.1).start()
    try:
        time.sleep(0.45)
        assert 3 <= server.reads <= 6  # at 0, ~0.1, ~0.2, ~0.3, ~0.4 s, not 45 turns
    finally:
        clock.stop()
