"""The WAN is down: a trunk known only by name never gets a datagram sent to that name.

Issue 6, item 3. The registrar `down.test` is looked up through a loopback DNS server
that is bound but never answers. The old daemon fell back to the bare name for the REGISTER
and the INVITE, and `socket.sendto` resolved it with the system resolver inside the call,
on the event loop: with the WAN down that stalls every line's audio. Now nothing is sent
until DNS answers: the registration says why, a call toward the trunk fails at once with
503 (one 'ended' log line) and the handset hears reorder, while a line-to-line call keeps
its audio and the control socket answers throughout.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from .audio import write_tone_wav
from .dns_server import DnsTestServer
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release
from .test_first_call import wav_tone

pytestmark = pytest.mark.slow

HOST = "down.test"


def gateway_config(tmp: Path, sip_port: int, dns: tuple[str, int]) -> str:
    return f"""
gateway:
  name: dns-down-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
  dns_servers: ["{dns[0]}:{dns[1]}"]
trunks:
  - name: main
    registrar: {HOST}
lines:
  - name: "1"
    backend: sim
    number: "101"
    trunk: {{name: main, username: gw, password: gw-secret}}
  - name: "2"
    backend: sim
    number: "102"
  - name: "3"
    backend: sim
    number: "103"
dialplan:
  digit_map: "(1xx|[2-9]xxx)"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
    - pattern: "\\\\d+"
      to: trunk:main
"""


def test_nothing_is_sent_to_an_unresolved_trunk_name_and_local_audio_keeps_flowing(
        tmp_path: Path) -> None:
    dns = DnsTestServer({})
    dns.silent = True  # running, but every query times out
    dns.start()
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, gateway_config(tmp_path, sip_port, dns.address))
    try:
        gw.start(timeout=40.0)
        [reg] = gw.status()["registrations"]
        gw.wait_until("the DNS reason", lambda: "DNS lookup failed" in str(
            gw.status()["registrations"][0]["reason"]), timeout=15)

        # A line-to-line call with a tone in each direction.
        gw.phone("2", "offhook")
        gw.wait_hears("2", "dial")
        gw.phone("2", "dial", digits="103")
        gw.wait_until("line 3 rings", lambda: gw.line("3")["state"] == "ringing")
        gw.phone("3", "offhook")
        gw.wait_until("connected", lambda: gw.line("2")["state"] == gw.line("3")["state"]
                      == "connected")
        gw.phone("2", "play", path=str(write_tone_wav(tmp_path / "a.wav", 440.0, -12.0)))
        time.sleep(0.3)

        # Meanwhile line 1 calls out through the trunk whose name has no address.
        gw.phone("3", "record", path=str(tmp_path / "at3.wav"), seconds=1.5)
        gw.phone("1", "offhook")
        gw.wait_hears("1", "dial")
        gw.phone("1", "dial", digits="5551")
        gw.wait_hears("1", "reorder", timeout=5)
        status = gw.status()  # the control socket answers
        assert status["registrations"][0]["registered"] is False
        assert "DNS lookup failed" in str(status["registrations"][0]["reason"])
        time.sleep(1.5)
        hz, db = wav_tone(tmp_path / "at3.wav")
        assert abs(hz - 440.0) <= 0.02 * 440.0 and abs(db + 12.0) <= 3.0, (hz, db)

        log = gw.log_text()
        ended = [line for line in log.splitlines() if "(line 1) ended:" in line]
        health = gw.status()["trunks"][0]["health"]
        if health["state"] == "down":
            # Trunk health (issue 8) marked the trunk DOWN for having no address before the
            # call: the route had no target left, so it was refused before any attempt.
            assert "no address" in health["last_transition"]["cause"], health
            assert ended == [], ended
        else:
            assert len(ended) == 1 and "503" in ended[0] and HOST in ended[0], ended
        # Never a datagram (nor a connection) toward the bare name.
        assert not re.search(rf"SIP send to {re.escape(HOST)}", log), log[-3000:]
        transport = gw.status()["transport"]
        assert transport["sent"] == 0, transport  # no address anywhere: nothing to send
        assert transport.get("send_failures", 0) == 0, transport
        assert transport.get("unresolved_dest", 0) == 0, transport
        assert reg["account"] == "1"
        gw.phone("1", "onhook")
        gw.phone("2", "onhook")
        gw.phone("3", "onhook")
    finally:
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])
        dns.stop()
        release(sip_port)
