"""SIP -> FXO: a PBX on a trunk (sipp) calls a number the dial plan routes to `fxo:pstn`,
through the real daemon and the simulated exchange line.

Off by default (a trunk's calls leaving on the exchange line would make the box a free toll
relay); a trunk opts in with `allow_fxo: {lines, prefixes}`.

- allowed: the line is seized and dials the number (the exchange hears the digits), 180
  meanwhile, 200 only once the far party speaks (`answer: voice`; the exchange answers 2 s
  after the number is complete); the far party's tone goes exchange -> RTP -> sipp, which
  echoes it -> RTP -> exchange, where it is heard at its frequency and level; sipp's BYE
  releases the line;
- the exchange gives busy tone: 486 (the callee's verdict), the line released;
- a number outside the trunk's prefixes, and any number from a trunk without `allow_fxo`:
  403, the line never seized, ``call-denied`` logged and counted in the metrics.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from .conftest import require_binary
from .gateway_proc import GatewayProcess
from .peers.ports import free_port, free_sip_port, release
from .peers.sipp import SCENARIO_DIR, Sipp, sipp_binary
from .test_interop_sipp import assert_sipp_passed

pytestmark = [pytest.mark.peers]

FAR_HZ, FAR_DBFS = 1000.0, -16.0  # the sim exchange's far party
ALLOW = '    allow_fxo: {lines: [pstn], prefixes: ["555"]}\n'


class Rig:
    """The daemon with one trunk (sipp, `pbx`) and one exchange line (sim, `pstn`)."""

    def __init__(self, tmp: Path, allow: str) -> None:
        self.tmp = tmp
        self.sip_port, self.sipp_port, self.media_port = free_port(), free_port(), free_sip_port()
        self.metrics_port = free_port()
        self.gw = GatewayProcess(tmp, f"""
gateway: {{name: fxo-from-sip, country: US, state_dir: {tmp / 'state'}}}
sip:
  listen: 127.0.0.1:{self.sip_port}
  rtp_ports: 34000-34399
  codecs: [PCMU]
metrics:
  listen: 127.0.0.1:{self.metrics_port}
trunks:
  - name: pbx
    registrar: 127.0.0.1:{self.sipp_port}
    keepalive: none
{allow}lines:
  - {{name: kitchen, backend: sim, number: "101"}}
  - name: pstn
    type: fxo
    backend: sim
    number: "5550100"
    options: {{answer: voice, answer_after_ms: 2000, far_tone_hz: {FAR_HZ:g}}}
dialplan:
  digit_map: "(1xx)"
  routes:
    - {{pattern: '1\\d\\d', to: local}}
    - {{pattern: '\\d{{7,}}', to: "fxo:pstn"}}
