"""The asyncio UDP adapter for one call's MediaStream: it moves datagrams and nothing else."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import Callable
from typing import Any

from gateway.media.stream import MediaEvent, MediaStream

log = logging.getLogger("branchline.rtp")

_PORT_TAKEN = (errno.EADDRINUSE, errno.EACCES)


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, endpoint: RtpEndpoint) -> None:
        self.endpoint = endpoint

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
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
        self.port = 0
        self.stream: MediaStream | None = None
        self.on_event: Callable[[MediaEvent], None] | None = None
        self.send_errors = 0
        self.unattached = 0  # datagrams that arrived before a stream was attached

    @classmethod
    async def open(cls, host: str, port_range: tuple[int, int]) -> RtpEndpoint:
        """Bind the first free even UDP port in `port_range` (inclusive) on `host`."""
        first, last = port_range
        if first > last:
            raise ValueError(f"RTP port range {first}-{last} is empty")
        loop = asyncio.get_running_loop()
        endpoint = cls(loop)
        for port in range(first + (first % 2), last + 1, 2):
            try:
                transport, _ = await loop.create_datagram_endpoint(
                    lambda: _RtpProtocol(endpoint), local_addr=(host, port)
                )
            except OSError as exc:
                if exc.errno in _PORT_TAKEN:
                    continue
                raise
            endpoint._transport = transport
            endpoint.port = port
            return endpoint
        raise OSError(errno.EADDRINUSE, f"no free even UDP port for RTP in {first}-{last} on {host}")

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
        """Send one RTCP packet on the RTP port (rtcp-mux), as SRTCP when the call is secure.

        False when nothing went out: no stream, or SRTCP could not protect it (plain RTCP
        must never leak onto a secure call).
        """
        if self.stream is None:
            return False
        packet = self.stream.protect_rtcp(rtcp)
        if packet is None:
            return False
        self.send([packet])
        return True

    def tick(self, now: float) -> None:
        """One audio tick for a clock callback: send what is due and report digit timeouts."""
        if self.stream is None:
            return
        self.send(self.stream.send_due(now))
        self._deliver(self.stream.poll(now))

    def close(self) -> None:
        """Release the port; the stream stays usable for its final statistics."""
        if self._transport is not None:
            self._transport.close()
            self._transport = None

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
