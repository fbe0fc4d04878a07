"""Issue 11 must-hold 3: the running daemon keeps a lossy, jittery call continuous, and the
MOS it reports matches the E-model of the impairment.

The real `branchline run` daemon (sim line 1, registered to Kamailio) calls a baresip phone
that answers at once and sends a steady 1 kHz tone. The daemon's outbound proxy is
`impair_relay.py`, a SIP-aware relay in its own process: it stays in the dialog
(Record-Route), rewrites both SDPs so each peer sends its RTP and RTCP to it, and impairs the
media **both ways**: every RTP packet is dropped with probability 3 % or held 20 ms + U(0,
30 ms) (30 ms of jitter; packets 20 ms apart overtake each other when their delays differ
by more than 20 ms, about 5 % of them); RTCP gets the same delays, no loss. Seeded RNG, one
stream per direction and call. Neither peer is modified.

What is asserted, on the baresip -> handset direction:

- **Continuity.** The simulated handset records its earpiece (the frames the daemon plays
  it) for 10 s. A *gap* is a run of consecutive 10 ms windows whose RMS is more than 20 dB
  below the recording's median window RMS. The longest gap must be at most 60 ms, and
  (beyond the must-hold, which a call with no concealment at all would pass: a lost
  packet played as silence is a 20 ms gap) all quiet windows together at most 10 ms per
  packet the relay dropped.
- **MOS.** `branchline status` (during the call) and the call record (after it) both report
  a MOS within 0.3 of `mos(r_factor(delay, loss))` (the project's G.107 function), where
  loss is the share of baresip's packets the relay actually dropped, and delay is the
  relay's measured mean delay + 20 ms packetisation + the measured spread of its delays
  (99.5th - 0.5th percentile: the buffering that plays nearly every packet in time).
- The impairment happened (packets dropped and reordered both ways); the loss inside the
  score is the relay's: the call record's RTP loss within 0.5 and the status's effective
  loss (RTCP's count plus late discards) within 1 percentage point of the relay's drops
  (at 3 % loss the 0.3 MOS tolerance alone would let a score that ignores loss pass); the
  daemon's RTCP round trip lies between the relay's least delay both ways (40 ms: RTCP
  crossed it each way) and its most plus 60 ms.

Host stalls (CI runs three pytest processes on two cores): the relay asks for real-time
scheduling (it needs ~1 ms of CPU a second) and time-stamps arrivals in the kernel
(SO_TIMESTAMPNS), so a loaded host barely moves its own timing and what remains is seen:
late sends, packets left waiting in its socket, and the senders' RTP pacing spread
(baresip's, and the daemon's, whose pacing is its audio tick). A run whose checks fail
while such a stall was seen is reported and repeated once with a new call; the repeat is
asserted whatever its stalls, and a failure without a stall fails at once. The simulated
handset's recording counts frames, not wall time: a daemon tick stall over 100 ms makes
the daemon skip frames the recording cannot show as a gap, so skipped slots are reported
as a stall instead.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gateway.media.quality import mos, r_factor

from .audio import read_wav
from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .impair_relay import RelayProcess
from .peers.baresip import Baresip
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port
from .test_first_call import LINE_PASS, LINE_USER, gateway_config

pytestmark = [pytest.mark.peers, pytest.mark.slow]

IMPAIRMENT: dict[str, float | bool] = {"loss": 0.03, "base": 0.020, "jitter": 0.030}
RECORD_SECONDS = 10.0
WINDOW_MS = 10
QUIET_DB = 20.0
MAX_GAP_MS = 60.0
MOS_TOLERANCE = 0.3
# Beyond these the host, not the relay, disturbed the timing: the relay sent late or read
# late, or a sender's RTP pacing spread (normally a few ms on loopback) grew past a frame
# or two. The daemon's pacing is its audio tick; a stalled tick can skip earpiece frames.
STALL_RELAY_MS = 10.0
STALL_SENDER_MS = 40.0


def gaps_ms(samples: np.ndarray, rate: int) -> tuple[float, float]:
    """(longest, total) ms of 10 ms windows more than QUIET_DB below the median window:
    the longest run of consecutive quiet windows, and all quiet windows together."""
    n = rate * WINDOW_MS // 1000
    windows = samples[: samples.size // n * n].reshape(-1, n)
    rms = np.sqrt(np.mean(np.square(windows), axis=1))
    assert rms.size and float(np.median(rms)) > 0, "the handset heard nothing at all"
    quiet = rms < float(np.median(rms)) * 10 ** (-QUIET_DB / 20)
    longest = run = 0
    for q in quiet:
        run = run + 1 if q else 0
        longest = max(longest, run)
    return float(longest * WINDOW_MS), float(np.count_nonzero(quiet) * WINDOW_MS)


@dataclass(frozen=True)
class PathFigures:
    """What the relay did to one direction of one call, and how well it kept its timing."""

    received: int
    dropped: int
    reordered: int  # sent after a packet with a higher sequence number
    loss_pct: float  # dropped / received
    delay_mean_ms: float  # sent - kernel arrival, over the packets sent
    delay_spread_ms: float  # 99.5th minus 0.5th percentile of those delays
    relay_late_ms: float  # worst lateness of a send against its due time (relay stalls)
    read_lag_ms: float  # worst wait in the socket before the relay read a packet
    input_spread_ms: float  # spread of (arrival - RTP timestamp): the sender's own pacing

    @classmethod
    def of(cls, packets: list[dict[str, Any]], until: float | None = None) -> PathFigures:
        """Figures from the relay's packet records; ``until`` (wall clock) leaves out the
        packets that arrived after it, e.g. those still on their way at hang-up, which
        the receiver can never count as lost."""
        packets = [p for p in packets if not p.get("send_error")
                   and (until is None or p["arrival"] <= until)]
        if not packets:
            raise ValueError("the relay saw no RTP in this direction")
        ext: list[int] = []
        for p in packets:  # unwrap sequence numbers and timestamps in arrival order
            prev = ext[-1] if ext else p["seq"]
            ext.append(prev + ((p["seq"] - prev + 0x8000) % 0x10000 - 0x8000))
        t0 = packets[0]["ts"]
        transit = [p["arrival"] - (((p["ts"] - t0 + 0x80000000) % 0x100000000) - 0x80000000)
                   / 8000 for p in packets]
        sent = sorted((p["sent"], e) for p, e in zip(packets, ext, strict=True)
                      if p["sent"] is not None)
        top, reordered = None, 0
        for _, e in sent:
            if top is not None and e < top:
                reordered += 1
            top = e if top is None else max(top, e)
        delays: list[float] = sorted(p["sent"] - p["arrival"] for p in packets
                                     if p["sent"] is not None)
        late = [p["sent"] - p["due"] for p in packets if p["sent"] is not None]

        def pct(q: float) -> float:
            return delays[min(len(delays) - 1, round(q * (len(delays) - 1)))]

        dropped = len(packets) - len(delays)
        return cls(
            received=len(packets), dropped=dropped, reordered=reordered,
            loss_pct=100.0 * dropped / len(packets),
            delay_mean_ms=1000 * sum(delays) / max(1, len(delays)),
            delay_spread_ms=1000 * (pct(0.995) - pct(0.005)) if delays else 0.0,
            relay_late_ms=1000 * max(late, default=0.0),
            read_lag_ms=1000 * max(p["read_lag"] for p in packets),
            input_spread_ms=1000 * (max(transit) - min(transit)),
        )


@dataclass
class CallResult:
    """One call's figures: the handset's recording, the daemon's reports, the relay's."""

    gap_ms: float
    quiet_ms: float  # all quiet windows of the recording together
    status: dict[str, Any]  # calls[0] of `branchline status` near the end of the call
    record: dict[str, Any]  # the call record
    down: PathFigures  # baresip -> gateway
    up: PathFigures  # gateway -> baresip
    stalls: list[str]
    priority: str  # the relay's scheduling: SCHED_FIFO, nice -10 or normal

    @property
    def expected_delay_ms(self) -> float:
        return self.down.delay_mean_ms + 20.0 + self.down.delay_spread_ms

    @property
    def expected_mos(self) -> float:
        return mos(r_factor(self.expected_delay_ms, self.down.loss_pct))

    def failures(self) -> list[str]:
        """Every must-hold check this call missed, in words (empty: it passed)."""
        st, rtcp, rec = self.status["stats"], self.status["rtcp"], self.record
        out = []
        if self.gap_ms > MAX_GAP_MS:
            out.append(f"gap {self.gap_ms:.0f} ms > {MAX_GAP_MS:.0f} ms")
        # Beyond the must-hold's letter: a lost packet played as silence leaves a 20 ms
        # hole, within 60 ms, so the limit alone would pass with no concealment at all.
        # Concealed, an isolated loss leaves no quiet window; allow half a hole per drop.
        if self.quiet_ms > 10.0 * self.down.dropped:
            out.append(f"{self.quiet_ms:.0f} ms quiet in all for {self.down.dropped} "
                       "packets dropped: losses were not concealed")
        for where, value in (("status", st["mos"]), ("call record", rec.get("mos"))):
            if value is None or abs(value - self.expected_mos) > MOS_TOLERANCE:
                out.append(f"{where} MOS {value} vs E-model {self.expected_mos:.2f}")
        # the score is G.107 of the delay and loss the daemon reports beside it ...
        own = mos(r_factor(st["one_way_delay_ms"], st["effective_loss_pct"]))
        if abs(st["mos"] - own) > 0.02:
            out.append(f"status MOS {st['mos']:.2f} is not the E-model of its own delay "
                       f"and loss ({own:.2f})")
        # ... and that loss is the relay's (RTCP's count, plus late discards)
        if abs(rec.get("rtp_loss_pct", -99) - self.down.loss_pct) > 0.5:
            out.append(f"call record loss {rec.get('rtp_loss_pct')} % vs relay's "
                       f"{self.down.loss_pct:.2f} %")
        if abs(st["effective_loss_pct"] - self.down.loss_pct) > 1.0:
            out.append(f"status effective loss {st['effective_loss_pct']:.2f} % vs relay's "
                       f"{self.down.loss_pct:.2f} %")
        rtt = rtcp.get("rtt_ms")
        lo, hi = 2 * 1000 * IMPAIRMENT["base"], 2 * 1000 * (IMPAIRMENT["base"]
                                                           + IMPAIRMENT["jitter"]) + 60
        if not isinstance(rtt, float) or not lo <= rtt <= hi:
            out.append(f"RTT {rtt} ms outside {lo:.0f}-{hi:.0f} ms (relay both ways)")
        return out

    def describe(self) -> str:
        st, rec = self.status["stats"], self.record
        d, u = self.down, self.up
        return (
            f"relay down: {d.received} pkts, dropped {d.dropped} ({d.loss_pct:.2f} %), "
            f"reordered {d.reordered}, delay mean {d.delay_mean_ms:.1f} ms spread "
            f"{d.delay_spread_ms:.1f} ms; late {d.relay_late_ms:.1f} ms, read lag "
            f"{d.read_lag_ms:.1f} ms, baresip pacing spread {d.input_spread_ms:.1f} ms | "
            f"up: {u.received} pkts, dropped {u.dropped}, reordered {u.reordered}, daemon "
            f"pacing spread {u.input_spread_ms:.1f} ms\n"
            f"daemon: lost {st['lost']} late {st['late']} concealed {st['concealed_frames']}"
            f", jitter {st['jitter_ms']:.1f} ms, jb mean {st['jb_delay_mean_ms']:.1f} ms, "
            f"rtt {self.status['rtcp'].get('rtt_ms')} ms, one-way "
            f"{st['one_way_delay_ms']:.1f} ms, loss {st['effective_loss_pct']:.2f} %, "
            f"skipped slots {st['skipped_slots']}; MOS status {st['mos']:.2f} record "
            f"{rec.get('mos')} (loss {rec.get('rtp_loss_pct')} %) vs E-model "
            f"{self.expected_mos:.2f} ({self.expected_delay_ms:.0f} ms, "
            f"{d.loss_pct:.2f} %); longest gap {self.gap_ms:.0f} ms (quiet "
            f"{self.quiet_ms:.0f} ms in all); relay "
            f"scheduling {self.priority}; stalls: "
            f"{', '.join(self.stalls) or 'none'}"
        )


class Setup:
    """Kamailio, the relay (the daemon's outbound proxy), the daemon and baresip 300."""

    def __init__(self, tmp: Path, trunk: KamailioTrunk, relay: RelayProcess,
                 gw: GatewayProcess, bob: Baresip) -> None:
        self.tmp, self.trunk, self.relay, self.gw, self.bob = tmp, trunk, relay, gw, bob
        self.calls = 0

    def call(self) -> CallResult:
        """One call from line 1 to 300 with 10 s of the handset's earpiece recorded."""
        gw, bob = self.gw, self.bob
        self.calls += 1
        gw.phone("1", "offhook")
        gw.phone("1", "dial", digits="300")
        bob.wait_for_event("CALL_ESTABLISHED", timeout=15)
        gw.wait_until("call connected", lambda: gw.line("1")["state"] == "connected",
                      timeout=10)
        gw.wait_until("the handset hears 1 kHz",
                      lambda: abs((gw.phone("1", "hears").get("dominant_hz") or 0) - 1000)
                      <= 20, timeout=10, interval=0.2)
        wav = self.tmp / f"earpiece-{self.calls}.wav"
        gw.phone("1", "record", path=str(wav), seconds=RECORD_SECONDS)

        def rtcp() -> dict[str, Any]:
            calls = gw.status()["calls"]
            return dict(calls[0].get("rtcp") or {}) if calls else {}

        gw.wait_until("the earpiece recording and an RTCP round trip",
                      lambda: wav.exists() and rtcp().get("rtt_ms") is not None,
                      timeout=RECORD_SECONDS + 15, interval=0.25)
        status = dict(gw.status()["calls"][0])
        # what the relay got after this was still on its way when the call ended
        in_flight = time.time() - IMPAIRMENT["base"] - IMPAIRMENT["jitter"]
        gw.phone("1", "onhook")
        bob.wait_for_event("CALL_CLOSED", timeout=10)
        gw.wait_until("call gone", lambda: not gw.status()["calls"], timeout=5)
        records: list[dict[str, Any]] = []

        def recorded() -> bool:
            records[:] = gw.request("calls", limit=10)["calls"]
            return len(records) >= self.calls

        gw.wait_until("the call record", recorded, timeout=10)
        stats = self.relay.stats()
        (self.tmp / f"relay-{self.calls}.json").write_text(json.dumps(stats))
        sessions = stats["sessions"]
        assert len(sessions) == self.calls, f"relay saw {len(sessions)} calls' media"
        samples, rate = read_wav(wav)
        down = PathFigures.of(sessions[-1]["down"]["packets"], until=in_flight)
        up = PathFigures.of(sessions[-1]["up"]["packets"], until=in_flight)
        stalls = [f"relay {what} {ms:.0f} ms" for what, ms in (
            ("sent late", max(down.relay_late_ms, up.relay_late_ms)),
            ("read late", max(down.read_lag_ms, up.read_lag_ms))) if ms > STALL_RELAY_MS]
        stalls += [f"{who} RTP pacing spread {ms:.0f} ms" for who, ms in (
            ("baresip", down.input_spread_ms), ("daemon", up.input_spread_ms))
            if ms > STALL_SENDER_MS]
        if status["stats"]["skipped_slots"]:
            stalls.append(f"daemon skipped {status['stats']['skipped_slots']} send slots")
        return CallResult(*gaps_ms(samples, rate), status, records[-1], down, up,
                          stalls, self.relay.priority)


def favour(bob: Baresip) -> str:
    """Nice -10 for every thread of baresip, when allowed: it stands in for a far-end phone
    whose sending is on time, so its own stalls on a loaded host are not the impairment
    (Linux keeps nice per thread, and its audio threads already run). The daemon keeps
    its ordinary priority: its timing is part of what is tested."""
    proc = bob._proc  # the peer class names no pid
    if proc is None:
        return "not running"
    try:
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            os.setpriority(os.PRIO_PROCESS, int(tid), -10)
    except OSError as exc:
        return f"ordinary priority ({exc.strerror})"
    return "nice -10"


@pytest.fixture
def setup(tmp_path: Path, kamailio_factory: KamailioFactory,
          baresip_factory: BaresipFactory) -> Iterator[Setup]:
    trunk = kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300"})
    sip_port = free_port()
    relay = RelayProcess(sip_port, trunk.port, str(tmp_path / "relay.log"), **IMPAIRMENT)
    relay_port = relay.start()
    try:
        registrar = f"    registrar: 127.0.0.1:{trunk.port}\n"
        config = gateway_config(trunk, sip_port, tmp_path)
        assert registrar in config
        config = config.replace(registrar, f"{registrar}    proxy: 127.0.0.1:{relay_port}\n")
        gw = GatewayProcess(tmp_path, config)
        gw.start()
        try:
            bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=1000,
                                  answer_mode="auto", record=False)
            bob.wait_registered()
            print(f"relay scheduling {relay.priority}; baresip {favour(bob)}")
            gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
            yield Setup(tmp_path, trunk, relay, gw, bob)
        finally:
            code = gw.stop()
            if code not in (0, None):
                print(gw.log_text()[-6000:])
    finally:
        relay.stop()


def test_daemon_call_through_jitter_loss_and_reordering_stays_continuous_with_true_mos(
    setup: Setup,
) -> None:
    result = setup.call()
    print(f"call 1: {result.describe()}")
    if result.failures() and result.stalls:
        print(f"call 1 missed {result.failures()} with host stalls ({result.stalls}); "
              "one more call, asserted whatever happens")
        result = setup.call()
        print(f"call 2: {result.describe()}")
    d = result.down
    assert d.dropped > 0 and d.reordered > 0, result.describe()
    assert result.up.dropped > 0 and result.up.reordered > 0, result.describe()
    assert d.received >= 0.9 * RECORD_SECONDS / 0.020, result.describe()
    assert not math.isnan(result.expected_mos)
    assert not result.failures(), f"{result.failures()}\n{result.describe()}"
