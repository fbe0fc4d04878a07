"""Routes with ordered targets (issue 8, lane F): failover, emergency calls, media timeout.

The real daemon with a simulated handset dials through routes such as
`to: [trunk:dead, trunk:live]`:

- a first trunk where nothing answers INVITEs (a UDP socket that answers OPTIONS and
  swallows the rest): the INVITE times out after `failover_timeout` (1.5 s) and the live
  Kamailio trunk takes the call, and the handset hears the far end;
- a first trunk answering 503 (sipp): the second target is used at once;
- a first trunk answering 486 (sipp): busy, nothing is tried further;
- `[trunk:dead, gsm:mobile]`: the call goes out through the emulated modem, with audio;
- `[gsm:mobile, trunk:pbx]` with the modem unplugged: the trunk takes the call;
- an emergency number the toll-fraud rules would refuse still goes out (and one the digit
  map lacks is still dialled);
- a connected call whose far end sends no RTP is ended after `sip.media_timeout`: BYE to
  the far end, reorder on the handset.

Figures (failover gap, media timeout) are printed; run with -s to see them.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hal.sim.modem import ModemEmulator

from .conftest import BaresipFactory, KamailioFactory, require_binary
from .gateway_proc import GatewayProcess
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port
from .peers.sipp import Sipp, sipp_binary
from .test_first_call import assert_handset_hears_tone
from .test_gsm_calls import modem_config, modem_up, tone, wait

pytestmark = [pytest.mark.peers, pytest.mark.slow]

BOB, BOB_PASS = "300", "bob-pass-300"
LOOSE_LIMIT = 5.0  # s; the design's figure is < 2 s (failover_timeout 1.5 s)


class SilentTrunk:
    """A 'trunk' that answers OPTIONS (it looks alive to probes) and never answers an
    INVITE; records when each request arrived (time.monotonic())."""

    def __init__(self) -> None:
        self.port = free_port()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", self.port))
        self.sock.settimeout(0.2)
        self.requests: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> SilentTrunk:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                continue
            at = time.monotonic()
            text = data.decode(errors="replace")
            first = text.split("\r\n", 1)[0]
            self.requests.append((at, first))
            if first.startswith("OPTIONS "):
                self.sock.sendto(_ok(text), addr)

    def invites(self) -> list[float]:
        return [at for at, line in self.requests if line.startswith("INVITE ")]


def _ok(request: str) -> bytes:
    keep = [h for h in request.split("\r\n")[1:]
            if h.split(":", 1)[0].strip().lower() in ("via", "from", "to", "call-id", "cseq")]
    return ("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode()


def config(tmp: Path, trunks: dict[str, int], to: str, *, digit_map: str = "(1xx|[2-9]xx)",
           extra: str = "", sip_extra: str = "") -> str:
    trunk_text = "".join(f"""
  - name: {name}
    registrar: 127.0.0.1:{port}
    expires: 60
    failover_timeout: 1.5""" for name, port in trunks.items())
    return f"""
gateway:
  name: failover-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{free_port()}
  rtp_ports: 34000-34999
  codecs: [PCMU]
{sip_extra}trunks:{trunk_text}
lines:
  - name: "1"
    backend: sim
    number: "101"
dialplan:
  digit_map: "{digit_map}"
  routes:
    - pattern: "\\\\d+"
      to: {to}
{extra}"""


def log_times(log: str, needle: str) -> list[float]:
    """Seconds (of the day) of the daemon's log lines containing `needle`."""
    found = []
    for line in log.splitlines():
        if needle in line:
            clock = line.split()[1]  # "2026-12-06 21:58:00,330 INFO ..."
            h, m, rest = clock.split(":")
            found.append(int(h) * 3600 + int(m) * 60 + float(rest.replace(",", ".")))
    return found


def line_call(gw: GatewayProcess) -> dict[str, Any]:
    calls = [c for c in gw.status()["calls"] if c["line"] == "1"]
    assert len(calls) == 1, calls
    return calls[0]


