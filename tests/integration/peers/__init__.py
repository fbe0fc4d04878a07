"""Real SIP peers (Kamailio, baresip) run as subprocesses for integration tests.

This package also holds a tiny, independent UDP SIP probe. It deliberately does not use
`gateway.sip`, so that a bug in the product's SIP code cannot hide a broken peer.
Import the peers from their modules: `from .peers.kamailio import KamailioTrunk`,
`from .peers.baresip import Baresip`.
"""

from __future__ import annotations

import secrets
import socket
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..netns import Namespace

__all__ = ["SipReply", "sip_probe"]


@dataclass(frozen=True)
class SipReply:
    """A final reply to a probe: status, reason and headers (names lower-cased)."""

    status: int
    reason: str
    headers: dict[str, list[str]] = field(default_factory=dict)
    raw: str = ""

    def header(self, name: str) -> str | None:
        """First value of a header, or None; the probe's callers mostly want one value."""
        values = self.headers.get(name.lower())
        return values[0] if values else None


def _parse_reply(data: bytes) -> SipReply | None:
    """Parse just enough of a SIP response; None for requests or garbage."""
    text = data.decode("utf-8", "replace")
    head, _, _body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    first = lines[0].split(" ", 2)
    if len(first) < 2 or not first[0].startswith("SIP/2.0") or not first[1].isdigit():
        return None
    headers: dict[str, list[str]] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers.setdefault(name.strip().lower(), []).append(value.strip())
    return SipReply(int(first[1]), first[2] if len(first) > 2 else "", headers, text)


def sip_probe(
    port: int,
    *,
    method: str = "OPTIONS",
    ruri: str | None = None,
    host: str = "127.0.0.1",
    extra_headers: dict[str, str] | None = None,
    timeout: float = 1.0,
    netns: Namespace | None = None,
) -> SipReply | None:
    """Send one out-of-dialog request over UDP and return the final reply, or None.

    Used to tell that a peer is up (it answers) and to ask Kamailio about
    registrations (custom LOCATE method, see kamailio.py). Retransmits every 0.25 s
    until `timeout`, like a shortened RFC 3261 Timer E. With `netns` the socket lives in
    that network namespace, so 127.0.0.1 is the namespace's own loopback.
    """
    if host != "127.0.0.1":
        raise ValueError(f"sip_probe host must be 127.0.0.1 (loopback only), got {host!r}")
    target = ruri or f"sip:{host}:{port}"
    new_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM) if netns is None else (
        netns.socket(socket.AF_INET, socket.SOCK_DGRAM))
    with new_socket as sock:
        sock.bind(("127.0.0.1", 0))
        local_port = sock.getsockname()[1]
        branch = "z9hG4bK" + secrets.token_hex(8)
        lines = [
            f"{method} {target} SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:{local_port};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:probe@127.0.0.1:{local_port}>;tag={secrets.token_hex(4)}",
            f"To: <{target}>",
            f"Call-ID: {secrets.token_hex(12)}@127.0.0.1",
            f"CSeq: 1 {method}",
            f"Contact: <sip:probe@127.0.0.1:{local_port}>",
        ]
        for name, value in (extra_headers or {}).items():
            lines.append(f"{name}: {value}")
        lines += ["Content-Length: 0", "", ""]
        request = "\r\n".join(lines).encode()
        deadline = time.monotonic() + timeout
        next_send = 0.0
        while True:
            now = time.monotonic()
            if now >= deadline:
                return None
            if now >= next_send:
                sock.sendto(request, (host, port))
                next_send = now + 0.25
            sock.settimeout(max(0.01, min(next_send, deadline) - now))
            try:
                data, _addr = sock.recvfrom(65535)
            except TimeoutError:
                continue
            except ConnectionRefusedError:
                # ICMP port unreachable from an earlier send: nobody listens yet.
                continue
            reply = _parse_reply(data)
            if reply is None or reply.status < 200:
                continue
            if branch not in (reply.header("via") or ""):
                continue
            return reply
