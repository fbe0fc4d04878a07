"""Loopback port allocation for test peers.

The kernel picks the ports (bind to port 0), so parallel test runs do not collide on
hard-coded numbers. A port handed out once is remembered for the life of the process,
so two peers started in the same test never receive the same port before either of
them has bound it.
"""

from __future__ import annotations

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


def _kernel_port(kind: socket.SocketKind) -> int:
    """Ask the kernel for an unused port of the given kind on loopback."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOOPBACK, 0))
        port: int = s.getsockname()[1]
        return port


def _allocate(span: int, attempts: int = 200) -> int:
    """Find `span` consecutive ports free for both UDP and TCP and reserve them."""
    with _lock:
        for _ in range(attempts):
            base = _kernel_port(socket.SOCK_DGRAM)
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
