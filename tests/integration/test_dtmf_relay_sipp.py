"""DTMF through the running daemon, with the length of every press checked on the wire.

sipp is the trunk (it answers the handset's call); the call's audio goes to an RTP socket
of this test (`-key rtp_port`), which reads the gateway's packets and sends its own:

- handset tones (60, 250 and 900 ms presses) -> RFC 4733 events on the wire: the digits in
  order, growing durations, three end packets, final duration the press length (rounded up
  to a 20 ms slot);
- RFC 4733 events from the far end (400 and 120 ms) and sipp's SIP INFO (Duration=400) ->
  tones in the handset's earpiece, recorded and measured by the DTMF detector;
- with ``sip.dtmf: info`` the same presses go out as three INFO requests whose Duration=
  is the press length, and no RFC 4733 event is sent.
"""

from __future__ import annotations

import re
import socket
import struct
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dsp import FRAME_BYTES
from gateway.dsp.dtmf import DtmfDetector, generate
from gateway.media.telephone_event import digit_to_event, event_to_digit

from .conftest import require_binary
from .gateway_proc import GatewayProcess
from .peers.sipp import sipp_binary
from .test_interop_matrix import LINE, poll, wait_call_state
from .test_interop_sipp import SIPP_USER, SippRig

pytestmark = [pytest.mark.peers, pytest.mark.slow]

DTMF_PT = 101
PRESSES = [("1", 60), ("5", 250), ("#", 900)]


class RtpPeer:
    """The far end's RTP: PCMU silence every 20 ms, RFC 4733 events on request, and a log
    of every packet the gateway sends."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.005)
        self.port = self.sock.getsockname()[1]
        self.received: list[tuple[int, bool, int, bytes]] = []  # pt, marker, timestamp, payload
        self.gateway: tuple[str, int] | None = None
        self._events: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def send_events(self, digits: list[tuple[str, int]]) -> None:
        """Queue far-end key presses (digit, ms), 200 ms apart."""
        with self._lock:
            self._events.extend(digits)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def events(self) -> dict[int, list[tuple[bool, int, bool, int]]]:
        """The gateway's telephone-events by RTP timestamp: (marker, event, end, duration)."""
        out: dict[int, list[tuple[bool, int, bool, int]]] = {}
        for pt, marker, ts, payload in list(self.received):
            if pt == DTMF_PT and len(payload) >= 4:
                ev, flags, dur = struct.unpack("!BBH", payload[:4])
                out.setdefault(ts, []).append((marker, ev, bool(flags & 0x80), dur))
        return out

    def _run(self) -> None:
        seq, ts, ssrc = 100, 5000, 0x1234ABCD
        silence = bytes([0xFF]) * 160
        plan: list[tuple[bytes, bool, int, bool]] = []  # payload, marker, ts, is_event
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                while True:
                    data, addr = self.sock.recvfrom(2048)
                    if len(data) >= 12:
                        self.gateway = self.gateway or addr
                        self.received.append((data[1] & 0x7F, bool(data[1] & 0x80),
                                              struct.unpack("!I", data[4:8])[0], data[12:]))
            except (TimeoutError, BlockingIOError):
                pass
            if time.monotonic() < next_at:
                continue
            next_at += 0.020
            if self.gateway is None:
                continue
            if not plan:
                with self._lock:
                    if self._events:
                        plan = self._event_plan(*self._events.pop(0), ts)
            step = plan.pop(0) if plan else None
            if step is not None and step[3]:
                payload, marker, ev_ts, _ = step
                packet = struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | DTMF_PT,
                                     seq, ev_ts, ssrc) + payload
            else:
                packet = struct.pack("!BBHII", 0x80, 0, seq, ts, ssrc) + silence
            self.sock.sendto(packet, self.gateway)
            seq = (seq + 1) & 0xFFFF
            ts = (ts + 160) & 0xFFFFFFFF

    @staticmethod
    def _event_plan(digit: str, ms: int, ts: int) -> list[tuple[bytes, bool, int, bool]]:
        """One press as RFC 4733 packets, one per 20 ms slot, then 200 ms of audio."""
        code = digit_to_event(digit)
        total = ms * 8
        out = [(struct.pack("!BBH", code, 10, elapsed), k == 0, ts, True)
               for k, elapsed in enumerate(range(160, total, 160))]
        end = (struct.pack("!BBH", code, 0x80 | 10, total), not out, ts, True)
        out += [end, end[:1] + (False,) + end[2:], end[:1] + (False,) + end[2:]]
        return out + [(b"", False, 0, False)] * 10


def _wav(path: Path, presses: list[tuple[str, int]], gap_ms: int = 300) -> Path:
    pcm = bytearray(bytes(2 * 8 * gap_ms))
    for digit, ms in presses:
        pcm += generate(digit, ms, -12.0)
        pcm += bytes(2 * 8 * gap_ms)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(pcm))
    return path


def _presses_in(path: Path) -> list[tuple[str, int]]:
    with wave.open(str(path), "rb") as w:
        pcm = w.readframes(w.getnframes())
    det = DtmfDetector()
    for i in range(0, len(pcm) - FRAME_BYTES + 1, FRAME_BYTES):
        det.feed(pcm[i : i + FRAME_BYTES])
    det.feed(bytes(FRAME_BYTES * 4))
    return [(e.digit, e.duration_ms) for e in det.ended()]


