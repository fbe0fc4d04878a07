"""SMS through the real daemon and the modem emulator (issue 7, must-hold 1, SMS scenarios).

The daemon (`branchline run`) opens the emulated EC25 over its pty like a real module; the
network side is scripted on the emulator. Checked here:

- a 3-part SMS delivered out of order reaches a SIP MESSAGE endpoint (sipp) whole, and the
  SIM copies are deleted only after the queue stored it (the emulator's command log);
- an SMS received while the webhook is down is stored, survives a restart of the daemon,
  and is POSTed once the webhook is back;
- an SMS that arrives during a GSM call is delivered after the call ends.
"""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from hal.sim.modem import ModemEmulator

from .conftest import require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, release
from .peers.sipp import Sipp, SippError, sipp_binary

IMEI = "867698041234567"
SENDER = "+41791234567"
LONG = ("Grüezi! Diese SMS kommt in drei Teilen und in falscher Reihenfolge an; der "
        "Empfänger soll sie trotzdem am Stück lesen: äöü ÄÖÜ ß. " * 3).strip()


@pytest.fixture
def emu() -> Iterator[ModemEmulator]:
    e = ModemEmulator("ec25", imei=IMEI).start()
    try:
        yield e
    finally:
        e.stop()


def _config(tmp_path: Path, emu: ModemEmulator, sip_port: int, sms: str,
            extra: str = "") -> str:
    return f"""
gateway:
  name: gsm-gw
  state_dir: {tmp_path / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
lines:
  - name: "1"
    backend: sim
    number: "101"
gsm_groups:
  - name: mobile
{extra}
modems:
  - name: lte1
    profile: quectel-ec25
    port: {emu.at_path}
    audio: {{type: serial-pcm, pcm_port: {emu.pcm_path}}}
    number: "+41790000000"
    group: mobile
    sms: {{{sms}}}
"""


