"""The asyncio UDP adapter for the pure SIP user agent.

It only moves bytes: datagrams in go to `UserAgent.receive_datagram`, and whatever the
user agent wants sent goes out. The owner calls `flush()` after driving the agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gateway.sip.ua import UserAgent

log = logging.getLogger("branchline.sip")


class SipUdpTransport(asyncio.DatagramProtocol):
    """Feeds datagrams to the user agent and reports ICMP errors as transport errors."""

    def __init__(self, ua: UserAgent, loop: asyncio.AbstractEventLoop,
                 after_input: Callable[[], None]) -> None:
        self.ua = ua
        self.loop = loop
        self.after_input = after_input
        self.transport: asyncio.DatagramTransport | None = None
        self._last_dest: tuple[str, int] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            self.ua.receive_datagram(data, (addr[0], addr[1]), self.loop.time())
        except Exception:  # the agent promises not to raise; never let one packet kill the loop
            log.exception("SIP input from %s:%s raised", addr[0], addr[1])
        self.after_input()

    def error_received(self, exc: Exception) -> None:
        # On Linux an ICMP port-unreachable for a datagram we sent comes back here.
        if self._last_dest is not None:
            self.ua.transport_error(self._last_dest, self.loop.time())
            self.after_input()

    def flush(self) -> None:
        """Send everything the user agent has queued."""
        if self.transport is None:
            return
        for data, dest in self.ua.datagrams_to_send():
            self._last_dest = dest
            try:
                self.transport.sendto(data, dest)
            except OSError as exc:
                log.warning("SIP send to %s:%s failed: %s", dest[0], dest[1], exc)
                self.ua.transport_error(dest, self.loop.time())

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
