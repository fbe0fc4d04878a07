"""FXS line features through the running daemon and the simulated handset (issue 12, FEAT):

- call forward busy: baresip calls a busy line and the call lands on the forward target
  (another baresip, through Kamailio), audio through the box;
- star codes: *78 turns DND on (confirm tone), a caller then gets 486, the state survives a
  restart, *79 turns it off;
- a forward to an international number is refused like dialling it (reorder on *72, 403
  for a configured one; the trunk never sees the INVITE);
- distinctive ring: sipp's INVITE with Alert-Info Bellcore-dr2 rings the handset 0.8/0.4/0.8/4;
- howler after the configured off-hook warning time, heard at the ROH frequencies;
- pulse dialling: the handset dials 300 on a rotary dial (60/40 ms at 10 pps), the peer
  registered as 300 is called; a <9:> digit map strips the 9 dialled before it;
- the hook-flash window from the config (a 200 ms break is no flash with 300-600 ms).
"""

from __future__ import annotations

import re
import time
import wave
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.dsp.callerid_rx import decode_fsk

from .conftest import BaresipFactory, KamailioFactory, require_binary
from .gateway_proc import GatewayProcess
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port
from .peers.sipp import sipp_binary
from .test_first_call import wav_tone
from .test_interop_matrix import LINE, LINE_NUMBER
from .test_interop_sipp import SippRig

pytestmark = [pytest.mark.peers, pytest.mark.slow]

LINE_USER = "gateway"
LINE_PASS = "gateway-secret"
BOB, BOB_PASS = "300", "bob-pass-300"
CAROL, CAROL_PASS = "400", "carol-pass-400"
LINE2_USER, LINE2_PASS = "gateway2", "gateway2-secret"
ROH_HZ = (1400.0, 2060.0, 2450.0, 2600.0)


def config(tmp: Path, trunk_port: int | None, *, line1: str = "", line2: str = "",
           digit_map: str = "(1xx|[2-9]xx|011x.T)", trace: bool = False) -> str:
    trunk = "" if trunk_port is None else f"""
trunks:
  - name: main
    registrar: 127.0.0.1:{trunk_port}
    expires: 60
    keepalive_interval: 1
"""
    account = "" if trunk_port is None else f"""
    trunk: {{name: main, username: {LINE_USER}, password: {LINE_PASS}}}"""
    return f"""
gateway:
  name: feat-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{free_port()}
  rtp_ports: 32000-32999
  trace: {'true' if trace else 'false'}
{trunk}
lines:
  - name: "1"
    backend: sim
    number: "101"{account}
{line1}
  - name: "2"
    backend: sim
    number: "102"
{line2}
dialplan:
  digit_map: "{digit_map}"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
    - pattern: "\\\\d+"
      to: {'trunk:main' if trunk_port is not None else 'local'}
"""


Starter = Callable[..., GatewayProcess]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[Starter]:
    started: list[GatewayProcess] = []

    def start(text: str, name: str = "gw") -> GatewayProcess:
        gw = GatewayProcess(tmp_path, text, name=name)
        started.append(gw)
        gw.start()
        return gw

    yield start
    for gw in started:
        code = gw.stop()
        # shown by pytest only when the test failed
        print(f"===== {gw.dir.name} (exit {code}) =====\n{gw.log_text()[-6000:]}")


@pytest.fixture
def trunk(kamailio_factory: KamailioFactory) -> KamailioTrunk:
    # INVITEs are challenged too: a forwarded call authenticates with the line's account
    return kamailio_factory(users={LINE_USER: LINE_PASS, BOB: BOB_PASS, CAROL: CAROL_PASS,
                                   LINE2_USER: LINE2_PASS},
                            auth_invite=True)


def registered(gw: GatewayProcess) -> None:
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)


