"""A burst of requests while the daemon is busy waits in the kernel's receive buffer; what
does not fit is counted in `branchline status`.

The daemon is stopped (SIGSTOP) for the burst, the way a long GC pause or a slow disk
would stall its loop, and continued afterwards.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .sip_ops import daemon_yaml, options, udp_socket

BURST = 500


def _counters(gw: GatewayProcess) -> dict[str, Any]:
    status = gw.status()
    return {"received": status["sip"].get("received", 0),
            "filtered": status["sip"].get("filtered", 0),
            "kernel_drops": status["transport"]["kernel_drops"],
            "buffer": status["transport"].get("udp_receive_buffer")}


def _stalled_burst(gw: GatewayProcess, sip_port: int, peer: socket.socket) -> tuple[int, dict[str, int]]:
    """Send BURST OPTIONS while the daemon is stopped; returns the answers and the deltas."""
    assert gw._proc is not None
    before = _counters(gw)
    dest = ("127.0.0.1", sip_port)
    src = peer.getsockname()
    datagrams = [options(f"burst-{n}@test", src, dest, branch=f"b{n}") for n in range(BURST)]
    os.kill(gw._proc.pid, signal.SIGSTOP)
    try:
        for data in datagrams:
            peer.sendto(data, dest)
    finally:
        os.kill(gw._proc.pid, signal.SIGCONT)
    answered = 0
    peer.settimeout(2.0)
    try:
        while answered < BURST:
            if peer.recv(65535).startswith(b"SIP/2.0 "):
                answered += 1
    except TimeoutError:
        pass
    time.sleep(0.2)
    after = _counters(gw)
    deltas = {k: after[k] - before[k] for k in ("received", "filtered", "kernel_drops")}
    deltas["buffer"] = after["buffer"]
    return answered, deltas


def _peer(port: int) -> socket.socket:
    peer = udp_socket(port)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    return peer


def test_burst_while_stalled_is_all_taken_in(tmp_path: Path) -> None:
    sip_port, peer_port = free_port(), free_port()
    gw = GatewayProcess(tmp_path, daemon_yaml(tmp_path, sip_port, peer_port))
    gw.start()
    peer = _peer(peer_port)
    try:
        answered, d = _stalled_burst(gw, sip_port, peer)
        print(f"\nburst of {BURST} while stalled: answered {answered}, received {d['received']}, "
              f"filtered {d['filtered']}, kernel drops {d['kernel_drops']}, "
              f"receive buffer {d['buffer']} bytes")
        assert d["buffer"] >= 1024 * 1024
        assert d["kernel_drops"] == 0
        assert d["received"] == BURST
        assert answered + d["filtered"] == BURST
    finally:
        peer.close()
        gw.stop()


def test_tiny_buffer_drops_are_counted_in_status(tmp_path: Path) -> None:
    sip_port, peer_port = free_port(), free_port()
    gw = GatewayProcess(tmp_path, daemon_yaml(tmp_path, sip_port, peer_port,
                                              extra_sip="  udp_receive_buffer: 4096\n"))
    gw.start()
    peer = _peer(peer_port)
    try:
        answered, d = _stalled_burst(gw, sip_port, peer)
        print(f"\nburst of {BURST} into a {d['buffer']}-byte buffer: answered {answered}, "
              f"received {d['received']}, kernel drops {d['kernel_drops']}")
        assert d["kernel_drops"] > 0
        assert d["received"] + d["kernel_drops"] == BURST
    finally:
        peer.close()
        gw.stop()
