"""The FXO port with a SIP phone (baresip registered to the box as a local phone):

- a call ringing on the simulated exchange line goes to the phone (`inbound: local`) with
  the caller ID as the From number; answered, audio flows both ways (frequencies checked),
  and the far end's busy tone ends it;
- the phone calls a number routed `to: [trunk:main, fxo:pstn]` with the trunk down: the
  exchange line dials it (the digits heard are the number), audio flows both ways.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.dsp.analysis import dominant_frequency
from hal.audio.wav import read_wav_8k

from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.baresip import Baresip
from .peers.ports import free_port

pytestmark = [pytest.mark.peers, pytest.mark.slow]

PASSWORD = "phone-201-Secret"
PHONE_HZ, FAR_HZ = 600, 1200.0


def config(tmp: Path, sip_port: int, dead_trunk: int) -> str:
    return f"""
gateway: {{name: fxo-sip, country: US, state_dir: {tmp / 'state'}}}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 33500-33899
  codecs: [PCMU, PCMA]
security:
  digest_algorithms: [MD5]
trunks:
  - name: main
    registrar: 127.0.0.1:{dead_trunk}
    expires: 60
    failover_timeout: 1.0
lines:
  - name: pstn
    type: fxo
    backend: sim
    number: "5550100"
    options: {{inbound: local, inbound_number: "201", far_tone_hz: {FAR_HZ:g}}}
sip_phones:
  - {{user: "201", password: {PASSWORD}}}
dialplan:
  digit_map: "(2xx|[3-9]xxxxxx)"
  routes:
    - {{pattern: '2\\d\\d', to: local}}
    - {{pattern: '[3-9]\\d{{6}}', to: ["trunk:main", "fxo:pstn"]}}
"""


@pytest.fixture
def setup(tmp_path: Path, baresip_factory: BaresipFactory
          ) -> Iterator[tuple[GatewayProcess, Baresip, int]]:
    sip_port = free_port()
    gw = GatewayProcess(tmp_path, config(tmp_path, sip_port, free_port()))
    gw.start()
    try:
        phone = baresip_factory("201", registrar=f"127.0.0.1:{sip_port}", password=PASSWORD,
                                tone=PHONE_HZ)
        phone.wait_registered(timeout=10)
        yield gw, phone, sip_port
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]


def fxo(gw: GatewayProcess, action: str = "state", **args: object) -> dict[str, object]:
    result: dict[str, object] = gw.request("fxo", line="pstn", action=action, **args)
    return result


def exchange(gw: GatewayProcess) -> dict[str, object]:
    ex = fxo(gw)["exchange"]
    assert isinstance(ex, dict)
    return ex


def far_party_seconds(path: Path) -> float:
    """How long the phone heard the far party's tone (the call also carries ringback and
    busy tone from the exchange, as a real line does)."""
    pcm = read_wav_8k(path)
    chunk = 8000  # 0.5 s
    hits = sum(1 for i in range(0, len(pcm) - chunk + 1, chunk)
               if abs(dominant_frequency(pcm[i:i + chunk]) - FAR_HZ) <= 0.02 * FAR_HZ)
    return hits * 0.5


def exchange_hears(gw: GatewayProcess, hz: float) -> None:
    gw.wait_until(f"the exchange hears {hz:g} Hz",
                  lambda: abs(float(fxo(gw, "heard", seconds=0.4)["dominant_hz"]) - hz)
                  <= 0.02 * hz, timeout=8)


def test_exchange_call_rings_the_sip_phone_with_the_caller_id(
        setup: tuple[GatewayProcess, Baresip, int]) -> None:
    gw, phone, _ = setup
    fxo(gw, "ring", caller="5551234", name="ALICE", method="etsi_fsk_prering")
    incoming = phone.wait_for_event("CALL_INCOMING", timeout=10)
    assert "5551234" in str(incoming.get("peeruri", "")), incoming
    phone.accept()
    phone.wait_for_event("CALL_ESTABLISHED", timeout=10)
    gw.wait_until("the exchange line is answered",
                  lambda: exchange(gw)["state"] == "talking", timeout=5)
    exchange_hears(gw, PHONE_HZ)
    time.sleep(1.5)  # the phone records the far party meanwhile
    fxo(gw, "hangup", how="busy")
    phone.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("released", lambda: not exchange(gw)["off_hook"], timeout=5)
    assert far_party_seconds(phone.wait_recordings_closed()[-1]) >= 1.0


def test_sip_phone_call_goes_out_on_the_exchange_line_when_the_trunk_is_down(
        setup: tuple[GatewayProcess, Baresip, int]) -> None:
    gw, phone, sip_port = setup
    phone.dial(f"sip:5551234@127.0.0.1:{sip_port}")
    gw.wait_until("the exchange line is dialled",
                  lambda: exchange(gw)["digits"] == "5551234", timeout=12)
    phone.wait_for_event("CALL_ESTABLISHED", timeout=10)  # answered once dialled
    exchange_hears(gw, PHONE_HZ)
    gw.wait_until("the far party answers", lambda: exchange(gw)["state"] == "talking",
                  timeout=5)
    [call] = [c for c in gw.status()["calls"] if c["route"]]
    assert call["route"] == "fxo:pstn"
    # trunk:main failed (or trunk health skipped it as down), then fxo:pstn took it
    assert call["attempts"][-1]["target"] == "fxo:pstn", call["attempts"]
    time.sleep(1.5)
    phone.hangup()
    phone.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("released", lambda: exchange(gw)["state"] == "idle", timeout=5)
    assert exchange(gw)["calls"][-1]["number"] == "5551234"  # type: ignore[index]
    assert far_party_seconds(phone.wait_recordings_closed()[-1]) >= 1.0


def test_exchange_call_reaches_a_trunk_callee_with_the_caller_id(
        tmp_path: Path, kamailio_factory: KamailioFactory,
        baresip_factory: BaresipFactory) -> None:
    """`inbound: trunk:main`: an INVITE to inbound_number at the trunk, From = caller ID."""
    trunk = kamailio_factory(users={"300": "bob-pass-300"})
    text = config(tmp_path, free_port(), trunk.port).replace(
        "failover_timeout: 1.0", "failover_timeout: 1.0\n    health: {probe_interval: 3600}"
    ).replace('inbound: local, inbound_number: "201"', 'inbound: "trunk:main", '
              'inbound_number: "300"')
    gw = GatewayProcess(tmp_path, text)
    bob = baresip_factory("300", trunk=trunk, password="bob-pass-300", tone=PHONE_HZ)
    bob.wait_registered()
    gw.start()
    try:
        fxo(gw, "ring", caller="5551234", name="ALICE", method="etsi_fsk_prering")
        incoming = bob.wait_for_event("CALL_INCOMING", timeout=10)
        assert "5551234" in str(incoming.get("peeruri", "")), incoming
        invites = trunk.events("request", "INVITE")
        assert invites and invites[0].fields["from"].startswith("sip:5551234@"), invites
        assert exchange(gw)["state"] == "ringing"  # not picked up before bob answers
        bob.accept()
        bob.wait_for_event("CALL_ESTABLISHED", timeout=10)
        gw.wait_until("the exchange line is answered",
                      lambda: exchange(gw)["state"] == "talking", timeout=5)
        exchange_hears(gw, PHONE_HZ)
        time.sleep(1.5)
        fxo(gw, "hangup", how="loop")
        bob.wait_for_event("CALL_CLOSED", timeout=10)
        assert far_party_seconds(bob.wait_recordings_closed()[-1]) >= 1.0
    finally:
        assert gw.stop() == 0, gw.log_text()[-3000:]