def heard_in(path: Path) -> set[str]:
    """Every sound the handset's tone classifier names over a recording of its earpiece."""
    from gateway.dsp import FRAME_BYTES
    from gateway.dsp.analysis import ToneClassifier
    from gateway.dsp.tones import get_profile
    from hal.audio.wav import read_wav_8k

    pcm = read_wav_8k(path)
    classifier = ToneClassifier(get_profile("US"))
    names = set()
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        classifier.feed(pcm[i:i + FRAME_BYTES])
        names.add(classifier.classify())
    return names


def dial_code(gw: GatewayProcess, code: str, expect: str, tmp: Path) -> None:
    """Dial a star code; the handset's earpiece must carry `expect` (confirm or reorder)."""
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits=code)
    rec = tmp / f"code-{code.replace('*', 's').replace('#', 'h')}-{time.monotonic_ns()}.wav"
    gw.phone(LINE, "record", path=str(rec), seconds=0.1 * len(code) * 2 + 2.0)
    assert gw.line(LINE)["tone"] == expect
    assert expect in heard_in(rec), heard_in(rec)
    gw.phone(LINE, "onhook")
    gw.wait_until("line idle", lambda: gw.line(LINE)["state"] == "idle", timeout=5)


def test_forward_busy_lands_on_the_target(
    tmp_path: Path, trunk: KamailioTrunk, baresip_factory: BaresipFactory, gateway: Starter,
) -> None:
    gw = gateway(config(tmp_path, trunk.port, line1=f"""    features: {{forward_busy: "{CAROL}"}}""",
                        trace=True))
    carol = baresip_factory(CAROL, trunk=trunk, password=CAROL_PASS, tone=1000,
                            answer_mode="auto")
    bob = baresip_factory(BOB, trunk=trunk, password=BOB_PASS, tone=600)
    carol.wait_registered()
    bob.wait_registered()
    registered(gw)
    assert gw.line(LINE)["forwarding"]["busy"] == CAROL

    gw.phone(LINE, "offhook")  # busy: dial tone
    gw.wait_hears(LINE, "dial")
    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    established = carol.wait_for_event("CALL_ESTABLISHED", timeout=10)
    bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
    assert gw.line(LINE)["state"] == "dial-tone"  # the busy line was never rung
    assert not gw.phone(LINE, "state")["rings"]
    time.sleep(2.0)  # audio both ways through the box
    bob.hangup()
    carol.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)
    got_hz, _ = wav_tone(carol.wait_recordings_closed()[-1])
    assert abs(got_hz - 600.0) <= 12.0, got_hz  # carol heard bob
    got_hz, _ = wav_tone(bob.wait_recordings_closed()[-1])
    assert abs(got_hz - 1000.0) <= 20.0, got_hz  # and bob heard carol
    # the forwarded INVITE said whose call it was and why (RFC 5806)
    assert f"Diversion: <sip:{LINE_USER}@127.0.0.1>;reason=user-busy;counter=1" in \
        gw.log_text(), gw.log_text()[-3000:]
    # carol saw bob calling, not the line; the line's account is asserted for the trunk
    assert f"sip:{BOB}@" in str(established.get("peeruri", "")), established
    assert f"P-Asserted-Identity: <sip:{LINE_USER}@127.0.0.1>" in gw.log_text()


def test_star_codes_set_dnd_which_refuses_486_and_survives_a_restart(
    tmp_path: Path, trunk: KamailioTrunk, baresip_factory: BaresipFactory, gateway: Starter,
) -> None:
    text = config(tmp_path, trunk.port)
    gw = gateway(text)
    bob = baresip_factory(BOB, trunk=trunk, password=BOB_PASS)
    bob.wait_registered()
    registered(gw)
    dial_code(gw, "*78", "confirm", tmp_path)
    assert gw.line(LINE)["forwarding"]["dnd"] is True

    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    closed = bob.wait_for_event("CALL_CLOSED", timeout=10)
    assert "486" in str(closed.get("param")), closed
    assert not gw.phone(LINE, "state")["rings"]

    gw.stop()
    gw = gateway(text, name="gw-again")
    registered(gw)
    assert gw.line(LINE)["forwarding"]["dnd"] is True  # kept across the restart
    dial_code(gw, "*79", "confirm", tmp_path)
    assert gw.line(LINE)["forwarding"]["dnd"] is False
    mark = bob.mark()
    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    gw.wait_until("line 1 rings", lambda: gw.line(LINE)["state"] == "ringing", timeout=10)
    bob.hangup()
    bob.wait_for_event("CALL_CLOSED", timeout=10, since=mark)


