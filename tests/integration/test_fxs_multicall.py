"""Two calls on one FXS line through the real daemon (issue 12): call waiting with type-2
caller ID, hold and swap by hook flash, recall, and a three-way conference mixed on the
box. Kamailio is the trunk; baresip phones are the far ends, each sending its own tone so
every ear can be checked by frequency; the handset is the simulated phone (a CIDCW set)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dsp.analysis import frequencies_present

from .audio import write_tone_wav
from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.baresip import Baresip
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port
from .test_first_call import LINE_PASS, LINE_USER, gateway_config

pytestmark = [pytest.mark.peers, pytest.mark.slow]

BOB_HZ, CAROL_HZ, HANDSET_HZ = 1000.0, 600.0, 440.0
FREQS = (HANDSET_HZ, CAROL_HZ, BOB_HZ)


@pytest.fixture
def setup(tmp_path: Path,
          kamailio_factory: KamailioFactory) -> Iterator[tuple[KamailioTrunk, GatewayProcess]]:
    trunk = kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300",
                                    "301": "carol-pass-301"})
    gw = GatewayProcess(tmp_path, gateway_config(trunk, free_port(), tmp_path))
    gw.start()
    try:
        yield trunk, gw
    finally:
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])


def phone(trunk: KamailioTrunk, factory: BaresipFactory, user: str, hz: float,
          answer: str = "manual") -> Baresip:
    password = {"300": "bob-pass-300", "301": "carol-pass-301"}[user]
    peer = factory(user, trunk=trunk, password=password, tone=int(hz), answer_mode=answer)
    peer.wait_registered()
    return peer


def heard(gw: GatewayProcess, tmp: Path, name: str, seconds: float = 1.0,
          line: str = "1") -> tuple[float, ...]:
    """The party frequencies in the next `seconds` of a handset's earpiece."""
    from hal.audio.wav import read_wav_8k

    path = tmp / f"{name}.wav"
    gw.phone(line, "record", path=str(path), seconds=seconds)
    return frequencies_present(read_wav_8k(path), FREQS)


def wait_heard(gw: GatewayProcess, tmp: Path, name: str, want: tuple[float, ...],
               line: str = "1") -> None:
    got: list[tuple[float, ...]] = []

    def check() -> bool:
        got.append(heard(gw, tmp, name, 0.6, line))
        return got[-1] == want

    try:
        gw.wait_until(f"handset to hear {want}", check, timeout=8, interval=0.05)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nheard: {got[-5:]}") from None


def bob_connected(trunk: KamailioTrunk, gw: GatewayProcess, factory: BaresipFactory) -> Baresip:
    bob = phone(trunk, factory, "300", BOB_HZ, answer="auto")
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    gw.phone("1", "offhook")
    gw.phone("1", "dial", digits="300")
    bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
    gw.wait_until("call connected", lambda: gw.line("1")["state"] == "connected", timeout=5)
    return bob


def held_calls(gw: GatewayProcess) -> list[str]:
    return [c["remote"] for c in gw.status()["calls"] if c["held"]]


