"""Survivability (issue 8, Must hold 1): the WAN drops, the branch keeps calling.

The gateway runs in a network namespace of its own, Kamailio (the trunk) and bob (a baresip
phone behind it) in a "wan" namespace, joined by a veth pair (tests/integration/netns.py,
survivability_env.py). One namespace pair with its Kamailio and bob is shared by the module;
every test starts its own gateway, modem emulator and local phones, and puts the WAN back
afterwards, so no test depends on another's state.

The WAN is dropped three ways: the gateway's veth end down, an nft drop on the input hooks,
and a blackhole route to the trunk. Detection is measured from the moment of the drop to the
moment `branchline status` shows the trunk down (polled every 20 ms), and the daemon's own
figure is read from its transition log line. Figures are printed (run with -s to see them);
the only timing assertion is the loose "under 5 s" that the issue asks for.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hal.sim.modem import ModemEmulator

from .audio import write_tone_wav
from .conftest import _log_tail, _test_failed, require_binary
from .gateway_proc import GatewayProcess
from .netns import DROP_KINDS, DropKind, NetnsUnavailable, netns_problem
from .peers.baresip import baresip_binary
from .peers.kamailio import kamailio_binary
from .peers.ports import free_port
from .survivability_env import (
    BOB,
    FAR_HZ,
    FAST_HEALTH,
    GSM_NUMBER,
    PHONES,
    Branch,
    health_state,
    modem_up,
    phone_registered_at_box,
    transitions,
    wait_for,
    wait_state,
)
from .test_first_call import assert_handset_hears_tone, wav_tone
from .test_gsm_calls import pcm_tone, tone

pytestmark = [pytest.mark.peers, pytest.mark.slow]

DETECTION_LIMIT = 5.0  # s; loose on purpose (the target, p99 < 2 s, is bench/failover's)
HANDSET_HZ = 440.0


def _require_netns() -> None:
    problem = netns_problem()
    if problem is not None:
        require_binary(f"network namespaces ({problem})", None)


@pytest.fixture(scope="module")
def branch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Branch]:
    _require_netns()
    require_binary("kamailio", kamailio_binary())
    require_binary("baresip", baresip_binary())
    try:
        shared = Branch.start(tmp_path_factory.mktemp("branch"))
    except NetnsUnavailable as exc:  # e.g. root without CAP_NET_ADMIN in a container
        require_binary(f"network namespaces ({exc})", None)
        raise
    try:
        yield shared
    finally:
        shared.close()


@pytest.fixture
def env(branch: Branch, request: pytest.FixtureRequest) -> Iterator[Branch]:
    """The shared branch, cleaned after the test: gateway and phones stopped, WAN back."""
    mark = branch.trunk.log_text()
    yield branch
    gateways = branch.stop_test_peers()
    if _test_failed(request):
        for gw in gateways:
            _log_tail(f"gateway {gw.dir.name} log", gw.log_text(), 12000)
        _log_tail("kamailio log (this test)", branch.trunk.log_text()[len(mark):])
    # The next test starts from the same place: WAN up, bob registered behind the trunk.
    assert not branch.pair.dropped, branch.pair.dropped
    assert branch.trunk.is_running and branch.trunk.registered(BOB), "bob lost his trunk"


@pytest.fixture
def emu() -> Iterator[ModemEmulator]:
    emulator = ModemEmulator("ec25").start()
    try:
        yield emulator
    finally:
        emulator.stop()


def _line_calls(gw_status: dict[str, object], line: str) -> list[dict[str, object]]:
    calls = gw_status.get("calls") or []
    assert isinstance(calls, list)
    return [c for c in calls if isinstance(c, dict) and c.get("line") == line]


def _gsm_call_with_audio(branch: Branch, gw: GatewayProcess, emu: ModemEmulator, tmp: Path,
                         name: str) -> None:
    """Answer the modem's outgoing call and check audio both ways on line 1."""
    emu.remote_answer()
    gw.wait_until("line 1 connected", lambda: gw.line("1")["state"] == "connected", timeout=5)
    emu.play_pcm(tone(FAR_HZ, -12.0, 6.0))
    assert_handset_hears_tone(gw, "1", FAR_HZ, tmp, f"{name}-far")
    src = write_tone_wav(tmp / f"{name}-h440.wav", HANDSET_HZ, -12.0)
    gw.phone("1", "play", path=str(src))
    time.sleep(0.5)
    emu.clear_heard()
    time.sleep(2.0)
    gw.phone("1", "stop")
    hz, _db = pcm_tone(emu.heard())
    assert abs(hz - HANDSET_HZ) <= 0.02 * HANDSET_HZ, f"GSM far end heard {hz:.1f} Hz"


