"""The integration tests' port pool: outside the kernel's ephemeral range, and no block
handed to two processes at once (tools/dev runs four pytest processes side by side)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.config.schema import DEFAULT_RTP_PORTS
from tests.integration.peers import ports

ROOT = Path(__file__).resolve().parents[2]

_CHILD = """
import sys
from tests.integration.peers.ports import free_port
print(" ".join(str(free_port()) for _ in range(200)), flush=True)
sys.stdin.read()
"""


def _ephemeral() -> range:
    low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    return range(int(low), int(high) + 1)


def test_ports_are_outside_the_ephemeral_range_and_not_shared_between_processes() -> None:
    child = subprocess.Popen([sys.executable, "-c", _CHILD], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        theirs = [int(p) for p in child.stdout.readline().split()]
        ours = [ports.free_port() for _ in range(200)]
    finally:
        child.communicate("")
    assert len(theirs) == 200
    blocks = lambda ps: {p - p % ports.BLOCK for p in ps}  # noqa: E731
    assert len(blocks(ours)) == 200 and len(blocks(theirs)) == 200
    assert not blocks(ours) & blocks(theirs)
    ephemeral = _ephemeral()
    first, last = (int(x) for x in DEFAULT_RTP_PORTS.split("-"))
    default_rtp = range(first, last + 1)  # daemons started without rtp_ports: bind here
    for p in ours + theirs:
        for q in range(p, p + ports.BLOCK):
            assert q not in ephemeral and q not in ports.TEST_RTP_SPAN
            assert q not in default_rtp and not 20000 <= q <= 29999  # baresip's test RTP
    ports.release(*ours)


def test_a_released_block_is_unlocked_for_the_other_processes() -> None:
    import os
    port = ports.free_port()
    assert ports._lock_block(port) is None  # held: nobody else can take it
    ports.release(port + 1)  # any port of the block gives the block back
    fd = ports._lock_block(port)
    assert fd is not None
    os.close(fd)