@pytest.fixture
def rig(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[SippRig, RtpPeer]]:
    require_binary("sipp", sipp_binary())
    rig = SippRig(tmp_path, account=False)
    mode = getattr(request, "param", "rfc4733")
    text = rig.gw.config_path.read_text()
    rig.gw.config_path.write_text(text.replace("  codecs: [PCMU, PCMA]\n",
                                               f"  codecs: [PCMU, PCMA]\n  dtmf: {mode}\n"))
    peer = RtpPeer()
    try:
        yield rig, peer
    finally:
        peer.close()
        failed = any(getattr(request.node, f"_peers_rep_{p}", None) is not None
                     and getattr(request.node, f"_peers_rep_{p}").failed
                     for p in ("setup", "call"))
        rig.close(failed)


def _call(rig: SippRig, peer: RtpPeer, scenario: str) -> GatewayProcess:
    rig.sipp(scenario, service=SIPP_USER, rtp_echo=False,
             extra_args=["-key", "rtp_port", str(peer.port)]).start()
    gw = rig.gw
    gw.start()
    gw.phone(LINE, "offhook")
    gw.wait_hears(LINE, "dial")
    gw.phone(LINE, "dial", digits=SIPP_USER)
    wait_call_state(gw, "connected", timeout=10)
    poll("the gateway's RTP", lambda: peer.gateway is not None, timeout=5)
    return gw


def test_rfc4733_both_ways_and_sip_info_in_with_press_lengths(
    rig: tuple[SippRig, RtpPeer], tmp_path: Path
) -> None:
    sipp_rig, peer = rig
    gw = _call(sipp_rig, peer, "uas_dtmf.xml")
    recording = tmp_path / "earpiece.wav"
    recorder = threading.Thread(
        target=lambda: gw.phone(LINE, "record", path=str(recording), seconds=11.0), daemon=True)
    recorder.start()

    # handset tones -> RFC 4733 on the wire
    gw.phone(LINE, "play", path=str(_wav(tmp_path / "keys.wav", PRESSES)), once=True)

    def ended() -> int:
        return sum(1 for pkts in peer.events().values() if sum(p[2] for p in pkts) >= 3)

    poll("three events with their end packets", lambda: ended() >= 3, timeout=8,
         detail=lambda: repr(peer.events()))
    events = sorted(peer.events().items())
    assert len(events) == 3, events
    for (digit, ms), (_, pkts) in zip(PRESSES, events, strict=True):
        assert {event_to_digit(p[1]) for p in pkts} == {digit}
        assert pkts[0][0] and not any(p[0] for p in pkts[1:]), "marker on the first only"
        durations = [p[3] for p in pkts]
        assert durations == sorted(durations), durations
        ends = [p for p in pkts if p[2]]
        assert len(ends) == 3 and pkts[-3:] == ends, pkts
        final_ms = ends[0][3] / 8
        print(f"press {digit} {ms} ms -> RFC 4733 event {final_ms:.0f} ms, {len(pkts)} packets")
        assert ms <= final_ms <= ms + 25, (digit, ms, final_ms)

    # RFC 4733 from the far end -> tones of that length for the handset; then sipp's INFO
    peer.send_events([("9", 400), ("*", 120)])
    recorder.join(20)
    assert recording.exists()
    heard = _presses_in(recording)
    print(f"handset heard {heard}")
    assert [d for d, _ in heard] == ["9", "*", "3"], heard
    for (_, got), want in zip(heard, (400, 120, 400), strict=True):
        assert want - 5 <= got <= want + 25, heard
    assert str(gw.phone(LINE, "hears").get("digits", "")).endswith("9*3")
    gw.phone(LINE, "onhook")


@pytest.mark.parametrize("rig", ["info"], indirect=True)
def test_sip_info_mode_sends_each_press_with_its_length(
    rig: tuple[SippRig, RtpPeer], tmp_path: Path
) -> None:
    sipp_rig, peer = rig
    gw = _call(sipp_rig, peer, "uas_dtmf_info.xml")
    sipp = sipp_rig.sipps[0]
    gw.phone(LINE, "play", path=str(_wav(tmp_path / "keys.wav", PRESSES)), once=True)
    poll("three INFO at sipp", lambda: len(sipp.received("INFO")) >= 3, timeout=8,
         detail=sipp.report)
    by_cseq = {}  # a retransmission (same CSeq) is the same press
    for msg in sipp.received("INFO"):
        cseq = re.search(r"(?im)^CSeq:\s*(\d+)", msg)
        assert cseq, msg
        by_cseq.setdefault(int(cseq.group(1)), msg)
    got = []
    for _, msg in sorted(by_cseq.items()):
        assert re.search(r"(?im)^Content-Type:\s*application/dtmf-relay", msg), msg
        signal = re.search(r"(?m)^Signal=(\S+)", msg)
        duration = re.search(r"(?m)^Duration=(\d+)", msg)
        assert signal and duration, msg
        got.append((signal.group(1), int(duration.group(1))))
    print(f"INFO sent: {got}")
    assert [d for d, _ in got] == [d for d, _ in PRESSES]
    for (_, ms), (_, sent) in zip(PRESSES, got, strict=True):
        assert ms - 5 <= sent <= ms + 5, got
    assert peer.events() == {}, "no RFC 4733 events in info mode"
    gw.phone(LINE, "onhook")
    assert sipp.wait(10) == 0, sipp.report()
