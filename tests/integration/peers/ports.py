"""Loopback port allocation for test peers.

Ports come from a pool below the kernel's ephemeral range (Linux: 32768-60999) and away
from every range a peer binds by itself (the gateway's default RTP range 10000-10999, which
daemons started without `rtp_ports:` use; baresip's test RTP 20000-29999; the gateway's
test RTP 30000-35999). A port taken from the ephemeral range could be given by the kernel to any
other socket (a DNS query, a peer's RTP) between the moment a test picks it and the moment
the peer binds it; CI saw that as "Address already in use" from Kamailio and the daemon.

Ports are handed out in aligned blocks of four, so a peer may also use the next three
(baresip's TLS listener on SIP port + 1, sipp's media on -mp and -mp + 2). Each block is
reserved for the whole process with an exclusive lock on a file under the temp directory,
so parallel pytest processes (tools/dev's shards, the benches) never receive the same block;
the kernel drops the lock when the process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os
import random
import socket
import tempfile
import threading
from pathlib import Path

LOOPBACK = "127.0.0.1"

#: Where test ports come from: below the ephemeral range, above the gateway's default RTP
#: range (gateway.config.schema.DEFAULT_RTP_PORTS, 10000-10999).
POOL = range(11000, 20000)
#: Ports per block: a peer may use base .. base + 3.
BLOCK = 4

#: The gateway's RTP ranges in the integration tests (`rtp_ports:` 30000-35999); kept out
#: of the pool so the daemon never sees its SIP port inside its own RTP range.
TEST_RTP_SPAN = range(30000, 36000)

_LOCK_DIR = Path(tempfile.gettempdir()) / "branchline-test-ports"

_lock = threading.Lock()
_held: dict[int, int] = {}  # block base -> fd of its lock file


def _can_bind(port: int, kind: socket.SocketKind) -> bool:
    """Tell whether `port` is free on loopback for the given socket kind right now."""
    with socket.socket(socket.AF_INET, kind) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _lock_block(base: int) -> int | None:
    """Take the cross-process lock for the block at `base`; None if another process has it."""
    _LOCK_DIR.mkdir(mode=0o1777, exist_ok=True)
    fd = os.open(_LOCK_DIR / str(base), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _allocate() -> int:
    """Reserve a block of BLOCK ports free for both UDP and TCP and return its base."""
    bases = list(range(POOL.start, POOL.stop, BLOCK))
    start = random.randrange(len(bases))
    with _lock:
        for base in bases[start:] + bases[:start]:
            if base in _held:
                continue
            fd = _lock_block(base)
            if fd is None:
                continue
            ports = range(base, base + BLOCK)
            if all(_can_bind(p, socket.SOCK_DGRAM) and _can_bind(p, socket.SOCK_STREAM)
                   for p in ports):
                _held[base] = fd
                return base
            os.close(fd)
    raise RuntimeError(
        f"no block of {BLOCK} free UDP+TCP ports left in {POOL.start}-{POOL.stop - 1} "
        f"on {LOOPBACK}")


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (SIP listens on both)."""
    return _allocate()


def free_sip_port() -> int:
    """A SIP port whose successor is free too, because baresip puts TLS on port + 1."""
    return _allocate()


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1, e.g. for an RTP relay or a probe."""
    return _allocate()


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1, e.g. for baresip's ctrl_tcp listener."""
    return _allocate()


def release(*ports: int) -> None:
    """Give back the blocks holding `ports` so a long session can reuse them."""
    with _lock:
        for p in ports:
            fd = _held.pop(p - (p - POOL.start) % BLOCK, None)
            if fd is not None:
                os.close(fd)
