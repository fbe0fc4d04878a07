"""Where a SIP request goes: transport, host, port (RFC 3263), and what leaves the agent.

The user agent never resolves names and never opens sockets. The runtime (or its DNS
layer) turns a trunk into an ordered tuple of `Target`s; the agent tries them in order,
falls over on transport error, 503 or silence, and hands every message out as an
`Outgoing` that names the transport, so the runtime knows which socket to use.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

TRANSPORTS = ("udp", "tcp", "tls")
DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}


@dataclass(frozen=True)
class Target:
    """One resolved next hop; `server_name` is the TLS SNI / certificate name to check."""

    transport: str
    host: str
    port: int
    server_name: str | None = None

    def __post_init__(self) -> None:
        if self.transport not in TRANSPORTS:
            raise ValueError(f"unknown SIP transport {self.transport!r}")

    @property
    def addr(self) -> tuple[str, int]:
        """(host, port), the key the transport layer reports errors with."""
        return (self.host, self.port)

    @property
    def reliable(self) -> bool:
        """TCP and TLS: no retransmissions, zero-length wait timers (RFC 3261 17)."""
        return self.transport != "udp"


@dataclass(frozen=True)
class Outgoing:
    """One whole SIP message for the runtime to send over `transport` to `dest`."""

    data: bytes
    dest: tuple[str, int]
    transport: str = "udp"
    server_name: str | None = None


def as_targets(dest: tuple[str, int] | Sequence[Target], transport: str = "udp") -> list[Target]:
    """Normalise what callers pass as a destination: an address or a list of targets."""
    if isinstance(dest, tuple) and len(dest) == 2 and isinstance(dest[0], str):
        host, port = dest
        assert isinstance(port, int)
        return [Target(transport, host, port)]
    out = [t for t in dest if isinstance(t, Target)]
    if not out:
        raise ValueError("no SIP target given")
    return out


class TargetSet:
    """Ordered targets with a sticky 'current' index: the last one that answered.

    `start()` says where a new request begins, `advance()` moves past a failed target,
    `succeeded()` makes a target sticky, `prefer_again()` returns to the first (preferred)
    target once it is known to be back (a probe answered or a refresh is due).
    """

    def __init__(self, targets: Sequence[Target]) -> None:
        if not targets:
            raise ValueError("a target set needs at least one target")
        self.targets: tuple[Target, ...] = tuple(targets)
        self.sticky = 0

    def __len__(self) -> int:
        return len(self.targets)

    def start(self) -> int:
        """Index a new request starts at."""
        return self.sticky

    def next_after(self, index: int, tried: int) -> int | None:
        """The index after `index`, or None when `tried` targets already failed."""
        if tried >= len(self.targets):
            return None
        return (index + 1) % len(self.targets)

    def succeeded(self, index: int) -> None:
        """A response came from targets[index]: use it for later requests."""
        self.sticky = index

    def prefer_again(self) -> None:
        """Go back to the preferred (first) target for the next request."""
        self.sticky = 0