def dial(gw: GatewayProcess, digits: str) -> float:
    gw.phone("1", "offhook")
    gw.wait_hears("1", "dial")
    gw.phone("1", "dial", digits=digits)
    return time.monotonic()


def hang_up(gw: GatewayProcess) -> None:
    gw.phone("1", "onhook")
    gw.wait_until("line 1 idle", lambda: gw.line("1")["state"] == "idle", timeout=5)


def trunk_sipp(scenario: str, tmp: Path, *, rtp_echo: bool = True) -> Sipp:
    """sipp as a trunk running `scenario` for every call, with no call limit: the
    gateway's trunk-health OPTIONS probes are new "calls" to sipp too (answered by -aa)."""
    return Sipp(scenario, sip_port=free_port(), media_port=free_port(), tmpdir=tmp,
                rtp_echo=rtp_echo, calls=None, timeout_s=120).start()


@pytest.fixture
def sipp_required() -> None:
    require_binary("sipp", sipp_binary())


@pytest.fixture
def live(kamailio_factory: KamailioFactory) -> KamailioTrunk:
    return kamailio_factory(users={BOB: BOB_PASS})


def test_silent_first_trunk_fails_over_to_the_live_one(
        tmp_path: Path, live: KamailioTrunk, baresip_factory: BaresipFactory) -> None:
    bob = baresip_factory(BOB, trunk=live, tone=1000, answer_mode="auto")
    bob.wait_registered()
    with SilentTrunk() as dead:
        gw = GatewayProcess(tmp_path, config(tmp_path, {"dead": dead.port, "live": live.port},
                                             "[trunk:dead, trunk:live]"))
        gw.start()
        try:
            dial(gw, BOB)
            bob.wait_for_event("CALL_ESTABLISHED", timeout=10)  # it answers at once
            rang = time.monotonic()
            invites = dead.invites()
            assert invites, f"the dead trunk got no INVITE: {dead.requests}"
            gap = rang - invites[0]
            print(f"\nfailover: the live trunk's callee answered {gap:.2f} s after the first "
                  f"INVITE reached the silent trunk ({len(invites)} INVITE sends there)")
            assert gap < LOOSE_LIMIT
            gw.wait_until("connected", lambda: gw.line("1")["state"] == "connected", timeout=10)
            call = line_call(gw)
            assert call["route"] == "trunk:live"
            assert call["attempts"][0] == {"target": "trunk:dead", "result": "timeout",
                                           "status": 408}
            assert_handset_hears_tone(gw, "1", 1000.0, tmp_path, "via-live")
            log = gw.log_text()
            assert "line 1: trunk:dead failed (timeout 408), trying trunk:live" in log
            assert "line 1: wait_onhook" not in log  # no reorder/busy between the targets
            assert "trunk dead: up -> degraded (INVITE timeout)" in log  # health was told
            sent = log_times(log, "line 1: calling 300 via ")
            print(f"second INVITE sent {sent[1] - sent[0]:.3f} s after the first "
                  "(the daemon's log)")
            sent_before = len(dead.invites())
            time.sleep(1.0)
            assert len(dead.invites()) == sent_before  # the first INVITE was given up
            hang_up(gw)
        finally:
            gw.stop()


@pytest.mark.usefixtures("sipp_required")
def test_503_from_the_first_trunk_uses_the_second(
        tmp_path: Path, live: KamailioTrunk, baresip_factory: BaresipFactory) -> None:
    bob = baresip_factory(BOB, trunk=live, tone=1000, answer_mode="auto")
    bob.wait_registered()
    first = trunk_sipp("uas_unavailable.xml", tmp_path)
    gw = GatewayProcess(tmp_path, config(tmp_path, {"first": first.sip_port, "live": live.port},
                                         "[trunk:first, trunk:live]"))
    gw.start()
    try:
        dialled = dial(gw, BOB)
        bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
        print(f"\n503 -> second trunk: callee answered {time.monotonic() - dialled:.2f} s "
              "after dialling")
        gw.wait_until("connected", lambda: gw.line("1")["state"] == "connected", timeout=10)
        assert len(first.received("INVITE")) == 1
        call = line_call(gw)
        assert call["route"] == "trunk:live"
        assert call["attempts"][0] == {"target": "trunk:first", "result": "rejected",
                                       "status": 503}
        assert "line 1: trunk:first failed (rejected 503), trying trunk:live" in gw.log_text()
        hang_up(gw)
    finally:
        gw.stop()
        first.stop()


