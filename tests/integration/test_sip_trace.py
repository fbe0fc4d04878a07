"""`branchline trace`: the daemon shows every SIP message live, with credentials redacted,
filtered by Call-ID or address, and the same trace goes to the debug log when switched on."""

from __future__ import annotations

from pathlib import Path

from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .sip_ops import TraceWatch, daemon_yaml, options, udp_socket

SECRET = "5f4dcc3b5aa765d61d8327deb882cf99"  # the digest response: must never be shown
AUTH = (f'Authorization: Digest username="alice", realm="ops-gw", nonce="abc123", '
        f'uri="sip:127.0.0.1", response="{SECRET}", algorithm=MD5\r\n')


def test_trace_streams_redacted_messages_filtered_by_call_id(tmp_path: Path) -> None:
    sip_port, peer_port = free_port(), free_port()
    gw = GatewayProcess(tmp_path, daemon_yaml(tmp_path, sip_port, peer_port))
    gw.start()
    peer = udp_socket(peer_port)
    watchers: list[TraceWatch] = []
    try:
        assert gw.status()["sip_trace"]["log"] is False
        assert gw.request("trace", action="on")["log"] is True
        wanted = TraceWatch(gw.control_path, "--call-id", "trace-a@test")
        other = TraceWatch(gw.control_path, "--call-id", "trace-b@test")
        by_addr = TraceWatch(gw.control_path, "--address", f"127.0.0.1:{peer_port}")
        watchers += [wanted, other, by_addr]
        gw.wait_until("three trace watchers",
                      lambda: gw.status()["sip_trace"]["watchers"] == 3)

        dest = ("127.0.0.1", sip_port)
        src = ("127.0.0.1", peer_port)
        peer.sendto(options("trace-a@test", src, dest, branch="a1", extra=AUTH), dest)
        assert peer.recv(65535).startswith(b"SIP/2.0 200")
        peer.sendto(options("trace-b@test", src, dest, branch="b1"), dest)
        assert peer.recv(65535).startswith(b"SIP/2.0 200")
        # Malformed (no Via, From, To...) but carrying a credential: traced, marked, redacted.
        peer.sendto(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: trace-b@test\r\n"
                    + AUTH.encode() + b"\r\n", dest)

        got_in = wanted.read_until(lambda r: r.get("direction") == "in")
        assert got_in["call_id"] == "trace-a@test"
        assert got_in["transport"] == "udp"
        assert got_in["remote"] == f"127.0.0.1:{peer_port}"
        assert got_in["local"] == f"127.0.0.1:{sip_port}"
        assert got_in["malformed"] is None
        assert "Authorization: Digest" in got_in["text"]
        assert 'username="alice"' in got_in["text"]
        assert "<redacted>" in got_in["text"]
        assert SECRET not in got_in["text"] and "abc123" not in got_in["text"]
        got_out = wanted.read_until(lambda r: r.get("direction") == "out")
        assert got_out["text"].startswith("SIP/2.0 200")
        assert got_out["remote"] == f"127.0.0.1:{peer_port}"

        # The Call-ID filter keeps trace-a out of the other watcher: its first record is b's.
        first_other = other.read_until(lambda r: True)
        assert first_other["call_id"] == "trace-b@test"
        bad = other.read_until(lambda r: bool(r.get("malformed")))
        assert SECRET not in bad["text"] and "<redacted>" in bad["text"]
        assert all(r.get("call_id") != "trace-a@test" for r in other.records)

        # The address filter sees all of it.
        by_addr.read_until(lambda r: bool(r.get("malformed")))
        assert {r.get("call_id") for r in by_addr.records} == {"trace-a@test", "trace-b@test"}

        for watcher in watchers:
            assert watcher.stop() == 0
        gw.wait_until("watchers gone", lambda: gw.status()["sip_trace"]["watchers"] == 0)
        log = gw.log_text()
        assert "IN UDP" in log and "Call-ID: trace-a@test" in log
        assert SECRET not in log
        gw.request("trace", action="off")
    finally:
        for watcher in watchers:
            watcher.stop()
        peer.close()
        gw.stop()
