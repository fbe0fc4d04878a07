"""The daemon's event loop selector: epoll, with waits that end on the millisecond asked for.

asyncio hands epoll a timeout in seconds; `selectors.EpollSelector` rounds it up to whole
milliseconds as `ceil(t * 1e3) * 1e-3`, and `select.epoll.poll` converts that float again,
rounding up to nanoseconds and then to milliseconds. For some values the float product lands
a hair above the whole millisecond (18 * 1e-3 == 0.018000000000000002), and the second
rounding adds a full millisecond: a wait of 18 ms lasts 19 (also 9 and 13 ms, and more above
20). The audio tick waits about 18 ms every 20 ms, so on this host 40 % of its timers woke a
millisecond late, which the clock's lead then had to cover with a longer blocking sleep.

`PreciseEpollSelector` passes epoll a timeout just under the whole number of milliseconds,
so the conversion lands on that number; it is otherwise the stdlib's selector.
"""

from __future__ import annotations

import math
import select
import selectors
from typing import Any


def epoll_timeout(timeout: float) -> float:
    """The float to give `select.epoll.poll` so that it waits ceil(timeout) whole ms."""
    if timeout <= 0:
        return timeout
    ms = math.ceil(timeout * 1e3 - 1e-6)  # 0.018000000000000002 s is 18 ms, not 19
    return (ms - 1e-4) / 1e3 if ms > 0 else 0.0


class _Epoll:
    """`select.epoll` with poll()'s timeout mended; everything else passes through."""

    def __init__(self, epoll: select.epoll) -> None:
        self._epoll = epoll

    def poll(self, timeout: float | None = None, maxevents: int = -1) -> list[tuple[int, int]]:
        if timeout is not None and timeout > 0:
            timeout = epoll_timeout(timeout)
        return self._epoll.poll(timeout, maxevents)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._epoll, name)


class PreciseEpollSelector(selectors.EpollSelector):
    """An EpollSelector whose waits are not a millisecond too long (see the module)."""

    def __init__(self) -> None:
        super().__init__()
        self._selector: Any = _Epoll(self._selector)
