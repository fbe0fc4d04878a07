"""Interop matrix (issue 3, item 3): the real daemon against real SIP peers.

Every cell is one call on simulated line 1, in one direction, hung up from one side, and in
between it checks audio, peer-initiated hold and resume, and DTMF both ways:

- the handset hears the far end's tone, silence while the far end holds, the tone again
  after resume (the simulated phone's `hears` report: dominant frequency and class);
- digits dialled on the handset arrive at the peer as RFC 4733 events, digits the peer
  sends arrive at the gateway (the daemon logs "media event DigitReceived" at debug);
- whoever hangs up, the other side sees the call end and the gateway frees the call.

Peers here: baresip behind Kamailio as a record-routing proxy (the BYE and re-INVITEs must
cross the proxy, which only works when the gateway keeps the Route set: loose routing), and
baresip addressed directly (a trunk whose registrar is baresip's own address, no
registration). sipp and linphone have their own modules and reuse the helpers below.

Gateway-initiated hold is not implemented in the daemon yet (no control action for it), so
only the peer holds here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from .audio import write_tone_wav
from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.baresip import Baresip
from .peers.kamailio import KamailioTrunk, TrunkEvent
from .peers.ports import free_port

pytestmark = [pytest.mark.peers, pytest.mark.slow]

LINE = "1"
LINE_NUMBER = "101"
LINE_USER = "gateway"
LINE_PASS = "gateway-secret"
PEER_USER = "300"
PEER_PASS = "peer-pass-300"
PEER_TONE_HZ = 1000.0
HANDSET_TONE_HZ = 440.0
_DIGIT_LOG = re.compile(r"media event DigitReceived\(digit='([0-9*#A-D!])'")


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class TrunkSpec:
    """One `trunks:` entry for the gateway YAML."""

    name: str
    registrar_port: int
    extra: str = ""


@dataclass(frozen=True)
class LineAccount:
    """A line's `trunk:` account (omitted for lines that only place calls on a trunk)."""

    trunk: str
    username: str
    password: str


def gateway_yaml(tmp: Path, sip_port: int, trunks: list[TrunkSpec],
                 account: LineAccount | None, default_trunk: str) -> str:
    """Gateway config: line 1 (number 101) and line 2, 3-digit numbers not 1xx go to a trunk."""
    trunk_text = "".join(
        f"""  - name: {t.name}
    registrar: 127.0.0.1:{t.registrar_port}
    expires: 60
    keepalive_interval: 1
{t.extra}"""
        for t in trunks
    )
    account_text = "" if account is None else f"""    trunk:
      name: {account.trunk}
      username: {account.username}
      password: {account.password}
"""
    return f"""
gateway:
  name: interop-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
  codecs: [PCMU, PCMA]
trunks:
{trunk_text}lines:
  - name: "{LINE}"
    backend: sim
    number: "{LINE_NUMBER}"
{account_text}  - name: "2"
    backend: sim
    number: "102"
dialplan:
  digit_map: "(1xx|[2-9]xx)"
  routes:
    - pattern: "1\\\\d\\\\d"
      to: local
    - pattern: "\\\\d+"
      to: trunk:{default_trunk}
"""