@pytest.mark.usefixtures("sipp_required")
def test_486_from_the_first_trunk_is_final(tmp_path: Path, live: KamailioTrunk) -> None:
    first = trunk_sipp("uas_busy.xml", tmp_path)
    gw = GatewayProcess(tmp_path, config(tmp_path, {"first": first.sip_port, "live": live.port},
                                         "[trunk:first, trunk:live]"))
    gw.start()
    try:
        dial(gw, BOB)
        gw.wait_hears("1", "busy", timeout=10)
        time.sleep(0.5)
        assert live.events("request", "INVITE") == []  # never tried
        assert len(first.received("INVITE")) == 1
        assert "trying trunk:live" not in gw.log_text()
        assert "line 1: trunk:first failed (busy 486)" in gw.log_text()
        hang_up(gw)
    finally:
        gw.stop()
        first.stop()


@pytest.fixture
def emulator() -> Iterator[ModemEmulator]:
    emu = ModemEmulator("ec25").start()
    try:
        yield emu
    finally:
        emu.stop()


def test_silent_trunk_then_gsm(tmp_path: Path, emulator: ModemEmulator) -> None:
    emu = emulator
    number = "0123456789"
    with SilentTrunk() as dead:
        gw = GatewayProcess(tmp_path, config(
            tmp_path, {"dead": dead.port}, "[trunk:dead, gsm:mobile]",
            digit_map="(1xx|0xxxxxxxxx)", extra=modem_config(emu, "line:1")))
        gw.start()
        try:
            gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
            dial(gw, number)
            wait("the modem to dial", lambda: [c.number for c in emu.calls] == [number],
                 timeout=10)
            dialled = time.monotonic()
            invites = dead.invites()
            assert invites, f"the dead trunk got no INVITE: {dead.requests}"
            print(f"\nfailover to GSM: the modem dialled {dialled - invites[0]:.2f} s after "
                  "the first INVITE reached the silent trunk")
            assert dialled - invites[0] < LOOSE_LIMIT
            gw.wait_hears("1", "ringback", timeout=5)
            emu.remote_answer()
            gw.wait_until("connected", lambda: gw.line("1")["state"] == "connected", timeout=5)
            call = line_call(gw)
            assert call["route"] == "gsm:mobile"
            assert call["attempts"][0] == {"target": "trunk:dead", "result": "timeout",
                                           "status": 408}
            emu.play_pcm(tone(1000.0, -12.0, 6.0))
            hz, db = assert_handset_hears_tone(gw, "1", 1000.0, tmp_path, "via-gsm")
            assert abs(db + 12.0) <= 3.0, f"handset heard {db:.1f} dBFS, far end sent -12"
            assert "line 1: trunk:dead failed (timeout 408), trying gsm:mobile" in gw.log_text()
            hang_up(gw)
        finally:
            gw.stop()


@pytest.mark.usefixtures("sipp_required")
def test_gsm_group_without_a_usable_modem_passes_to_the_trunk(
        tmp_path: Path, emulator: ModemEmulator) -> None:
    emu = emulator
    pbx = trunk_sipp("uas", tmp_path)
    gw = GatewayProcess(tmp_path, config(
        tmp_path, {"pbx": pbx.sip_port}, "[gsm:mobile, trunk:pbx]",
        digit_map="(1xx|0xxxxxxxxx)", extra=modem_config(emu, "line:1")))
    gw.start()
    try:
        gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
        emu.unplug()
        gw.wait_until("modem down", lambda: not modem_up(gw), timeout=10)
        dial(gw, "0123456789")
        gw.wait_until("connected", lambda: gw.line("1")["state"] == "connected", timeout=10)
        call = line_call(gw)
        assert call["route"] == "trunk:pbx"
        assert call["attempts"][0]["target"] == "gsm:mobile"
        assert call["attempts"][0]["result"] == "no modem"
        assert "line 1: gsm:mobile failed (no modem" in gw.log_text()
        assert len(pbx.received("INVITE")) == 1 and emu.calls == []
        hang_up(gw)
    finally:
        gw.stop()
        pbx.stop()


