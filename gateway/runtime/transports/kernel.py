"""What the kernel does with our SIP sockets: bind errors, receive buffers, dropped datagrams.

A burst of requests (a phone system coming back after a power cut, a scanner) can outrun
the event loop for a moment; the kernel then queues datagrams in the socket's receive
buffer, and drops what does not fit. The default buffer (about 200 KiB, some 160 SIP
datagrams) is too small for a gateway, so the daemon asks for more, and `status` shows the
kernel's drop counter for the socket so a loss is never silent.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from typing import Any

log = logging.getLogger("branchline.sip.transport")

#: Linux's SO_RCVBUFFORCE (not exported by the socket module): ignores net.core.rmem_max,
#: needs CAP_NET_ADMIN.
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)

_HINTS = {
    errno.EADDRINUSE: "another program (or another branchline) already listens there",
    errno.EACCES: "ports below 1024 need root or CAP_NET_BIND_SERVICE",
    errno.EADDRNOTAVAIL: "no interface of this host has that address",
}


class ListenError(OSError):
    """A SIP listener could not be opened; the message names the address and config key."""

    def __init__(self, transport: str, address: tuple[str, int], config_key: str,
                 cause: OSError) -> None:
        host = f"[{address[0]}]" if ":" in address[0] else address[0]
        reason = (os.strerror(cause.errno) if cause.errno else str(cause)).lower()
        hint = _HINTS.get(cause.errno or 0)
        text = (f"cannot listen on {transport} {host}:{address[1]} ({config_key}): {reason}"
                + (f"; {hint}" if hint else ""))
        super().__init__(cause.errno, text)
        self.transport = transport
        self.address = address
        self.config_key = config_key

    def __str__(self) -> str:
        return str(self.strerror)


def set_receive_buffer(sock: Any, size: int) -> int:
    """Ask for a `size`-byte receive buffer; returns what the kernel granted.

    Linux doubles the value asked for (the extra is its bookkeeping) and caps plain
    SO_RCVBUF at twice net.core.rmem_max. With CAP_NET_ADMIN, SO_RCVBUFFORCE passes the cap;
    without it we fall back and say how far the buffer was cut.
    """
    forced = False
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        forced = True
    except OSError:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError as exc:
            log.warning("cannot set the SIP UDP receive buffer to %d bytes: %s", size, exc)
    granted = int(sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF))
    if granted < size:
        log.warning(
            "SIP UDP receive buffer is %d bytes, not the %d asked for (sip.udp_receive_buffer): "
            "the kernel caps it at net.core.rmem_max; raise that sysctl or give the daemon "
            "CAP_NET_ADMIN", granted, size)
    else:
        log.info("SIP UDP receive buffer: %d bytes (asked %d%s; the kernel counts double)",
                 granted, size, ", forced" if forced else "")
    return granted


def udp_socket_counters(sock: Any) -> dict[str, int]:
    """``kernel_drops`` and ``udp_rx_queue`` (bytes waiting) of a UDP socket, from
    /proc/self/net/udp[6]; empty where that table does not exist."""
    try:
        inode = os.fstat(sock.fileno()).st_ino
        family = sock.family
    except (OSError, ValueError):
        return {}
    table = "/proc/self/net/udp6" if family == socket.AF_INET6 else "/proc/self/net/udp"
    return read_udp_table(table, inode)


def read_udp_table(path: str, inode: int) -> dict[str, int]:
    """The drops and receive-queue columns of the socket `inode` in a /proc UDP table."""
    try:
        with open(path, encoding="ascii", errors="replace") as table:
            next(table, None)  # column titles
            for line in table:
                fields = line.split()
                if len(fields) < 13 or fields[9] != str(inode):
                    continue
                rx_queue = int(fields[4].partition(":")[2], 16)
                return {"kernel_drops": int(fields[12]), "udp_rx_queue": rx_queue}
    except (OSError, ValueError):
        pass
    return {}
