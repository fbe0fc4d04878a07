"""The daemon's epoll selector waits the whole milliseconds asked for, never one more."""

from __future__ import annotations

import math
import select
import socket

import pytest

from gateway.runtime.selector import PreciseEpollSelector, epoll_timeout


def c_milliseconds(seconds: float) -> int:
    """What CPython's select.epoll.poll makes of a float timeout: seconds to ns rounded up,
    then ns to ms rounded up (_PyTime_ROUND_TIMEOUT, then _PyTime_ROUND_CEILING)."""
    ns = math.ceil(seconds * 1e9)
    return -(-ns // 1_000_000)


def stdlib_seconds(timeout: float) -> float:
    """What selectors.EpollSelector hands epoll for an asyncio timeout."""
    return math.ceil(timeout * 1e3) * 1e-3


@pytest.mark.parametrize("ms", range(1, 101))
def test_a_whole_millisecond_wait_stays_that_many_milliseconds(ms: int) -> None:
    asked = ms / 1000
    # the stdlib selector's own rounding up to whole ms is kept, and nothing is added to it
    intended = math.ceil(asked * 1e3)
    assert c_milliseconds(epoll_timeout(stdlib_seconds(asked))) == intended
    assert c_milliseconds(epoll_timeout(asked)) == ms
    # and a timeout a little over a whole millisecond still rounds up to the next one
    assert c_milliseconds(epoll_timeout(asked + 0.0003)) == ms + 1


def test_the_stdlib_conversion_adds_a_millisecond_to_some_waits() -> None:
    # why the selector exists: 9, 13 and 18 ms (the audio tick's usual wait) become 10, 14, 19
    longer = [ms for ms in range(1, 21) if c_milliseconds(stdlib_seconds(ms * 1e-3)) > ms]
    assert {9, 13, 18} <= set(longer)


def test_the_selector_reports_ready_sockets_like_the_stdlib_one() -> None:
    sel = PreciseEpollSelector()
    a, b = socket.socketpair()
    try:
        sel.register(a, 1)  # EVENT_READ
        assert sel.select(0.001) == []
        b.send(b"x")
        ready = sel.select(0.5)
        assert [key.fileobj for key, _ in ready] == [a]
        sel.unregister(a)
        assert isinstance(sel._selector.poll(0), list)  # the wrapped epoll still answers
    finally:
        sel.close()
        a.close()
        b.close()
    assert select.epoll  # Linux only, as the daemon
