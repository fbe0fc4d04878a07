"""Loopback port allocation for test peers.

Ports are drawn at random from a span outside the kernel's ephemeral range and checked
free, so parallel test runs do not collide on hard-coded numbers and no other socket's
ephemeral port lands on one. A port handed out once is remembered for the life of the process,
so two peers started in the same test never receive the same port before either of
them has bound it.
"""

from __future__ import annotations

import random
import socket
import threading

LOOPBACK = "127.0.0.1"

#: The gateway's RTP ranges in the integration tests (`rtp_ports:` 30000-35999). Linux hands
#: out ephemeral ports from 32768, so a SIP port taken from the kernel could land inside one
#: of them, and the daemon rightly refuses a config whose RTP range holds its SIP port.
TEST_RTP_SPAN = range(30000, 36000)

_lock = threading.Lock()
_handed_out: set[int] = set()


def _can_bind(port: int, kind: socket.SocketKind) -> bool:
    """Tell whether `port` is free on loopback for the given socket kind right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


#: Where test ports come from: above the kernel's ephemeral range (32768-60999 here), clear
#: of the test baresips' RTP (20000-29999) and the gateway's (30000-35999). A port taken
#: from the ephemeral range could be
#: handed to any other socket (a DNS query's source port, a peer's RTP) between the test
#: choosing it and the daemon binding it: CI saw "address already in use" on a SIP port
#: while the daemon spent 6 s on DNS at start with three other test processes running.
TEST_PORT_SPAN = range(61000, 65536)

_random = random.SystemRandom()


def _allocate(span: int, attempts: int = 200) -> int:
    """Find `span` consecutive ports free for both UDP and TCP and reserve them."""
    with _lock:
        for _ in range(attempts):
            base = _random.randrange(TEST_PORT_SPAN.start, TEST_PORT_SPAN.stop - span)
            ports = range(base, base + span)
            if base + span - 1 > 65535 or any(p in _handed_out or p in TEST_RTP_SPAN
                                              for p in ports):
                continue
            if all(
                _can_bind(p, socket.SOCK_DGRAM) and _can_bind(p, socket.SOCK_STREAM)
                for p in ports
            ):
                _handed_out.update(ports)
                return base
    raise RuntimeError(f"no {span} consecutive free UDP+TCP ports found on {LOOPBACK}")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    return _allocate(1)


def free_sip_port() -> int:
    """A SIP port whose successor is free too, because baresip puts TLS on port + 1."""
    return _allocate(2)


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1, e.g. for an RTP relay or a probe."""
    return free_port()


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1, e.g. for baresip's ctrl_tcp listener."""
    return free_port()


def release(*ports: int) -> None:
    """Forget ports that are no longer needed so a long session can reuse them."""
    with _lock:
        for p in ports:
            _handed_out.discard(p)