@pytest.mark.usefixtures("sipp_required")
def test_emergency_number_goes_out_despite_toll_fraud_rules_and_digit_map(
        tmp_path: Path) -> None:
    """9001 is in the premium-rate range the toll-fraud rules close (900...): as an
    ordinary number it is refused; listed as a branch emergency number it goes out. 55 is
    an emergency number the digit map does not have: it is dialled anyway."""
    pbx = trunk_sipp("uas", tmp_path)
    gw = GatewayProcess(tmp_path, config(
        tmp_path, {"pbx": pbx.sip_port}, "trunk:pbx", digit_map="(1xx|9xxx)",
        extra='emergency:\n  numbers: ["9001", "55"]\n  targets: [trunk:pbx]\n'))
    gw.start()
    try:
        dial(gw, "9002")
        gw.wait_hears("1", "reorder", timeout=5)
        assert "call to 9002 refused: prefix 900 denied" in gw.log_text()
        hang_up(gw)
        assert pbx.received("INVITE") == []

        for number in ("9001", "55"):
            dial(gw, number)
            gw.wait_until(f"{number} connected",
                          lambda: gw.line("1")["state"] == "connected", timeout=10)
            assert f"WARNING branchline: line 1: EMERGENCY call to {number}" in gw.log_text()
            hang_up(gw)
        uris = [m.split("\r\n", 1)[0].split("\n", 1)[0] for m in pbx.received("INVITE")]
        assert [u.split()[1].split("@")[0] for u in uris] == ["sip:9001", "sip:55"], uris
    finally:
        gw.stop()
        pbx.stop()


@pytest.mark.usefixtures("sipp_required")
def test_call_without_rtp_from_the_far_end_is_ended_after_media_timeout(
        tmp_path: Path) -> None:
    """sipp answers and never sends RTP: after sip.media_timeout (2 s) the gateway sends
    BYE and the handset hears reorder. A call whose far end keeps sending stays up."""
    silent = trunk_sipp("uas", tmp_path, rtp_echo=False)
    gw = GatewayProcess(tmp_path, config(tmp_path, {"pbx": silent.sip_port}, "trunk:pbx",
                                         sip_extra="  media_timeout: 2\n"))
    gw.start()
    try:
        dial(gw, BOB)
        gw.wait_until("connected", lambda: gw.line("1")["state"] == "connected", timeout=10)
        connected = time.monotonic()
        gw.wait_hears("1", "reorder", timeout=10)
        ended = time.monotonic() - connected
        print(f"\nmedia timeout 2 s: reorder on the handset {ended:.2f} s after the answer")
        assert 1.5 <= ended < LOOSE_LIMIT
        wait("sipp to get the BYE", lambda: len(silent.received("BYE")) == 1, timeout=5)
        assert not gw.status()["calls"]
        log = gw.log_text()
        assert "ended: media timeout" in log
        hang_up(gw)
    finally:
        gw.stop()
        silent.stop()


@pytest.mark.usefixtures("sipp_required")
def test_call_with_rtp_outlives_media_timeout(tmp_path: Path) -> None:
    echo = trunk_sipp("uas", tmp_path, rtp_echo=True)
    gw = GatewayProcess(tmp_path, config(tmp_path, {"pbx": echo.sip_port}, "trunk:pbx",
                                         sip_extra="  media_timeout: 2\n"))
    gw.start()
    try:
        dial(gw, BOB)
        gw.wait_until("connected", lambda: gw.line("1")["state"] == "connected", timeout=10)
        time.sleep(4.0)
        assert gw.line("1")["state"] == "connected"
        assert "media timeout" not in gw.log_text()
        hang_up(gw)
    finally:
        gw.stop()
        echo.stop()