def poll(what: str, predicate: Callable[[], bool], timeout: float = 10.0,
         detail: Callable[[], str] = lambda: "") -> None:
    """Wait for a condition that is not the daemon's (a peer's event, a log line)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{detail()}")
        time.sleep(0.1)


def wait_hears_hz(gw: GatewayProcess, freq: float, timeout: float = 10.0) -> None:
    """The handset's earpiece is dominated by `freq` (within 2 %) at an audible level."""
    seen: list[object] = []

    def check() -> bool:
        report = gw.phone(LINE, "hears")
        seen.append((report.get("what"), report.get("dominant_hz"), report.get("level_dbfs")))
        hz = report.get("dominant_hz") or 0.0
        return abs(hz - freq) <= 0.02 * freq and (report.get("level_dbfs") or -99.0) > -40.0

    try:
        gw.wait_until(f"handset to hear {freq} Hz", check, timeout=timeout, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nheard (what, Hz, dBFS): {seen[-8:]}") from None


def wait_hears_silence(gw: GatewayProcess, timeout: float = 10.0) -> None:
    """The handset hears nothing: neither the far end's tone nor any second stream."""
    seen: list[object] = []

    def check() -> bool:
        report = gw.phone(LINE, "hears")
        seen.append((report.get("what"), report.get("dominant_hz"), report.get("level_dbfs")))
        return report.get("what") == "silence"

    try:
        gw.wait_until("handset to hear silence", check, timeout=timeout, interval=0.2)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nheard (what, Hz, dBFS): {seen[-8:]}") from None


def gateway_digits(gw: GatewayProcess) -> str:
    """Digits the gateway received as RFC 4733 events, from its debug log."""
    return "".join(_DIGIT_LOG.findall(gw.log_text()))


def wait_gateway_digits(gw: GatewayProcess, digits: str, timeout: float = 10.0) -> None:
    """`digits` arrived at the gateway (as the tail of everything it received)."""
    poll(f"gateway to receive DTMF {digits!r}", lambda: gateway_digits(gw).endswith(digits),
         timeout, lambda: f"received {gateway_digits(gw)!r}; log tail:\n{gw.log_text()[-3000:]}")


def rtp_packets_sent(gw: GatewayProcess) -> int:
    """RTP packets the gateway sent on line 1's call so far (0 without a call)."""
    calls = [c for c in gw.status()["calls"] if c["line"] == LINE]
    return int(calls[0]["stats"].get("packets_sent", 0)) if calls else 0


def wait_call_state(gw: GatewayProcess, state: str, timeout: float = 10.0) -> None:
    """Line 1 reaches `state` (connected, idle, ...)."""
    gw.wait_until(f"line {LINE} {state}", lambda: gw.line(LINE)["state"] == state, timeout)


def wait_line_ringing(gw: GatewayProcess, timeout: float = 15.0) -> None:
    """An incoming call rings line 1."""
    gw.wait_until(f"line {LINE} ringing",
                  lambda: bool(gw.line(LINE)["ringing"]) or gw.line(LINE)["state"] == "ringing",
                  timeout)


def wait_no_calls(gw: GatewayProcess, timeout: float = 10.0) -> None:
    """The gateway freed every call."""
    gw.wait_until("no calls left", lambda: not gw.status()["calls"], timeout)


def handset_hangs_up_after_far_end(gw: GatewayProcess) -> None:
    """After the far end hung up the handset hears busy (US profile), then goes on-hook."""
    gw.wait_hears(LINE, "busy", timeout=10)
    gw.phone(LINE, "onhook")
    wait_call_state(gw, "idle", timeout=5)


def call_events(trunk: KamailioTrunk, kind: str, method: str, call_id: str) -> list[TrunkEvent]:
    """BLTRUNK lines of one call (by Call-ID)."""
    return [e for e in trunk.events(kind, method) if e.fields.get("callid") == call_id]


def first_invite_call_id(trunk: KamailioTrunk) -> str:
    """Call-ID of the first INVITE the proxy saw (each test places one call)."""
    invites = trunk.events("request", "INVITE")
    assert invites, "no INVITE crossed the proxy"
    return invites[0].fields["callid"]


# --------------------------------------------------------------------------- baresip peers


@dataclass
class BaresipRig:
    """A gateway plus one baresip peer, wired for one topology."""

    gw: GatewayProcess
    peer: Baresip
    proxy: KamailioTrunk | None
    gateway_uri: str  # what the peer dials to reach line 1

    def peer_dials_gateway(self) -> None:
        self.peer.dial(self.gateway_uri)
        wait_line_ringing(self.gw)
        self.gw.phone(LINE, "offhook")
        self.peer.wait_for_event("CALL_ESTABLISHED", timeout=10)

    def gateway_dials_peer(self) -> None:
        self.gw.phone(LINE, "offhook")
        self.gw.wait_hears(LINE, "dial")
        self.gw.phone(LINE, "dial", digits=PEER_USER)
        self.peer.wait_for_event("CALL_INCOMING", timeout=15)
        self.peer.accept()
        self.peer.wait_for_event("CALL_ESTABLISHED", timeout=10)


@pytest.fixture(params=["kamailio-rr", "direct"])
def baresip_rig(request: pytest.FixtureRequest, tmp_path: Path,
                kamailio_factory: KamailioFactory,
                baresip_factory: BaresipFactory) -> Iterator[BaresipRig]:
    """kamailio-rr: both register on a record-routing Kamailio; direct: a trunk at baresip."""
    sip_port = free_port()
    proxy: KamailioTrunk | None = None
    if request.param == "kamailio-rr":
        proxy = kamailio_factory(users={LINE_USER: LINE_PASS, PEER_USER: PEER_PASS},
                                 record_route=True)
        peer = baresip_factory(PEER_USER, trunk=proxy, password=PEER_PASS, tone=PEER_TONE_HZ)
        config = gateway_yaml(tmp_path, sip_port, [TrunkSpec("main", proxy.port)],
                              LineAccount("main", LINE_USER, LINE_PASS), "main")
        gateway_uri = f"sip:{LINE_USER}@127.0.0.1:{proxy.port}"
    else:
        peer = baresip_factory(PEER_USER, tone=PEER_TONE_HZ)
        config = gateway_yaml(tmp_path, sip_port, [TrunkSpec("peer", peer.sip_port)],
                              None, "peer")
        gateway_uri = f"sip:{LINE_NUMBER}@127.0.0.1:{sip_port}"
    gw = GatewayProcess(tmp_path, config)
    gw.start()
    try:
        if proxy is not None:
            peer.wait_registered()
            gw.wait_until("line 1 registered", lambda: gw.registered(LINE), timeout=10)
        yield BaresipRig(gw, peer, proxy, gateway_uri)
    finally:
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])