def test_forward_to_an_international_number_is_refused_like_dialling_it(
    tmp_path: Path, trunk: KamailioTrunk, baresip_factory: BaresipFactory, gateway: Starter,
) -> None:
    gw = gateway(config(tmp_path, trunk.port,
                        line1='    features: {forward_always: "0114930123"}'))
    bob = baresip_factory(BOB, trunk=trunk, password=BOB_PASS)
    bob.wait_registered()
    registered(gw)
    # from the handset: *72 + an international number is refused with reorder
    dial_code(gw, "*7201149301234#", "reorder", tmp_path)
    assert gw.line(LINE)["forwarding"]["always"] == "0114930123"  # unchanged
    # configured: the caller is refused (403) and nothing is sent to the trunk
    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    closed = bob.wait_for_event("CALL_CLOSED", timeout=10)
    assert "403" in str(closed.get("param")), closed
    log = gw.log_text()
    assert "call-denied" in log or "not permitted" in log, log[-3000:]
    assert "INVITE sip:0114930123" not in log


def test_distinctive_ring_from_alert_info(tmp_path: Path) -> None:
    require_binary("sipp", sipp_binary())
    rig = SippRig(tmp_path, account=False)
    failed = True
    try:
        rig.gw.start()
        peer = rig.uac("uac_alert_info.xml", service=LINE_NUMBER)
        rig.gw.wait_until("three ring bursts",
                          lambda: len(rig.gw.phone(LINE, "state")["rings"]) >= 3, timeout=12)
        rings = rig.gw.phone(LINE, "state")["rings"]
        on = [end - start for start, end in rings[:2]]
        off = [rings[1][0] - rings[0][1], rings[2][0] - rings[1][1]]
        # Bellcore dr2 (long-long): 0.8 on, 0.4 off, 0.8 on, 4.0 off; not the US 2/4
        assert all(abs(d - 0.8) <= 0.06 for d in on), rings
        assert abs(off[0] - 0.4) <= 0.06 and abs(off[1] - 4.0) <= 0.1, rings
        assert peer.wait(15) == 0, peer.report()
        failed = False
    finally:
        rig.close(failed)


def test_howler_after_the_configured_offhook_warning(tmp_path: Path, gateway: Starter) -> None:
    gw = gateway(config(tmp_path, None,
                        line2="    timers: {first_digit: 1, offhook_warning: 5}"))
    gw.phone("2", "offhook")
    gw.wait_hears("2", "dial")
    t0 = time.monotonic()
    gw.wait_hears("2", "reorder", timeout=4)
    gw.wait_hears("2", "howler", timeout=9)
    assert 4.0 <= time.monotonic() - t0 <= 8.0
    # the earpiece carries the four ROH frequencies (the last 0.2 s, polled over a burst)
    gw.wait_until("ROH frequencies heard", lambda: sorted(
        gw.phone("2", "hears")["frequencies"]) == list(ROH_HZ), timeout=3, interval=0.05)
    assert gw.line("2")["state"] == "howler"
    gw.phone("2", "onhook")