def test_call_waiting_with_caller_id_flash_answers_swaps_and_recalls(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    trunk, gw = setup
    bob = bob_connected(trunk, gw, baresip_factory)
    carol = phone(trunk, baresip_factory, "301", CAROL_HZ)
    carol.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    carol.wait_for_event("CALL_RINGING", timeout=10)  # 180: waiting, not 486
    gw.wait_until("type-2 caller ID on the handset",
                  lambda: bool(gw.phone("1", "hears").get("cidcw")), timeout=8)
    assert gw.phone("1", "hears")["cidcw"] == [{"number": "301", "name": None,
                                                "modem": "bell202"}]
    wait_heard(gw, tmp_path, "still-bob", (BOB_HZ,))
    state = gw.phone("1", "state")
    assert state["state"] == "connected" and len(state["calls"]) == 2

    gw.phone("1", "flash")  # answer carol, hold bob
    carol.wait_for_event("CALL_ESTABLISHED", timeout=10)
    wait_heard(gw, tmp_path, "carol", (CAROL_HZ,))
    gw.wait_until("bob held", lambda: len(held_calls(gw)) == 1, timeout=5)

    gw.phone("1", "flash")  # swap: bob back, carol held
    wait_heard(gw, tmp_path, "bob-again", (BOB_HZ,))
    gw.wait_until("carol held", lambda: any("301" in r or "sip:" in r for r in held_calls(gw))
                  and len(held_calls(gw)) == 1, timeout=5)

    gw.phone("1", "onhook")  # bob hung up on; carol on hold rings the phone back
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("recall ringing", lambda: gw.line("1")["state"] == "ringing", timeout=5)
    gw.phone("1", "offhook")
    wait_heard(gw, tmp_path, "carol-recalled", (CAROL_HZ,))
    gw.phone("1", "onhook")
    carol.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("calls gone", lambda: not gw.status()["calls"], timeout=5)


def test_three_way_conference_every_party_hears_the_other_two(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    trunk, gw = setup
    bob = bob_connected(trunk, gw, baresip_factory)
    carol = phone(trunk, baresip_factory, "301", CAROL_HZ, answer="auto")
    gw.phone("1", "flash")  # bob held, dial tone
    gw.wait_dial_tone("1")
    gw.phone("1", "dial", digits="301")
    carol.wait_for_event("CALL_ESTABLISHED", timeout=10)
    wait_heard(gw, tmp_path, "consult", (CAROL_HZ,))

    gw.phone("1", "play", path=str(write_tone_wav(tmp_path / "h.wav", HANDSET_HZ, -12.0)))
    gw.phone("1", "flash")  # all three
    gw.wait_until("conference", lambda: gw.phone("1", "state")["conference"], timeout=5)
    wait_heard(gw, tmp_path, "both", (CAROL_HZ, BOB_HZ))

    def sent_to_bob() -> int:
        return sum(int(c["stats"].get("packets_sent", 0)) for c in gw.status()["calls"]
                   if "300@" in c["remote"])

    before, t0 = sent_to_bob(), time.monotonic()
    time.sleep(2.0)
    rate = (sent_to_bob() - before) / (time.monotonic() - t0)
    gw.phone("1", "onhook")  # ends the conference: both far ends get BYE
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    carol.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("calls gone", lambda: not gw.status()["calls"], timeout=5)

    from hal.audio.wav import read_wav_8k

    # carol (the consultation call) hears the handset and bob. bob was held by re-INVITE
    # and resumed: baresip's sndfile stops writing what it hears at a re-INVITE, so his
    # ear is checked by frequency in the next test (a locally held party) and here by the
    # RTP the mix sends him (50 packets/s).
    pcm = read_wav_8k(carol.last_heard())
    tail = pcm[-2 * 8000 * 2:-2 * 8000 // 2]  # the last 1.5 s of the conference
    assert frequencies_present(tail, FREQS) == (HANDSET_HZ, BOB_HZ)
    assert rate > 40, f"{rate:.1f} packets/s to bob during the conference"


def test_three_way_conference_with_a_local_line_every_ear_checked(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    """Line 1 calls line 2 (local, held by flash without signalling), then bob over the
    trunk, and joins them: the three ears are the two handsets and baresip's recording."""
    trunk, gw = setup
    bob = phone(trunk, baresip_factory, "300", BOB_HZ, answer="auto")
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    gw.phone("1", "offhook")
    gw.phone("1", "dial", digits="102")
    gw.wait_until("line 2 rings", lambda: gw.line("2")["state"] == "ringing", timeout=5)
    gw.phone("2", "offhook")
    gw.phone("2", "play", path=str(write_tone_wav(tmp_path / "l2.wav", CAROL_HZ, -12.0)))
    wait_heard(gw, tmp_path, "line2", (CAROL_HZ,))
    gw.phone("1", "flash")
    gw.wait_dial_tone("1")
    wait_heard(gw, tmp_path, "line2-held", (), line="2")  # held: line 2 hears nothing
    gw.phone("1", "dial", digits="300")
    bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
    wait_heard(gw, tmp_path, "bob", (BOB_HZ,))
    gw.phone("1", "play", path=str(write_tone_wav(tmp_path / "h.wav", HANDSET_HZ, -12.0)))
    gw.phone("1", "flash")  # all three
    wait_heard(gw, tmp_path, "line1-conf", (CAROL_HZ, BOB_HZ))
    wait_heard(gw, tmp_path, "line2-conf", (HANDSET_HZ, BOB_HZ), line="2")
    time.sleep(1.5)
    gw.phone("1", "onhook")
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_hears("2", "busy", timeout=5)  # line 2's far end (line 1) hung up
    from hal.audio.wav import read_wav_8k

    pcm = read_wav_8k(bob.last_heard())
    tail = pcm[-2 * 8000 * 2:-2 * 8000 // 2]
    assert frequencies_present(tail, FREQS) == (HANDSET_HZ, CAROL_HZ)


def test_waiting_caller_gives_up_the_call_carries_on(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory, tmp_path: Path
) -> None:
    trunk, gw = setup
    bob_connected(trunk, gw, baresip_factory)
    carol = phone(trunk, baresip_factory, "301", CAROL_HZ)
    carol.dial(f"sip:{LINE_USER}@127.0.0.1:{trunk.port}")
    carol.wait_for_event("CALL_RINGING", timeout=10)
    gw.wait_until("carol waiting", lambda: len(gw.phone("1", "state")["calls"]) == 2, timeout=5)
    carol.hangup()  # CANCEL while waiting
    carol.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("back to one call", lambda: len(gw.phone("1", "state")["calls"]) == 1,
                  timeout=5)
    wait_heard(gw, tmp_path, "bob", (BOB_HZ,))
    gw.phone("1", "flash")  # nothing waits any more: a consultation dial tone, bob held
    gw.wait_dial_tone("1")
    assert len(gw.status()["calls"]) == 1


LOCAL_LINES = """
gateway: {{name: test-gw, country: US, state_dir: {state}}}
sip: {{listen: "127.0.0.1:{port}", rtp_ports: 30000-30999}}
lines:
  - {{name: "1", backend: sim, number: "101"}}
  - {{name: "2", backend: sim, number: "102"}}
  - {{name: "3", backend: sim, number: "103"}}
dialplan:
  digit_map: "(1xx)"
  routes:
    - {{pattern: "1\\\\d\\\\d", to: local}}
"""


def test_attended_transfer_of_two_local_lines_joins_them(tmp_path: Path) -> None:
    """Line 1 talks to line 2, flashes, calls line 3 and hangs up once 3 answers: lines 2
    and 3 are joined on the box and hear each other."""
    gw = GatewayProcess(tmp_path, LOCAL_LINES.format(state=tmp_path / "state", port=free_port()))
    gw.start()
    try:
        gw.phone("1", "offhook")
        gw.phone("1", "dial", digits="102")
        gw.wait_until("line 2 rings", lambda: gw.line("2")["state"] == "ringing", timeout=5)
        gw.phone("2", "offhook")
        gw.phone("2", "play", path=str(write_tone_wav(tmp_path / "2.wav", CAROL_HZ, -12.0)))
        wait_heard(gw, tmp_path, "l2", (CAROL_HZ,))
        gw.phone("1", "flash")
        gw.wait_dial_tone("1")
        gw.phone("1", "dial", digits="103")
        gw.wait_until("line 3 rings", lambda: gw.line("3")["state"] == "ringing", timeout=5)
        gw.phone("3", "offhook")
        gw.phone("3", "play", path=str(write_tone_wav(tmp_path / "3.wav", BOB_HZ, -12.0)))
        wait_heard(gw, tmp_path, "l3", (BOB_HZ,))
        gw.phone("1", "onhook")  # transfer
        gw.wait_until("line 1 idle", lambda: gw.line("1")["state"] == "idle", timeout=5)
        wait_heard(gw, tmp_path, "2-hears-3", (BOB_HZ,), line="2")
        wait_heard(gw, tmp_path, "3-hears-2", (CAROL_HZ,), line="3")
        assert gw.line("1")["state"] == "idle" and gw.line("1")["call_id"] is None
        gw.phone("2", "onhook")
        gw.wait_hears("3", "busy", timeout=5)
        gw.phone("3", "onhook")
        gw.wait_until("no calls", lambda: not gw.status()["calls"], timeout=5)
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]


def test_held_party_hangs_up_during_the_consultation(
    setup: tuple[KamailioTrunk, GatewayProcess], baresip_factory: BaresipFactory
) -> None:
    trunk, gw = setup
    bob = bob_connected(trunk, gw, baresip_factory)
    gw.phone("1", "flash")  # bob held, dial tone
    gw.wait_dial_tone("1")
    gw.wait_until("bob held", lambda: len(held_calls(gw)) == 1, timeout=5)
    bob.hangup()  # BYE for the held call, not the line's current one
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("held call gone", lambda: not gw.status()["calls"], timeout=5)
    state = gw.phone("1", "state")
    assert state["state"] == "dial-tone" and state["calls"] == [], state
    gw.phone("1", "onhook")  # nothing held: no recall
    gw.wait_until("line idle", lambda: gw.line("1")["state"] == "idle", timeout=5)
    time.sleep(1.0)
    assert gw.line("1")["state"] == "idle" and not gw.line("1")["ringing"]
