"""The metrics endpoint of the real daemon, scraped over HTTP and read with prometheus-client's
own text parser: a Kamailio trunk with the line registered and healthy, then a call to a
baresip far end that moves the call, active-call and RTP figures."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import BaresipFactory, KamailioFactory
from .gateway_proc import GatewayProcess
from .peers.kamailio import KamailioTrunk
from .peers.ports import free_port
from .test_first_call import call_auto_answering_bob

pytestmark = [pytest.mark.peers, pytest.mark.slow]

LINE_USER = "gateway"
LINE_PASS = "gateway-secret"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def config(trunk: KamailioTrunk, sip_port: int, metrics_port: int, tmp: Path) -> str:
    return f"""
gateway:
  name: test-gw
  country: US
  state_dir: {tmp / 'state'}
sip:
  listen: 127.0.0.1:{sip_port}
  rtp_ports: 31000-31999
  codecs: [PCMU, PCMA]
metrics:
  listen: 127.0.0.1:{metrics_port}
trunks:
  - name: main
    registrar: 127.0.0.1:{trunk.port}
    expires: 60
    keepalive_interval: 1
lines:
  - name: "1"
    backend: sim
    number: "101"
    trunk:
      name: main
      username: {LINE_USER}
      password: {LINE_PASS}
dialplan:
  digit_map: "(1xx|[2-9]xx)"
  routes:
    - pattern: "\\\\d+"
      to: trunk:main
"""


@pytest.fixture
def setup(tmp_path: Path, kamailio_factory: KamailioFactory
          ) -> Iterator[tuple[KamailioTrunk, GatewayProcess, int]]:
    trunk = kamailio_factory(users={LINE_USER: LINE_PASS, "300": "bob-pass-300"})
    port = free_port()
    gw = GatewayProcess(tmp_path, config(trunk, free_port(), port, tmp_path))
    gw.start()
    try:
        yield trunk, gw, port
    finally:
        code = gw.stop()
        if code not in (0, None):
            print(gw.log_text()[-6000:])


def scrape(port: int) -> tuple[str, Samples]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def get(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def test_scrape_registration_health_and_a_call(
        setup: tuple[KamailioTrunk, GatewayProcess, int],
        baresip_factory: BaresipFactory) -> None:
    trunk, gw, port = setup
    gw.wait_until("line 1 registered", lambda: gw.registered("1"), timeout=10)
    gw.wait_until("trunk probed", lambda: (get(scrape(port)[1], "branchline_trunk_probes_total",
                                                trunk="main", result="answered") or 0) > 0,
                  timeout=10)
    text, s = scrape(port)
    assert get(s, "branchline_registration_registered", account="1", trunk="main") == 1
    assert get(s, "branchline_trunk_health_state", trunk="main", state="up") == 1
    assert get(s, "branchline_trunk_health_state", trunk="main", state="down") == 0
    assert get(s, "branchline_calls_active") == 0
    assert (get(s, "branchline_sip_messages_total", counter="received") or 0) > 0
    assert get(s, "process_resident_memory_bytes") is not None
    answered_before = get(s, "branchline_calls_total", outcome="answered") or 0
    assert LINE_PASS not in text

    bob = call_auto_answering_bob(trunk, gw, baresip_factory)
    time.sleep(1.0)  # a second of media both ways
    _, during = scrape(port)
    assert get(during, "branchline_calls_active") == 1
    assert get(during, "branchline_call_legs_active", kind="sip", state="connected") == 1
    first_rx = get(during, "branchline_call_rtp_received_packets", line="1")
    assert first_rx is not None and first_rx > 10, first_rx
    assert (get(during, "branchline_call_rtp_sent_packets", line="1") or 0) > 10
    loss = get(during, "branchline_call_rtp_loss_ratio", line="1")
    assert loss is not None and 0 <= loss < 0.05, loss
    jitter = get(during, "branchline_call_rtp_jitter_seconds", line="1")
    assert jitter is not None and 0 <= jitter < 0.1, jitter
    time.sleep(0.5)
    later = get(scrape(port)[1], "branchline_call_rtp_received_packets", line="1")
    assert later is not None and later > first_rx  # read live at each scrape

    gw.phone("1", "onhook")
    bob.wait_for_event("CALL_CLOSED", timeout=10)
    gw.wait_until("call gone", lambda: not gw.status()["calls"], timeout=5)
    text, after = scrape(port)
    assert get(after, "branchline_calls_active") == 0
    assert get(after, "branchline_call_rtp_received_packets", line="1") is None
    assert get(after, "branchline_calls_total", outcome="answered") == answered_before + 1
    assert LINE_PASS not in text and "bob-pass-300" not in text