def _kamailio_invites(branch: Branch, number: str) -> int:
    return sum(1 for e in branch.trunk.events("request", "INVITE")
               if e.fields.get("ruri", "").startswith(f"sip:{number}@"))


# ----------------------------------------------------------------- three WAN drops


@pytest.mark.parametrize("kind", DROP_KINDS)
def test_wan_drop_is_detected(env: Branch, tmp_path: Path, kind: DropKind,
                              record_property: Callable[[str, object], None]) -> None:
    """Each way of dropping the WAN takes the trunk DOWN in under 5 s (figure printed);
    one log line names the cause and the measured detection time; the WAN's return
    brings it back UP after the fail-back delay."""
    gw = env.gateway(tmp_path, env.gateway_yaml(tmp_path, free_port(), None,
                                                health=FAST_HEALTH))
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    wait_state(gw, "up", timeout=5)
    time.sleep(1.0)  # a few probes answered: the outage starts at a random probe phase
    before = len(transitions(gw))

    dropped = time.monotonic()
    env.pair.drop(kind)
    wait_state(gw, "down", timeout=15)
    seen = time.monotonic() - dropped
    wait_for("the transition's log line", lambda: len(transitions(gw)) > before, timeout=2)
    line = transitions(gw)[before]
    print(f"\n[{kind}] WAN drop seen in status after {seen:.2f} s; the daemon logged "
          f"'{line.group(0)}'")
    record_property("detection_seconds", round(seen, 3))
    record_property("daemon_detection_seconds", float(line["secs"]))
    assert (line["old"], line["new"]) in (("up", "down"), ("degraded", "down")), line.group(0)
    assert float(line["secs"]) < DETECTION_LIMIT, line.group(0)
    assert seen < DETECTION_LIMIT, f"[{kind}] detected after {seen:.2f} s"
    assert not gw.registered("1"), "the line's account still claims to be registered"

    restored = time.monotonic()
    env.pair.restore(kind)
    wait_state(gw, "up", timeout=20)
    back = time.monotonic() - restored
    print(f"[{kind}] fail-back: UP {back:.2f} s after the WAN returned "
          f"(failback_after {FAST_HEALTH['failback_after']} s)")
    gw.wait_until("line 1 registered again", lambda: gw.registered("1"), timeout=5)


# ------------------------------------------------------------------- calls via GSM


def test_after_detection_a_handset_call_goes_out_through_gsm_at_once(
    env: Branch, emu: ModemEmulator, tmp_path: Path,
) -> None:
    """With the trunk DOWN, a handset's call to a `[trunk:main, gsm:mobile]` route is
    dialled by the modem without an INVITE to the trunk, and carries audio both ways.

    The drop is an nft rule on the gateway's input only, so Kamailio still logs what the
    gateway sends: no INVITE for the number proves the trunk was skipped."""
    gw = env.gateway(tmp_path, env.gateway_yaml(tmp_path, free_port(), emu,
                                                health=FAST_HEALTH))
    gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
    wait_state(gw, "up", timeout=5)
    env.pair.nft_drop(at_wan=False, at_gw=True)
    wait_state(gw, "down", timeout=15)

    gw.phone("1", "offhook")
    gw.wait_hears("1", "dial")
    gw.phone("1", "dial", digits=GSM_NUMBER)
    took = wait_for("the modem to dial", lambda: [c.number for c in emu.calls] == [GSM_NUMBER])
    # The last digit goes out about 0.2 s after the dial command (simulated DTMF).
    print(f"\nwith the trunk down, ATD {took:.2f} s after the dial command")
    assert _kamailio_invites(env, GSM_NUMBER) == 0, "the trunk was tried although DOWN"
    _gsm_call_with_audio(env, gw, emu, tmp_path, "after-detection")
    emu.remote_hangup()
    gw.wait_hears("1", "busy", timeout=5)
    gw.phone("1", "onhook")