@pytest.mark.parametrize("hangup", ["handset", "peer"])
@pytest.mark.parametrize("direction", ["out", "in"])
def test_baresip_call_hold_dtmf_hangup(baresip_rig: BaresipRig, direction: str, hangup: str,
                                       tmp_path: Path) -> None:
    rig, gw, peer = baresip_rig, baresip_rig.gw, baresip_rig.peer
    if direction == "out":
        rig.gateway_dials_peer()
    else:
        rig.peer_dials_gateway()
    wait_call_state(gw, "connected")

    # Audio both ways: the far end's tone in the earpiece, the handset's tone in the peer's
    # recording (checked after hang-up). baresip 1.0 stops its received-audio recording
    # when the call is put on hold, so the handset talks for 1.5 s before the hold.
    gw.phone(LINE, "play", path=str(write_tone_wav(tmp_path / "handset.wav", HANDSET_TONE_HZ)))
    wait_hears_hz(gw, PEER_TONE_HZ)
    time.sleep(1.5)

    # The far end holds: silence in the earpiece, no second stream; resume brings it back,
    # and the gateway talks again (its RTP packet count grows; baresip no longer records).
    peer.command("hold")
    wait_hears_silence(gw)
    peer.command("resume")
    wait_hears_hz(gw, PEER_TONE_HZ)
    assert gw.line(LINE)["state"] == "connected"
    sent_before = rtp_packets_sent(gw)
    gw.wait_until("gateway RTP flowing after resume",
                  lambda: rtp_packets_sent(gw) >= sent_before + 25, timeout=5)

    # DTMF: handset -> peer (RFC 4733 via the gateway), peer -> gateway.
    gw.phone(LINE, "stop")
    gw.phone(LINE, "dial", digits="42#")
    poll("peer to receive 42#", lambda: peer.received_dtmf() == "42#", 10,
         lambda: f"peer got {peer.received_dtmf()!r}")
    peer.send_dtmf("73*")
    wait_gateway_digits(gw, "73*")

    call_id = first_invite_call_id(rig.proxy) if rig.proxy is not None else ""
    if hangup == "handset":
        gw.phone(LINE, "onhook")
        peer.wait_for_event("CALL_CLOSED", timeout=10)
        wait_no_calls(gw)
        wait_call_state(gw, "idle", timeout=5)
    else:
        peer.hangup()
        peer.wait_for_event("CALL_CLOSED", timeout=10)
        wait_no_calls(gw)
        handset_hangs_up_after_far_end(gw)

    # What the peer heard: the handset's tone (baresip may start a new file on hold/resume).
    assert_peer_heard(peer.wait_recordings_closed(), HANDSET_TONE_HZ)

    if rig.proxy is not None:
        trunk = rig.proxy
        # Record-Route kept the proxy in the path: re-INVITEs (hold, resume) and the BYE
        # crossed it, and the far side's 200s came back through it.
        poll("BYE's 200 relayed by the proxy",
             lambda: 200 in [e.code for e in call_events(trunk, "relayed", "BYE", call_id)],
             5, lambda: "\n".join(str(e) for e in trunk.events()))
        invites = call_events(trunk, "request", "INVITE", call_id)
        ok_invites = [e for e in call_events(trunk, "relayed", "INVITE", call_id) if e.code == 200]
        assert len(invites) >= 3 and len(ok_invites) >= 3, (
            f"expected initial INVITE + hold + resume through the proxy, saw {invites}"
        )
        byes = call_events(trunk, "request", "BYE", call_id)
        assert len(byes) >= 1, "BYE did not cross the record-routing proxy"
        # No in-dialog request was refused by the proxy (a missing Route gets 404 there).
        refused = [e for e in trunk.events("reply") if e.fields.get("callid") == call_id]
        assert not refused, f"proxy refused in-dialog requests: {refused}"
        gw_port = str(_gateway_port(gw))
        senders = {e.fields.get("src", "").rsplit(":", 1)[-1] for e in byes}
        if hangup == "handset":
            assert gw_port in senders, f"BYE from the gateway ({gw_port}) not at proxy: {byes}"
        else:
            assert str(peer.sip_port) in senders, byes


def assert_peer_heard(recordings: list[Path], freq: float) -> None:
    """Some recording holds at least 0.5 s of `freq` (within 2 %)."""
    from .audio import active_segment, dominant_frequency, read_wav

    assert recordings, "the peer wrote no recording"
    heard: list[tuple[str, float, float]] = []
    for path in recordings:
        samples, rate = read_wav(path)
        active = active_segment(samples, rate, threshold=-45.0)
        if len(active) < rate // 2:
            heard.append((path.name, len(active) / rate, 0.0))
            continue
        middle = active[len(active) // 4: -len(active) // 4 or None]
        got = dominant_frequency(middle, rate)
        heard.append((path.name, len(active) / rate, got))
        if abs(got - freq) <= 0.02 * freq:
            return
    raise AssertionError(f"no recording holds {freq} Hz; (file, seconds, Hz): {heard}")


def _gateway_port(gw: GatewayProcess) -> int:
    """The gateway's SIP port, read back from its YAML."""
    m = re.search(r"listen: 127\.0\.0\.1:(\d+)", gw.config_path.read_text())
    assert m is not None
    return int(m.group(1))