""")
        self.sipps: list[Sipp] = []

    def call(self, scenario: str, number: str, **kwargs: object) -> Sipp:
        peer = Sipp(scenario, sip_port=self.sipp_port, media_port=self.media_port,
                    tmpdir=self.tmp, remote=f"127.0.0.1:{self.sip_port}", service=number,
                    timeout_s=15, **kwargs)  # type: ignore[arg-type]
        self.sipps.append(peer)
        return peer.start()

    def expect(self, number: str, status: int) -> Sipp:
        path = self.tmp / f"expect_{status}.xml"
        path.write_text((SCENARIO_DIR / "uac_expect_status.xml").read_text()
                        .replace("STATUS", str(status)))
        return self.call(str(path), number)

    def exchange(self) -> dict[str, object]:
        ex = self.gw.request("fxo", line="pstn")["exchange"]
        assert isinstance(ex, dict)
        return ex

    def close(self) -> None:
        for peer in self.sipps:
            peer.stop()
        self.gw.stop()
        release(self.sip_port, self.sipp_port, self.media_port, self.media_port + 1,
                self.metrics_port)


def make_rig(tmp: Path, allow: str) -> Iterator[Rig]:
    require_binary("sipp", sipp_binary())
    rig = Rig(tmp, allow)
    try:
        rig.gw.start()
        yield rig
    except BaseException:
        print(f"\n===== gateway log =====\n{rig.gw.log_text()[-6000:]}")
        for peer in rig.sipps:
            print(f"\n===== sipp {peer.scenario} =====\n{peer.report()}")
        raise
    finally:
        rig.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig(tmp_path, ALLOW)


@pytest.fixture
def closed_rig(tmp_path: Path) -> Iterator[Rig]:
    yield from make_rig(tmp_path, "")


def wait(what: str, cond: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def denied_metric(rig: Rig) -> float:
    url = f"http://127.0.0.1:{rig.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as reply:
        text = reply.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("branchline_calls_denied_total{")
               or line.startswith("branchline_calls_denied{"))


@pytest.mark.slow
def test_pbx_calls_out_on_the_exchange_line_with_audio(rig: Rig) -> None:
    peer = rig.call("uac_gsm_answered.xml", "5551234", pause_ms=3000)
    wait("the exchange line to be dialled", lambda: rig.exchange()["digits"] == "5551234",
         timeout=8)
    wait("180 at sipp", lambda: bool(peer.received("SIP/2.0 180")), timeout=5)
    wait("the exchange to ring the number", lambda: rig.exchange()["state"] == "ringback",
         timeout=5)
    assert not peer.received("SIP/2.0 200")  # answer: voice, not once dialled
    wait("the far party to answer", lambda: rig.exchange()["state"] == "talking", timeout=5)
    answered_at = time.monotonic()
    wait("200 at sipp", lambda: bool(peer.received("SIP/2.0 200")), timeout=5)
    took = time.monotonic() - answered_at
    time.sleep(1.5)  # the far party's tone: exchange -> RTP -> sipp echo -> RTP -> exchange
    heard = rig.gw.request("fxo", line="pstn", action="heard", seconds=1.0)
    print(f"\n200 OK {took:.2f} s after the far party answered; the exchange heard "
          f"{heard['dominant_hz']} Hz at {heard['level_dbfs']} dBFS back")
    assert abs(float(heard["dominant_hz"]) - FAR_HZ) <= 0.02 * FAR_HZ, heard
    assert abs(float(heard["level_dbfs"]) - FAR_DBFS) <= 3.0, heard
    assert_sipp_passed(peer, peer.wait(10))  # sipp hung up with BYE and got 200
    wait("the line released", lambda: rig.exchange()["state"] == "idle", timeout=5)
    calls = rig.exchange()["calls"]
    assert isinstance(calls, list) and calls[-1]["number"] == "5551234", calls
    assert calls[-1]["ended"] == "gateway hung up"
    assert "calling 5551234 via fxo pstn" in rig.gw.log_text()


def test_busy_tone_on_the_exchange_line_is_486_to_the_pbx(rig: Rig) -> None:
    rig.gw.request("fxo", line="pstn", action="busy-number", number="5550199")
    peer = rig.expect("5550199", 486)
    assert_sipp_passed(peer, peer.wait(12))
    wait("the line released", lambda: not rig.exchange()["off_hook"], timeout=3)
    assert rig.exchange()["calls"][-1]["number"] == "5550199"  # type: ignore[index]
    rig.gw.wait_until("calls gone", lambda: not rig.gw.status()["calls"], timeout=3)


def test_a_number_outside_the_trunks_prefixes_is_refused_without_seizing(rig: Rig) -> None:
    peer = rig.expect("0044207123456", 403)
    assert_sipp_passed(peer, peer.wait(10))
    ex = rig.exchange()
    assert ex["calls"] == [] and ex["digits"] == "" and not ex["off_hook"], ex
    assert "call-denied" in rig.gw.log_text()
    assert denied_metric(rig) >= 1


def test_a_trunk_without_allow_fxo_never_reaches_the_exchange_line(closed_rig: Rig) -> None:
    rig = closed_rig
    peer = rig.expect("5551234", 403)
    assert_sipp_passed(peer, peer.wait(10))
    ex = rig.exchange()
    assert ex["calls"] == [] and ex["digits"] == "" and not ex["off_hook"], ex
    log = rig.gw.log_text()
    assert "call-denied" in log and "fxo:pstn" in log, log[-3000:]
    assert denied_metric(rig) == 1