def test_during_the_detection_window_an_invite_timeout_fails_over_to_gsm(
    env: Branch, emu: ModemEmulator, tmp_path: Path,
) -> None:
    """Before health has noticed (slow probes), the call's INVITE goes to the trunk, gets
    no answer (the trunk's replies are dropped), and after `failover_timeout` (1.5 s) the
    same call is dialled by the modem and connects with audio."""
    slow = {"probe_interval": 3.0, "probe_timeout": 1.0, "misses": 5, "failback_after": 2.0}
    gw = env.gateway(tmp_path, env.gateway_yaml(tmp_path, free_port(), emu, health=slow,
                                                failover_timeout=1.5))
    gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
    wait_state(gw, "up", timeout=5)
    gw.phone("1", "offhook")
    gw.wait_hears("1", "dial")
    env.pair.nft_drop(at_wan=False, at_gw=True)  # Kamailio hears us; we never hear it
    gw.phone("1", "dial", digits=GSM_NUMBER)
    took = wait_for("the modem to dial after the INVITE timed out",
                    lambda: [c.number for c in emu.calls] == [GSM_NUMBER], timeout=10)
    state = health_state(gw)
    print(f"\nINVITE timeout -> GSM: ATD {took:.2f} s after the dial command; "
          f"trunk health then: {state}")
    assert _kamailio_invites(env, GSM_NUMBER) >= 1, "the trunk was never tried"
    assert state in ("up", "degraded"), f"health already {state}: not the detection window"
    assert gw.line("1")["state"] != "idle"
    gw.wait_hears("1", "ringback", timeout=5)  # never a reorder between the two targets
    _gsm_call_with_audio(env, gw, emu, tmp_path, "window")
    emu.remote_hangup()
    gw.wait_hears("1", "busy", timeout=5)
    gw.phone("1", "onhook")


# -------------------------------------------------------------- local SIP phones


def test_local_phones_call_the_analog_line_and_each_other_during_the_outage(
    env: Branch, tmp_path: Path,
) -> None:
    """With the WAN down, alice (a baresip registered to the box) calls analog line 1,
    line 1 calls her back, and carol (a second local phone) calls alice; audio is checked
    in both directions of each call."""
    port = free_port()
    gw = env.gateway(tmp_path, env.gateway_yaml(tmp_path, port, None, health=FAST_HEALTH,
                                                phones=True))
    env.pair.link_down()
    wait_state(gw, "down", timeout=15)
    alice = env.local_phone(tmp_path, "201", port)
    carol = env.local_phone(tmp_path, "202", port)
    alice.wait_registered()
    carol.wait_registered()
    assert phone_registered_at_box(gw, "201"), gw.status().get("phones")

    # alice -> analog line 1 (101).
    alice.dial(f"sip:101@127.0.0.1:{port}")
    gw.wait_until("line 1 ringing", lambda: gw.line("1")["state"] == "ringing", timeout=10)
    gw.phone("1", "offhook")
    alice.wait_for_event("CALL_ESTABLISHED", timeout=10)
    assert_handset_hears_tone(gw, "1", float(PHONES["201"][1]), tmp_path, "alice-to-1")
    src = write_tone_wav(tmp_path / "h440.wav", HANDSET_HZ, -12.0)
    gw.phone("1", "play", path=str(src))
    time.sleep(2.5)
    gw.phone("1", "stop")
    gw.phone("1", "onhook")
    alice.wait_for_event("CALL_CLOSED", timeout=10)
    hz, _ = wav_tone(alice.last_heard())
    assert abs(hz - HANDSET_HZ) <= 0.02 * HANDSET_HZ, f"alice heard {hz:.1f} Hz"
    time.sleep(1.1)  # recordings are named by the second

    # Line 1 -> alice (201): she answers by herself.
    gw.wait_until("line 1 idle", lambda: gw.line("1")["state"] == "idle", timeout=5)
    gw.phone("1", "offhook")
    gw.wait_hears("1", "dial")
    gw.phone("1", "dial", digits="201")
    alice.wait_for_event("CALL_ESTABLISHED", timeout=10)  # auto answer: no CALL_INCOMING
    assert_handset_hears_tone(gw, "1", float(PHONES["201"][1]), tmp_path, "1-to-alice")
    gw.phone("1", "play", path=str(src))
    time.sleep(2.5)
    gw.phone("1", "onhook")
    alice.wait_for_event("CALL_CLOSED", timeout=10)
    hz, _ = wav_tone(alice.last_heard())
    assert abs(hz - HANDSET_HZ) <= 0.02 * HANDSET_HZ, f"alice heard {hz:.1f} Hz"
    time.sleep(1.1)

    # carol (202) -> alice (201), through the box.
    carol.dial(f"sip:201@127.0.0.1:{port}")
    alice.wait_for_event("CALL_ESTABLISHED", timeout=10)
    carol.wait_for_event("CALL_ESTABLISHED", timeout=10)
    time.sleep(3.0)
    carol.hangup()
    alice.wait_for_event("CALL_CLOSED", timeout=10)
    carol.wait_for_event("CALL_CLOSED", timeout=10)
    hz, _ = wav_tone(alice.last_heard())
    assert abs(hz - PHONES["202"][1]) <= 0.02 * PHONES["202"][1], f"alice heard {hz:.1f} Hz"
    hz, _ = wav_tone(carol.last_heard())
    assert abs(hz - PHONES["201"][1]) <= 0.02 * PHONES["201"][1], f"carol heard {hz:.1f} Hz"
    assert health_state(gw) == "down"


