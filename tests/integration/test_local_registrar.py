"""Local SIP phones register to the daemon (issue 8, the survivable registrar).

The real `branchline run` with `sip_phones` in its config; sipp and baresip register to it
with digest (the edge's replay-proof digest), `branchline status` shows the bindings, and
they are still there after the daemon restarts (state_dir/bindings.json). Refusals: a
wrong password, another user's credentials on this extension, and a captured
Authorization sent again.
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gateway.sip import auth
from gateway.sip.message import Response, parse_message

from .conftest import BaresipFactory, require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release
from .peers.sipp import Sipp, sipp_binary

pytestmark = [pytest.mark.peers, pytest.mark.slow]

PHONES = {"201": "alice-Secret-201", "202": "bob-Secret-202", "203": "carol-Secret-203"}


def gateway_config(tmp: Path, sip_port: int) -> str:
    phones = "\n".join(f'  - {{user: "{u}", password: "{p}", number: "{u}"}}'
                       for u, p in PHONES.items())
    return f"""
gateway:
  name: branch-reg
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 32000-32999
security:
  digest_algorithms: [MD5]
registrar:
  min_expires: 30
  max_expires: 3600
  default_expires: 600
  max_contacts: 3
sip_phones:
{phones}
"""


def phone_status(gw: GatewayProcess, user: str) -> dict[str, Any]:
    for phone in gw.status()["phones"]:
        if phone["user"] == user:
            return dict(phone)
    raise KeyError(user)


def run_sipp(tmp: Path, scenario: str, gw_port: int, *, service: str,
             credentials: tuple[str, str]) -> tuple[subprocess.CompletedProcess[bytes], Sipp]:
    require_binary("sipp", sipp_binary())
    port, media = free_port(), free_port()
    peer = Sipp(scenario, sip_port=port, media_port=media, tmpdir=tmp,
                remote=f"127.0.0.1:{gw_port}", service=service, auth=credentials,
                rtp_echo=False, timeout_s=10)
    try:
        # run to completion: a UAC this short exits before Sipp.start's liveness check
        run = subprocess.run(peer.argv(), cwd=peer.dir, capture_output=True, timeout=20,
                             stdin=subprocess.DEVNULL, check=False)
    finally:
        release(port, media)
    return run, peer


def resend(captured: str, gw_port: int, call_id: str) -> Response:
    """sipp's authenticated REGISTER again, as another phone would send it (new socket,
    Call-ID and Contact), keeping the captured Authorization."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(3)
        port = sock.getsockname()[1]
        lines = []
        for line in captured.replace("\r\n", "\n").strip().split("\n"):
            name = line.split(":", 1)[0].strip().lower()
            if name == "via":
                line = f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{call_id};rport"
            elif name == "call-id":
                line = f"Call-ID: {call_id}"
            elif name == "contact":
                line = f"Contact: <sip:201@127.0.0.1:{port}>"
            lines.append(line.strip())
        sock.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), ("127.0.0.1", gw_port))
        data, _ = sock.recvfrom(65535)
    resp = parse_message(data)
    assert isinstance(resp, Response)
    return resp


def test_sipp_registers_with_digest_refusals_and_the_binding_survives_a_restart(
        tmp_path: Path) -> None:
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, gateway_config(tmp_path, sip_port))
    try:
        gw.start()
        assert phone_status(gw, "201")["contacts"] == []
        run, peer = run_sipp(tmp_path, "uac_register_auth.xml", sip_port, service="201",
                             credentials=("201", PHONES["201"]))
        assert run.returncode == 0, peer.report()
        [contact] = phone_status(gw, "201")["contacts"]
        assert contact["contact"] == f"sip:201@127.0.0.1:{peer.sip_port}"
        assert contact["source"] == f"127.0.0.1:{peer.sip_port}"
        assert contact["transport"] == "udp" and 50 <= contact["expires_in"] <= 60
        [ok] = peer.received("SIP/2.0 200")
        assert f"<sip:201@127.0.0.1:{peer.sip_port}>;expires=60" in ok

        # the captured Authorization sent again (another socket and Call-ID): stale, refused
        [authed] = [m for m in peer.sent("REGISTER") if "Authorization:" in m]
        again = resend(authed, sip_port, "replayed-1")
        assert again.status == 401
        assert all(auth.Challenge.parse(v).stale
                   for v in again.headers.get_lines("WWW-Authenticate"))
        assert len(phone_status(gw, "201")["contacts"]) == 1

        # a wrong password: 403, nothing bound
        run, peer = run_sipp(tmp_path, "uac_register_auth_refused.xml", sip_port,
                             service="202", credentials=("202", "not-bobs-password"))
        assert run.returncode == 0, peer.report()
        # 203's own good password, registering 202's extension: 403
        run, peer = run_sipp(tmp_path, "uac_register_auth_refused.xml", sip_port,
                             service="202", credentials=("203", PHONES["203"]))
        assert run.returncode == 0, peer.report()
        assert phone_status(gw, "202")["contacts"] == []
        assert phone_status(gw, "203")["contacts"] == []

        gw.wait_until("the bindings file", lambda: (tmp_path / "state" / "bindings.json")
                      .exists(), timeout=5)
        gw.stop()
        saved = json.loads((tmp_path / "state" / "bindings.json").read_text())
        assert [row["user"] for row in saved["bindings"]] == ["201"]
        gw.start()
        [kept] = phone_status(gw, "201")["contacts"]
        assert kept["contact"] == contact["contact"] and kept["source"] == contact["source"]
        assert 0 < kept["expires_in"] <= contact["expires_in"]
        assert "bindings: 1 restored" in gw.log_text()
    finally:
        gw.stop()


def test_baresip_registers_to_the_box_and_status_shows_it(
        tmp_path: Path, baresip_factory: BaresipFactory) -> None:
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, gateway_config(tmp_path, sip_port))
    try:
        gw.start()
        phone = baresip_factory("alice", user="202", password=PHONES["202"],
                                registrar=f"127.0.0.1:{sip_port}", regint=120, tone=None)
        phone.wait_registered(timeout=10)
        status = phone_status(gw, "202")
        [contact] = status["contacts"]
        assert contact["source"] == f"127.0.0.1:{phone.sip_port}"
        # baresip names its contact 202-0x<pointer>@host:port
        assert contact["contact"].startswith("sip:202")
        assert contact["contact"].endswith(f"@127.0.0.1:{phone.sip_port}")
        assert 100 <= contact["expires_in"] <= 120
        assert status["number"] == "202"
        text = subprocess.run(
            [*_cli(), "status", "--control", gw.control_path], capture_output=True,
            text=True, timeout=20, check=False).stdout
        assert "Phones" in text and f"127.0.0.1:{phone.sip_port}" in text
    finally:
        gw.stop()


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "gateway.cli"]