def test_pulse_dialled_number_is_called(
    tmp_path: Path, trunk: KamailioTrunk, baresip_factory: BaresipFactory, gateway: Starter,
) -> None:
    # a worn dial: the hook switch bounces 4 times after every make and break (up to 2 ms),
    # which the driver's 10 ms debounce must take out before the pulses are counted
    gw = gateway(config(tmp_path, trunk.port,
                        line1="    options: {bounce_count: 4, bounce_ms: 2}"))
    bob = baresip_factory(BOB, trunk=trunk, password=BOB_PASS, answer_mode="auto")
    bob.wait_registered()
    registered(gw)
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits=BOB, mode="pulse")  # 3, 0 (ten pulses), 0: about 3.2 s
    bob.wait_for_event("CALL_ESTABLISHED", timeout=15)  # only a call for 300 reaches bob
    gw.wait_until("connected", lambda: gw.line(LINE)["state"] == "connected", timeout=10)
    assert gw.phone(LINE, "state")["digits"] == BOB, gw.phone(LINE, "state")
    gw.phone(LINE, "onhook")
    bob.wait_for_event("CALL_CLOSED", timeout=10)


def test_digit_map_substitution_strips_the_outside_line_digit(
    tmp_path: Path, trunk: KamailioTrunk, baresip_factory: BaresipFactory, gateway: Starter,
) -> None:
    gw = gateway(config(tmp_path, trunk.port, digit_map="(1xx|<9:>[2-9]xx)"))
    bob = baresip_factory(BOB, trunk=trunk, password=BOB_PASS, answer_mode="auto")
    bob.wait_registered()
    registered(gw)
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits="9" + BOB)
    bob.wait_for_event("CALL_ESTABLISHED", timeout=15)  # 300 was called, not 9300
    gw.phone(LINE, "onhook")
    bob.wait_for_event("CALL_CLOSED", timeout=10)


def test_hook_flash_window_from_the_config(tmp_path: Path, gateway: Starter) -> None:
    # a wide window (300-1500 ms), so a loaded machine's late frames cannot turn a break
    # into a hang-up before its end is seen
    gw = gateway(config(tmp_path, None,
                        line2="    timers: {flash_min_ms: 300, flash_max_ms: 1500}"))
    gw.phone("2", "offhook")
    gw.wait_hears("2", "dial")
    gw.phone("2", "dial", digits="1")
    gw.wait_until("collecting", lambda: gw.line("2")["state"] == "collecting", timeout=5)
    gw.phone("2", "flash", duration_ms=200)  # a flash by default (100-900); too short here
    time.sleep(1.0)
    assert gw.line("2")["state"] == "collecting" and gw.phone("2", "state")["digits"] == "1"
    gw.phone("2", "flash", duration_ms=1000)  # a hang-up by default; a flash here
    gw.wait_until("dial tone again", lambda: gw.line("2")["state"] == "dial-tone", timeout=5)
    assert "line 2: idle" not in gw.log_text()  # never hung up
    gw.phone("2", "flash", duration_ms=2000)  # past 1500 ms: hung up, then lifted again
    gw.wait_until("hung up", lambda: "line 2: idle" in gw.log_text(), timeout=5)
    gw.wait_until("dial tone", lambda: gw.line("2")["state"] == "dial-tone", timeout=5)
    gw.phone("2", "onhook")


def test_forward_on_no_answer_after_the_configured_time(
    tmp_path: Path, trunk: KamailioTrunk, baresip_factory: BaresipFactory, gateway: Starter,
) -> None:
    gw = gateway(config(tmp_path, trunk.port, line1=(
        f'    features: {{forward_no_answer: "{CAROL}", forward_no_answer_after: 2}}')))
    carol = baresip_factory(CAROL, trunk=trunk, password=CAROL_PASS, answer_mode="auto")
    bob = baresip_factory(BOB, trunk=trunk, password=BOB_PASS)
    carol.wait_registered()
    bob.wait_registered()
    registered(gw)
    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    gw.wait_until("line 1 rings", lambda: gw.line(LINE)["state"] == "ringing", timeout=10)
    rang_at = time.monotonic()
    carol.wait_for_event("CALL_ESTABLISHED", timeout=10)
    bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
    assert 1.5 <= time.monotonic() - rang_at <= 6.0
    gw.wait_until("line 1 stops ringing", lambda: gw.line(LINE)["state"] == "idle", timeout=5)
    assert gw.phone(LINE, "state")["rings"], "the line rang first"
    bob.hangup()
    carol.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)


