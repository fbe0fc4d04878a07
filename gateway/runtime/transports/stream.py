"""One TCP or TLS connection carrying SIP: frames the stream and feeds the agent.

The connection only moves bytes. The `StreamFramer` decides where messages end; a peer
that breaks framing is cut off. Double-CRLF pings are answered with a CRLF pong
(RFC 5626 3.5.1). The owning `TransportManager` keeps the table of connections.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.sip.framing import PONG, StreamFramer

if TYPE_CHECKING:
    from gateway.runtime.transports.manager import TransportManager

log = logging.getLogger("branchline.sip.transport")

MAX_WRITE_BUFFER = 256 * 1024
"""A peer that stops reading is disconnected rather than buffered without bound."""
MAX_PENDING = 64
"""Messages queued while a connection is still being set up."""

Address = tuple[str, int]


class StreamConnection(asyncio.Protocol):
    """A SIP flow over TCP or TLS, inbound (accepted) or outbound (we connected)."""

    def __init__(self, manager: TransportManager, transport_name: str, outbound: bool,
                 key: Address | None = None) -> None:
        self.manager = manager
        self.name = transport_name  # "tcp" | "tls"
        self.outbound = outbound
        self.key = key  # the address we dialled (outbound); peer address once connected
        self.peer: Address | None = None
        self.local: Address | None = None
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.last_activity = manager.loop.time()
        self.closed = False
        self.closed_locally = False  # we closed it (idle, framing error, shutdown)
        self.on_lost: Callable[[StreamConnection, Exception | None], None] | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = (str(peer[0]), int(peer[1])) if peer else self.key
        local = transport.get_extra_info("sockname")
        self.local = (str(local[0]), int(local[1])) if local else None
        self.last_activity = self.manager.loop.time()
        if not self.manager.accept_connection(self):
            transport.abort()
            return
        for data in self.pending:
            self._write(data)
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        self.last_activity = self.manager.loop.time()
        messages = self.framer.feed(data)
        pings = self.framer.take_pings()
        self.framer.take_pongs()
        if pings and self.transport is not None:
            self._write(PONG * pings)
        addr = self.peer or ("0.0.0.0", 0)
        trace = self.manager.trace
        for message in messages:
            if trace.active:
                trace.message("in", self.name, self.local, addr, message)
            self.manager.deliver(message, addr, self.name, self)
        if self.framer.error is not None:
            if trace.active:  # the read that broke framing, as it came
                trace.message("in", self.name, self.local, addr, data,
                              malformed=f"framing: {self.framer.error}")
            log.warning("SIP %s from %s:%s cut off: %s", self.name, addr[0], addr[1],
                        self.framer.error)
            self.manager.count("framing_errors")
            self.abort()
        if messages:
            self.manager.after_input()

    def connection_lost(self, exc: Exception | None) -> None:
        log.debug("SIP %s flow %s closed (%s)", self.name, self.peer, exc)
        self.closed = True
        self.transport = None
        self.manager.forget(self, exc)

    # -- used by the manager

    def send(self, data: bytes) -> bool:
        """Queue or write one message; False when the connection is unusable."""
        if self.closed:
            return False
        if self.transport is None:
            if len(self.pending) >= MAX_PENDING:
                return False
            self.pending.append(data)
            return True
        return self._write(data)

    def _write(self, data: bytes) -> bool:
        assert self.transport is not None
        if self.transport.is_closing():
            # The peer went away (a failed send closes the transport); asyncio would log a
            # warning for every further write, so the rest of the queue goes nowhere quietly.
            return False
        if self.transport.get_write_buffer_size() > MAX_WRITE_BUFFER:
            log.warning("SIP %s peer %s is not reading; disconnecting", self.name, self.peer)
            self.abort()
            return False
        self.transport.write(data)
        self.last_activity = self.manager.loop.time()
        if self.manager.trace.active and self.peer is not None:
            self.manager.trace.message("out", self.name, self.local, self.peer, data)
        return True

    def close(self) -> None:
        """Close after flushing what is written."""
        if self.transport is not None:
            self.transport.close()
        self.closed = self.closed_locally = True

    def abort(self) -> None:
        """Drop the connection now."""
        if self.transport is not None:
            self.transport.abort()
        self.closed = self.closed_locally = True
