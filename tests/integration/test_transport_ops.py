"""What an operator sees when the transports meet trouble: a busy port, a TCP client that
goes away with replies queued."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

from .gateway_proc import GatewayProcess
from .peers.ports import free_port
from .sip_ops import daemon_yaml, options


def _run_until_exit(config: Path, control: str, timeout: float = 20.0) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "run", "--config", str(config),
         "--control", control],
        capture_output=True, text=True, timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_busy_udp_port_names_the_address_and_config_key(tmp_path: Path) -> None:
    sip_port, peer_port = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(daemon_yaml(tmp_path, sip_port, peer_port))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind(("127.0.0.1", sip_port))
        code, output = _run_until_exit(config, str(tmp_path / "c.sock"))
    assert code != 0, output
    assert f"cannot listen on udp 127.0.0.1:{sip_port} (sip.listen)" in output, output
    assert "address already in use" in output.lower(), output
    assert "Traceback" not in output, output
    assert "[Errno" not in output, output


def test_busy_tcp_port_names_sip_tcp_listen(tmp_path: Path) -> None:
    sip_port, peer_port = free_port(), free_port()
    config = tmp_path / "gw.yaml"
    config.write_text(daemon_yaml(tmp_path, sip_port, peer_port, tcp=True))
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", sip_port))
        squatter.listen()
        code, output = _run_until_exit(config, str(tmp_path / "c.sock"))
    assert code != 0, output
    assert f"cannot listen on tcp 127.0.0.1:{sip_port} (sip.tcp_listen)" in output, output
    assert "Traceback" not in output, output


def test_tcp_client_gone_with_replies_queued_is_one_quiet_line(tmp_path: Path) -> None:
    sip_port, peer_port = free_port(), free_port()
    gw = GatewayProcess(tmp_path, daemon_yaml(tmp_path, sip_port, peer_port, tcp=True))
    gw.start()
    try:
        before = gw.status()["sip"].get("received", 0)
        client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        client.connect(("127.0.0.1", sip_port))
        src = client.getsockname()
        burst = b"".join(
            options(f"gone-{n}@test", src, ("127.0.0.1", sip_port), branch=f"g{n}",
                    transport="TCP")
            for n in range(300)
        )
        client.sendall(burst)
        client.close()  # never reads a reply
        gw.wait_until("the burst to be taken in",
                      lambda: gw.status()["sip"].get("received", 0) - before >= 300)
        time.sleep(0.5)  # let the failed writes and the close play out
        assert gw.running
        log = gw.log_text()
        assert "socket.send() raised exception" not in log
        about = [line for line in log.splitlines()
                 # the flow as the log writes it: the bare port number also matched the
                 # receive buffer's size once ("48576" in "asked 1048576")
                 if f"({src[0]!r}, {src[1]})" in line and "branchline.sip.transport" in line]
        assert len(about) <= 1, about
        warnings = [line for line in log.splitlines() if " WARNING " in line]
        assert not warnings, warnings
    finally:
        gw.stop()
