"""The asyncio UDP adapter for one call's MediaStream: it moves datagrams and nothing else.

A call binds an even port for RTP and the odd one above it for RTCP (RFC 3550 §11). The
daemon's 20 ms audio tick calls :meth:`RtpEndpoint.tick`, which sends the RTP that is due,
the stream's RTCP report when that is due, and reports digit timeouts: one media path, the
same one the tests drive.
"""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from typing import Any

from gateway.media.rtp import is_rtcp
from gateway.media.stream import MediaEvent, MediaStream

log = logging.getLogger("branchline.rtp")

_PORT_TAKEN = (errno.EADDRINUSE, errno.EACCES)

#: Where the next search of each (host, first, last) range starts: just after the port the
#: last search handed out. Scanning from the bottom every time made each new call try every
#: port still held by a live call (about 18 failed binds per call with 1,000 phones, the
#: largest cost the registrar bench found in the media setup); from the cursor, ports are
#: handed out round-robin and a search usually binds the first port it tries.
_cursors: dict[tuple[str, int, int], int] = {}


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint, rtcp: bool = False) -> None:
        self.endpoint = endpoint
        self.rtcp = rtcp

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if self.rtcp and not is_rtcp(data):
            self.endpoint.not_rtcp += 1  # RTP or noise on the RTCP port: not ours to play
            return
        self.endpoint._received(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable for something we sent: the peer is not listening (yet)
        self.endpoint.send_errors += 1
        log.debug("RTP port %s: %s", self.endpoint.port, exc)


class RtpEndpoint:
    """A bound RTP port; datagrams go to the attached stream, its events to `on_event`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._transport: asyncio.DatagramTransport | None = None
        self._rtcp_transport: asyncio.DatagramTransport | None = None
        self.port = 0
        self.stream: MediaStream | None = None
        self.on_event: Callable[[MediaEvent], None] | None = None
        self.send_errors = 0
        self.unattached = 0  # datagrams that arrived before a stream was attached
        self.not_rtcp = 0  # datagrams on the RTCP port that were not RTCP

    @classmethod
    async def open(cls, host: str, port_range: tuple[int, int]) -> RtpEndpoint:
        """Bind the first free even UDP port in `port_range` (inclusive) on `host` for RTP,
        and the port above it for RTCP; both must be free and in the range."""
        first, last = port_range
        if first > last:
            raise ValueError(f"RTP port range {first}-{last} is empty")
        loop = asyncio.get_running_loop()
        endpoint = cls(loop)
        ports = range(first + (first % 2), last, 2)
        key = (host, first, last)
        start = _cursors.get(key, ports.start)
        at = (start - ports.start) // 2 if start in ports else 0
        for port in [*ports[at:], *ports[:at]]:
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _RtpProtocol(endpoint), local_addr=(host, port)
                )
            except OSError as exc:
                if exc.errno in _PORT_TAKEN:
                    continue
                raise
            try:
                rtcp, _ = await loop.create_datagram_endpoint(
                    lambda: _RtpProtocol(endpoint, rtcp=True), local_addr=(host, port + 1)
                )
            except OSError as exc:
                transport.close()
                if exc.errno in _PORT_TAKEN:
                    continue
                raise
            endpoint._transport = transport
            endpoint._rtcp_transport = rtcp
            endpoint.port = port
            _cursors[key] = port + 2
            return endpoint
        raise OSError(errno.EADDRINUSE,
                      f"no free even UDP port (with the RTCP port above it) for RTP in "
                      f"{first}-{last} on {host}")

    @property
    def rtcp_port(self) -> int:
        """Our RTCP port: the one above the RTP port."""
        return self.port + 1

    def attach(self, stream: MediaStream) -> None:
        """Deliver received datagrams to `stream` and send to its (latched) remote address."""
        self.stream = stream

    def send(self, packets: list[bytes]) -> None:
        """Send datagrams to the stream's current remote address."""
        if self._transport is None or self.stream is None:
            return
        dest = self.stream.remote_addr
        for data in packets:
            try:
                self._transport.sendto(data, dest)
            except OSError as exc:
                self.send_errors += 1
                log.debug("RTP send to %s:%s failed: %s", dest[0], dest[1], exc)

    def send_rtcp(self, rtcp: bytes) -> bool:
        """Send one plain RTCP packet, as SRTCP when the call is secure.

        False when nothing went out: no stream, or SRTCP could not protect it (plain RTCP
        must never leak onto a secure call).
        """
        if self.stream is None:
            return False
        packet = self.stream.protect_rtcp(rtcp)
        if packet is None:
            return False
        return self._send_rtcp(packet)

    def _send_rtcp(self, packet: bytes) -> bool:
        """A ready (protected) RTCP datagram to the peer's RTCP address, from our RTCP port."""
        assert self.stream is not None
        transport = self._transport if self.stream.rtcp_mux else self._rtcp_transport
        if transport is None:
            return False
        dest = self.stream.rtcp_addr
        try:
            transport.sendto(packet, dest)
        except OSError as exc:
            self.send_errors += 1
            log.debug("RTCP send to %s:%s failed: %s", dest[0], dest[1], exc)
            return False
        return True

    def tick(self, now: float) -> None:
        """One audio tick: send the RTP and RTCP that are due, and report digit timeouts."""
        self.send_rtp(now)
        self.after_rtp(now)

    def send_rtp(self, now: float) -> None:
        """Only the RTP that is due: the bridge's send pass does this for every call first."""
        stream = self.stream
        if stream is not None:
            self.send(stream.send_due(now))

    def after_rtp(self, now: float) -> None:
        """The rest of a tick, once every call's RTP is out: RTCP and digit timeouts."""
        stream = self.stream
        if stream is None:
            return
        report = stream.rtcp_due(now)
        if report is not None:
            self._send_rtcp(report)
        self._deliver(stream.poll(now))

    def send_bye(self, now: float, reason: str = "") -> None:
        """A last RTCP report ending in BYE (RFC 3550 §6.6), before the call's ports close."""
        if self.stream is not None:
            packet = self.stream.rtcp_bye(now, reason)
            if packet is not None:
                self._send_rtcp(packet)

    def close(self) -> None:
        """Release both ports; the stream stays usable for its final statistics."""
        for transport in (self._transport, self._rtcp_transport):
            if transport is not None:
                transport.close()
        self._transport = None
        self._rtcp_transport = None

    def _received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.stream is None:
            self.unattached += 1
            return
        self._deliver(self.stream.receive(data, addr, self._loop.time()))

    def _deliver(self, events: list[MediaEvent]) -> None:
        if self.on_event is None:
            return
        for event in events:
            try:
                self.on_event(event)
            except Exception:  # one bad handler must not stop the media path
                log.exception("RTP event handler failed on %r", event)