def test_forward_always_to_another_line_of_the_box(
    tmp_path: Path, trunk: KamailioTrunk, baresip_factory: BaresipFactory, gateway: Starter,
) -> None:
    gw = gateway(config(tmp_path, trunk.port, line1='    features: {forward_always: "102"}'))
    bob = baresip_factory(BOB, trunk=trunk, password=BOB_PASS, tone=600)
    bob.wait_registered()
    registered(gw)
    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    gw.wait_until("line 2 rings", lambda: gw.line("2")["state"] == "ringing", timeout=10)
    assert gw.line(LINE)["state"] == "idle"  # line 1 never rang
    # line 2's display shows bob, the original caller (Bellcore FSK after the first ring)
    ear = tmp_path / "line2-ear.wav"
    gw.phone("2", "record", path=str(ear), seconds=4.0)
    with wave.open(str(ear)) as w:
        shown = decode_fsk(w.readframes(w.getnframes()), "bell202")
    assert shown is not None and shown.number == BOB, shown
    gw.phone("2", "offhook")
    bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
    gw.wait_until("line 2 hears bob", lambda: abs(
        (gw.phone("2", "hears").get("dominant_hz") or 0) - 600.0) <= 12.0, timeout=5)
    gw.phone("2", "onhook")
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)


def test_forward_on_no_answer_twice_line_to_line_then_to_the_trunk(
    tmp_path: Path, trunk: KamailioTrunk, baresip_factory: BaresipFactory, gateway: Starter,
) -> None:
    # bob -> line 1 (no answer 1 s) -> line 2 (no answer 1 s) -> carol on the trunk
    gw = gateway(config(
        tmp_path, trunk.port,
        line1='    features: {forward_no_answer: "102", forward_no_answer_after: 1}',
        line2=(f"    trunk: {{name: main, username: {LINE2_USER}, password: {LINE2_PASS}}}\n"
               f'    features: {{forward_no_answer: "{CAROL}", forward_no_answer_after: 1}}'),
        trace=True))
    carol = baresip_factory(CAROL, trunk=trunk, password=CAROL_PASS, tone=1000,
                            answer_mode="auto")
    bob = baresip_factory(BOB, trunk=trunk, password=BOB_PASS, tone=600)
    carol.wait_registered()
    bob.wait_registered()
    registered(gw)
    bob.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    gw.wait_until("line 1 rings", lambda: gw.line(LINE)["state"] == "ringing", timeout=10)
    gw.wait_until("line 2 rings", lambda: gw.line("2")["state"] == "ringing", timeout=5)
    assert gw.line(LINE)["state"] == "idle"
    [call] = [c for c in gw.status()["calls"] if c["line"] == "2"]
    assert f"sip:{BOB}@" in call["remote"]  # line 2 is shown bob, not line 1
    established = carol.wait_for_event("CALL_ESTABLISHED", timeout=10)
    bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
    assert gw.line("2")["state"] == "idle"  # line 2 stopped ringing too
    assert f"sip:{BOB}@" in str(established.get("peeruri", "")), established
    # both forwarding lines named, newest first (RFC 5806), the caller is bob
    assert re.search(rf"Diversion: <sip:{LINE2_USER}@127\.0\.0\.1>;reason=no-answer;"
                     rf"counter=1\s+Diversion: <sip:{LINE_USER}@127\.0\.0\.1>;"
                     "reason=no-answer;counter=1", gw.log_text()), gw.log_text()[-4000:]
    time.sleep(1.5)  # audio both ways through the box
    bob.hangup()
    carol.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)
    got_hz, _ = wav_tone(carol.wait_recordings_closed()[-1])
    assert abs(got_hz - 600.0) <= 12.0, got_hz  # carol heard bob
    got_hz, _ = wav_tone(bob.wait_recordings_closed()[-1])
    assert abs(got_hz - 1000.0) <= 20.0, got_hz  # and bob heard carol