def _wait(what: str, check: Callable[[], Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _commands(emu: ModemEmulator) -> list[str]:
    lines = re.split(r"[\r\n\x1a]+", bytes(emu.at_log).decode("latin-1"))
    return [ln.strip() for ln in lines if ln.strip().upper().startswith("AT")]


def _sms_ready(emu: ModemEmulator) -> bool:
    """The daemon's SMS side has read the SIM once (so +CNMI is set)."""
    return any(c.startswith("AT+CMGL=4") for c in _commands(emu))


def _stored(db: Path) -> list[tuple[str, str, int]]:
    if not db.exists():
        return []
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return conn.execute("SELECT originator, text, parts FROM messages").fetchall()


def test_three_part_sms_out_of_order_reaches_the_sip_message_endpoint_whole(
        tmp_path: Path, emu: ModemEmulator) -> None:
    require_binary("sipp", sipp_binary())
    sip_port, sipp_port, media_port = free_port(), free_port(), free_port()
    sipp = Sipp("uas_message.xml", sip_port=sipp_port, media_port=media_port, tmpdir=tmp_path,
                rtp_echo=False, timeout_s=20)
    gw = GatewayProcess(tmp_path, _config(tmp_path, emu, sip_port,
                                          f"to_sip: 'sip:bob@127.0.0.1:{sipp_port}'"))
    try:
        sipp.start()
        gw.start()
        _wait("the daemon's SMS setup", lambda: _sms_ready(emu), 15)
        slots = emu.deliver_sms(SENDER, LONG, order=[2, 0, 1])
        assert len(slots) == 3
        assert sipp.wait(15) == 0, (sipp.report(), gw.log_text())
        (msg,) = sipp.received("MESSAGE")
        head, _, body = msg.partition("\n\n")
        assert body.rstrip("\n") == LONG
        assert re.search(rf"^From: <sip:{re.escape(SENDER)}@", head, re.M), head
        _wait("SIM emptied", lambda: not emu.core.stores["SM"], 5)
        cmds = _commands(emu)
        reads = [i for i, c in enumerate(cmds) if c.startswith("AT+CMGR=")]
        deletes = [i for i, c in enumerate(cmds) if c.startswith("AT+CMGD=")]
        # every part read before any slot was freed: the message was stored whole first
        assert len(reads) == 3 and len(deletes) == 3 and max(reads) < min(deletes), cmds
        assert "stored as sms" in gw.log_text()
    finally:
        gw.stop()
        sipp.stop()
        release(sip_port, sipp_port, media_port)


class _Webhook:
    """An HTTP endpoint that records each POST body and answers 200."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.posts: list[dict[str, Any]] = []
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> None:
        posts = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", "0"))
                posts.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.mark.slow
def test_sms_received_while_the_webhook_is_down_is_delivered_after_a_restart(
        tmp_path: Path, emu: ModemEmulator) -> None:
    sip_port, hook_port = free_port(), free_port()
    hook = _Webhook(hook_port)
    gw = GatewayProcess(tmp_path, _config(tmp_path, emu, sip_port,
                                          f"webhook: 'http://127.0.0.1:{hook_port}/sms'"))
    db = tmp_path / "state" / "sms.db"
    try:
        gw.start()
        _wait("the daemon's SMS setup", lambda: _sms_ready(emu), 15)
        emu.deliver_sms(SENDER, "while the webhook is down")
        _wait("stored and deleted from the SIM", lambda: _stored(db) and
              not emu.core.stores["SM"], 10)
        _wait("a refused attempt", lambda: "failed (ConnectionRefusedError" in gw.log_text(), 10)
        assert gw.stop() == 0
        assert _stored(db) == [(SENDER, "while the webhook is down", 1)]
        hook.start()
        gw.start()
        _wait("the POST", lambda: hook.posts, 15)
        time.sleep(0.5)
        (post,) = hook.posts
        assert post["text"] == "while the webhook is down" and post["from"] == SENDER
        assert post["imei"] == IMEI and post["to"] == "+41790000000" and post["complete"]
    finally:
        gw.stop()
        hook.stop()
        release(sip_port, hook_port)


DIALPLAN = """
dialplan:
  digit_map: "(8xxx)"
  routes:
    - pattern: "8\\\\d+"
      to: gsm:mobile
"""


def test_sms_during_a_gsm_call_is_delivered_after_it(tmp_path: Path,
                                                     emu: ModemEmulator) -> None:
    sip_port, hook_port = free_port(), free_port()
    hook = _Webhook(hook_port)
    gw = GatewayProcess(tmp_path, _config(tmp_path, emu, sip_port,
                                          f"webhook: 'http://127.0.0.1:{hook_port}/sms'",
                                          extra=DIALPLAN))
    db = tmp_path / "state" / "sms.db"
    try:
        hook.start()
        gw.start()
        _wait("the daemon's SMS setup", lambda: _sms_ready(emu), 15)
        gw.phone("1", "offhook")
        gw.phone("1", "dial", digits="8123")
        _wait("the modem dialling", lambda: emu.calls, 10)
        emu.remote_answer()
        _wait("the call up", lambda: any(c.state == "active" for c in emu.calls), 10)
        _wait("the daemon seeing the call", lambda: "call up, SMS held" in gw.log_text(), 5)
        emu.deliver_sms(SENDER, "during the call")
        _wait("stored", lambda: _stored(db), 10)
        time.sleep(1.5)  # the webhook is up: only the gate can hold it back
        assert hook.posts == []
        assert any(c.state == "active" for c in emu.calls)
        emu.remote_hangup()
        _wait("the POST after the call", lambda: hook.posts, 10)
        assert not any(c.state == "active" for c in emu.calls)
        (post,) = hook.posts
        assert post["text"] == "during the call"
    finally:
        gw.stop()
        hook.stop()
        release(sip_port, hook_port)


def _cli(gw: GatewayProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway.cli", *args,
                           "--control", gw.control_path],
                          capture_output=True, text=True, timeout=40)


def test_branchline_sms_send_and_ussd_go_through_the_modem(tmp_path: Path,
                                                           emu: ModemEmulator) -> None:
    sip_port = free_port()
    emu.set_ussd_reply("*100#", "Guthaben: 12.50 CHF")
    gw = GatewayProcess(tmp_path, _config(tmp_path, emu, sip_port,
                                          "webhook: 'http://127.0.0.1:9/sms'"))
    try:
        gw.start()
        _wait("the daemon's SMS setup", lambda: _sms_ready(emu), 15)
        done = _cli(gw, "sms", "send", "lte1", "+41795555555", LONG)
        assert done.returncode == 0, (done.stderr, gw.log_text())
        assert "sent" in done.stdout
        assert emu.far_end_texts() == [("+41795555555", LONG)]
        assert bytes(emu.at_log).count(b"AT+CMGS=") == 3
        done = _cli(gw, "ussd", "lte1", "*100#")
        assert done.returncode == 0, (done.stderr, gw.log_text())
        assert done.stdout.strip() == "Guthaben: 12.50 CHF"
        done = _cli(gw, "sms", "send", "nosuch", "+41795555555", "x")
        assert done.returncode == 1 and "nosuch" in done.stderr
    finally:
        gw.stop()
        release(sip_port)


def test_a_sip_message_to_the_gateway_is_sent_as_an_sms(tmp_path: Path,
                                                         emu: ModemEmulator) -> None:
    """sipp (a trusted trunk source) sends a MESSAGE to +41791112233 at the gateway: 202,
    and the emulator's far end receives the text as an SMS."""
    require_binary("sipp", sipp_binary())
    sip_port, sipp_port, media_port = free_port(), free_port(), free_port()
    trunk = f"""trunks:
  - name: main
    registrar: 127.0.0.1:{sipp_port}
    keepalive: none
"""
    gw = GatewayProcess(tmp_path, _config(tmp_path, emu, sip_port,
                                          "webhook: 'http://127.0.0.1:9/sms'", extra=trunk))
    sipp = Sipp("uac_message.xml", sip_port=sipp_port, media_port=media_port, tmpdir=tmp_path,
                remote=f"127.0.0.1:{sip_port}", service="+41791112233", rtp_echo=False,
                timeout_s=10)
    try:
        gw.start()
        _wait("the daemon's SMS setup", lambda: _sms_ready(emu), 15)
        try:
            sipp.start()
        except SippError:
            pass  # a UAC can be done within start()'s 0.3 s; its exit code says how it went
        assert sipp.wait(10) == 0, (sipp.report(), gw.log_text())
        _wait("the SMS at the far end", emu.far_end_texts, 10)
        ((number, text),) = emu.far_end_texts()
        assert number == "+41791112233"
        assert text.rstrip("\r\n") == "Bitte zurückrufen, Grüsse aus der Filiale"
    finally:
        gw.stop()
        sipp.stop()
        release(sip_port, sipp_port, media_port)