# ---------------------------------------------------------------------- fail-back


def test_failback_keeps_the_gsm_call_and_new_calls_use_the_trunk(
    env: Branch, emu: ModemEmulator, tmp_path: Path,
) -> None:
    """The WAN returns during a GSM call: the call stays up with audio, the trunk is UP
    again after the fail-back delay, a new call goes over the trunk to bob, and the local
    phones' registrations reach Kamailio again."""
    port = free_port()
    gw = env.gateway(tmp_path, env.gateway_yaml(tmp_path, port, emu, health=FAST_HEALTH,
                                                phones=True))
    gw.wait_until("modem up", lambda: modem_up(gw), timeout=10)
    alice = env.local_phone(tmp_path, "201", port)
    alice.wait_registered()
    assert env.trunk.wait_registered("201", timeout=10), "alice was never relayed upstream"

    env.pair.nft_drop()
    wait_state(gw, "down", timeout=15)
    gw.phone("1", "offhook")
    gw.wait_hears("1", "dial")
    gw.phone("1", "dial", digits=GSM_NUMBER)
    wait_for("the modem to dial", lambda: [c.number for c in emu.calls] == [GSM_NUMBER])
    _gsm_call_with_audio(env, gw, emu, tmp_path, "before-failback")

    registers_before = len(env.trunk.reply_codes("REGISTER", "201"))
    restored = time.monotonic()
    env.pair.nft_restore()
    wait_state(gw, "up", timeout=20)
    print(f"\nfail-back: trunk UP {time.monotonic() - restored:.2f} s after the WAN returned")
    wait_for("alice's registration to reach Kamailio again",
             lambda: 200 in env.trunk.reply_codes("REGISTER", "201")[registers_before:],
             timeout=10)
    print(f"alice re-registered upstream {time.monotonic() - restored:.2f} s after the return")
    gw.wait_until("line 1's account registered again", lambda: gw.registered("1"), timeout=10)

    # The GSM call is still up, and still carries audio.
    assert gw.line("1")["state"] == "connected"
    assert [c.state for c in emu.calls] == ["active"]
    emu.play_pcm(tone(660.0, -12.0, 6.0))
    assert_handset_hears_tone(gw, "1", 660.0, tmp_path, "after-failback")

    # A new call uses the trunk: line 2 dials bob, no ATD.
    invites = _kamailio_invites(env, BOB)
    mark = env.bob.mark()
    gw.phone("2", "offhook")
    gw.wait_hears("2", "dial")
    gw.phone("2", "dial", digits=BOB)
    env.bob.wait_for_event("CALL_ESTABLISHED", timeout=10, since=mark)
    assert _kamailio_invites(env, BOB) > invites
    assert_handset_hears_tone(gw, "2", FAR_HZ, tmp_path, "trunk-after-failback")
    assert [c.number for c in emu.calls] == [GSM_NUMBER]  # no second ATD
    gw.phone("2", "onhook")
    env.bob.wait_for_event("CALL_CLOSED", timeout=10, since=mark)
    emu.remote_hangup()
    gw.wait_hears("1", "busy", timeout=5)
    gw.phone("1", "onhook")


# ------------------------------------------------------------ calls in transitions


def _handset_hears(gw: GatewayProcess, line: str, freq: float) -> bool:
    heard = gw.phone(line, "hears").get("dominant_hz") or 0.0
    return bool(abs(float(heard) - freq) <= 0.02 * freq)


def test_a_local_call_survives_failover_and_failback(env: Branch, tmp_path: Path) -> None:
    """alice (local phone) talks to line 1 while the WAN drops and returns: the call stays
    connected, and audio still flows both ways after the trunk is UP again."""
    port = free_port()
    gw = env.gateway(tmp_path, env.gateway_yaml(tmp_path, port, None, health=FAST_HEALTH,
                                                phones=True))
    wait_state(gw, "up", timeout=5)
    alice = env.local_phone(tmp_path, "201", port)
    alice.wait_registered()
    alice.dial(f"sip:101@127.0.0.1:{port}")
    gw.wait_until("line 1 ringing", lambda: gw.line("1")["state"] == "ringing", timeout=10)
    gw.phone("1", "offhook")
    alice.wait_for_event("CALL_ESTABLISHED", timeout=10)
    alice_hz = float(PHONES["201"][1])
    assert_handset_hears_tone(gw, "1", alice_hz, tmp_path, "local-before")

    env.pair.nft_drop()
    wait_state(gw, "down", timeout=15)
    time.sleep(1.0)
    assert gw.line("1")["state"] == "connected", "the local call ended at failover"
    gw.wait_until("alice still heard on line 1", lambda: _handset_hears(gw, "1", alice_hz),
                  timeout=5, interval=0.2)

    env.pair.nft_restore()
    wait_state(gw, "up", timeout=20)
    time.sleep(1.0)
    assert gw.line("1")["state"] == "connected", "the local call ended at fail-back"
    assert_handset_hears_tone(gw, "1", alice_hz, tmp_path, "local-after")
    src = write_tone_wav(tmp_path / "h440.wav", HANDSET_HZ, -12.0)
    gw.phone("1", "play", path=str(src))
    time.sleep(2.5)
    gw.phone("1", "onhook")
    alice.wait_for_event("CALL_CLOSED", timeout=10)
    hz, _ = wav_tone(alice.last_heard())
    assert abs(hz - HANDSET_HZ) <= 0.02 * HANDSET_HZ, f"alice heard {hz:.1f} Hz"


def test_a_trunk_call_whose_media_dies_in_the_outage_is_ended(
    env: Branch, tmp_path: Path,
) -> None:
    """Line 1 talks to bob over the trunk; the WAN drops (nft): after `sip.media_timeout`
    without RTP the call is ended, the handset hears a tone, and nothing is left hanging."""
    gw = env.gateway(tmp_path, env.gateway_yaml(tmp_path, free_port(), None,
                                                health=FAST_HEALTH, media_timeout=2.0))
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    mark = env.bob.mark()
    gw.phone("1", "offhook")
    gw.wait_hears("1", "dial")
    gw.phone("1", "dial", digits=BOB)
    env.bob.wait_for_event("CALL_ESTABLISHED", timeout=10, since=mark)
    assert_handset_hears_tone(gw, "1", FAR_HZ, tmp_path, "trunk-before")

    dropped = time.monotonic()
    env.pair.nft_drop()
    gw.wait_until("the call to end", lambda: not _line_calls(gw.status(), "1"), timeout=15)
    ended = time.monotonic() - dropped
    print(f"\ntrunk call without media ended {ended:.2f} s after the drop "
          f"(media_timeout 2.0 s)")
    gw.wait_until("reorder or busy tone on the handset",
                  lambda: gw.phone("1", "hears").get("what") in ("reorder", "busy"),
                  timeout=5, interval=0.2)
    assert "media timeout" in gw.log_text()
    assert gw.line("1")["state"] != "connected"
    gw.phone("1", "onhook")


# -------------------------------------------------------------------- no flapping

FLAP_SECONDS = 125.0


def test_no_flapping_with_20_percent_probe_loss(env: Branch, tmp_path: Path) -> None:
    """20 % of the gateway's packets dropped at random at the trunk's input for over two
    minutes: the trunk's health changes at most once a minute."""
    gw = env.gateway(tmp_path, env.gateway_yaml(tmp_path, free_port(), None,
                                                health=FAST_HEALTH))
    wait_state(gw, "up", timeout=5)
    before = len(transitions(gw))
    env.pair.loss(20)
    started = time.monotonic()
    states: dict[str, int] = {}
    while time.monotonic() - started < FLAP_SECONDS:
        state = health_state(gw) or "?"
        states[state] = states.get(state, 0) + 1
        time.sleep(0.5)
    dropped = env.pair.dropped_packets()
    env.pair.loss(0)
    seen = transitions(gw)[before:]
    minutes = FLAP_SECONDS / 60.0
    print(f"\n20 % loss for {FLAP_SECONDS:.0f} s: {dropped} packets dropped, "
          f"{len(seen)} transition(s): {[m.group(0) for m in seen]}; status samples {states}")
    assert dropped > 0, "the loss rule dropped nothing"
    assert len(seen) <= int(minutes), f"{len(seen)} transitions in {minutes:.1f} min"
    assert "?" not in states, "status shows no trunk health"
