"""The metrics collector (gateway.runtime.metrics) on a stand-in gateway's state, read back
with prometheus-client's own text parser; and the endpoint on the event loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.routing.targets import parse_target
from gateway.runtime.failover import Attempt, FailoverCalls
from gateway.runtime.metrics import (
    MetricsServer,
    SecurityEventCounter,
    build_registry,
    render,
    start_metrics,
)
from gateway.runtime.sip_calls import Registration
from gateway.runtime.trunk_health import TrunkHealthMonitor
from gateway.security.events import AUTH_FAILURE, UNKNOWN_SOURCE, log_event

SECRETS = ("line-password-1", "push-token-xyz", "digest-response-abc")


class FakeUa:
    """Enough of UserAgent for TrunkHealthMonitor: probes go nowhere."""

    def __init__(self) -> None:
        self.transport_listener = None
        self.sent = 0
        self.stats = {"received": 12, "sent": 30, "invalid": 1}

    def send_options(self, **_: Any) -> str:
        self.sent += 1
        return f"probe-{self.sent}"

    def trunk_down(self, account_id: str, now: float) -> None:
        pass

    def register_now(self, account_id: str, now: float) -> None:
        pass

    def table_sizes(self) -> dict[str, int]:
        return {"transactions": 3, "dialogs": 1}


class FakeMedia:
    def __init__(self, loss: float, jitter_ms: float, rx: int) -> None:
        self.figures = {"loss_fraction": loss, "jitter_ms": jitter_ms, "mos": 4.1,
                        "packets_received": rx, "packets_sent": rx + 5}

    def stats(self) -> dict[str, float]:
        return dict(self.figures)


def leg(port: str, kind: str, state: str, media: FakeMedia | None = None) -> SimpleNamespace:
    return SimpleNamespace(call_id=f"{kind}-{port}-id", kind=kind, state=state,
                           port=SimpleNamespace(name=port), media=media, peer=None)


class FakeModem:
    def status(self) -> dict[str, Any]:
        return {"name": "cell", "imei": "356938035643809", "sim": {"iccid": "8931"},
                "network": {"registered": True},
                "signal": {"rssi_dbm": -71, "rsrp_dbm": None, "rsrq_db": -9.5,
                           "sinr_db": None}}


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def stand_in(loop: asyncio.AbstractEventLoop) -> SimpleNamespace:
    ua = FakeUa()
    registrations = {
        "1": Registration("1", "main", "sip:gw@example.net", registered=True),
        "2": Registration("2", "backup", "sip:gw2@example.net", registered=False),
    }
    trunks = [SimpleNamespace(name="main", keepalive="options", domain="example.net"),
              SimpleNamespace(name="backup", keepalive="options", domain="example.net"),
              SimpleNamespace(name="quiet", keepalive="none")]
    proxy = SimpleNamespace(transport="udp", host="192.0.2.1", port=5060)
    health = TrunkHealthMonitor(trunks, ua, loop, lambda: None,  # type: ignore[arg-type]
                                proxy_targets={"main": (proxy,), "backup": (proxy,)},
                                accounts=registrations, use_netlink=False)
    health.start()
    a = leg("1", "sip", "connected", FakeMedia(0.02, 12.5, 400))
    b1, b2 = leg("2", "local", "connected"), leg("3", "local", "connected")
    b1.peer, b2.peer = b2, b1
    phone_leg = SimpleNamespace(media=FakeMedia(0.0, 3.0, 100))
    return SimpleNamespace(
        loop=loop, ua=ua, registrations=registrations, trunk_health=health,
        config=SimpleNamespace(lines=[SimpleNamespace(trunk=SimpleNamespace(
            password=SECRETS[0]))], push=SimpleNamespace(token=SECRETS[1])),
        calls={c.call_id: c for c in (a, b1, b2)},
        phone_ports={"201": SimpleNamespace(name="phone-201", leg=phone_leg)},
        call_counts={"answered": 7, "busy": 2, "failed": 1},
        failover_counts={"trunk:main": 3},
        sip=SimpleNamespace(stats={"sent": 30, "send_failures": 2}),
        edge=SimpleNamespace(stats={"authenticated": 5, "forbidden": 2},
                             limiter=SimpleNamespace(blocked=lambda now: ["203.0.113.7"])),
        route_guard=SimpleNamespace(denied={"premium": 1}),
        modems={"cell": FakeModem()},
        local_registrar=SimpleNamespace(status=lambda: [
            {"user": "201", "registered": True, "contacts": [{"contact": "sip:201@x"}]},
            {"user": "202", "registered": False, "contacts": []}]),
        pusher=SimpleNamespace(depth=4, delivered=9, dropped=1, overflowed=0, attempts=12,
                               last_error="503 Service Unavailable", last_error_at=1.8e9,
                               last_success_at=None, token=SECRETS[1]),
    )


def scrape(gw: Any, events: SecurityEventCounter | None = None) -> tuple[str, dict[str, Any]]:
    text = render(build_registry(gw, events, process=False)).decode()
    samples: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


def value(samples: dict[str, Any], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]  # type: ignore[no-any-return]


def test_registrations_and_trunk_health(loop: asyncio.AbstractEventLoop) -> None:
    gw = stand_in(loop)
    _, s = scrape(gw)
    assert value(s, "branchline_registration_registered", account="1", trunk="main") == 1
    assert value(s, "branchline_registration_registered", account="2", trunk="backup") == 0
    assert value(s, "branchline_trunk_health_state", trunk="main", state="up") == 1
    assert value(s, "branchline_trunk_health_state", trunk="main", state="down") == 0
    assert value(s, "branchline_trunk_health_state", trunk="quiet", state="unknown") == 1
    assert value(s, "branchline_trunk_probes_total", trunk="main", result="sent") >= 1
    gw.trunk_health.stop()


def test_trunk_going_down_moves_state_transitions_and_detection(
        loop: asyncio.AbstractEventLoop) -> None:
    gw = stand_in(loop)
    monitor = gw.trunk_health
    monitor.proxy_targets.pop("main")  # its probes now fail at once ("no address")
    t = loop.time()
    while monitor.state("main").value != "down":
        t += 0.5
        monitor._run(t)
        assert t < loop.time() + 300, "the trunk never went down"
    _, s = scrape(gw)
    assert value(s, "branchline_trunk_health_state", trunk="main", state="down") == 1
    assert value(s, "branchline_trunk_health_state", trunk="main", state="up") == 0
    assert value(s, "branchline_trunk_health_transitions_total", trunk="main", to="down") == 1
    assert value(s, "branchline_trunk_health_detection_seconds", trunk="main") > 0
    assert value(s, "branchline_trunk_health_state", trunk="backup", state="up") == 1
    monitor.stop()


def test_calls_outcomes_failovers_and_rtp(loop: asyncio.AbstractEventLoop) -> None:
    gw = stand_in(loop)
    _, s = scrape(gw)
    assert value(s, "branchline_calls_total", outcome="answered") == 7
    assert value(s, "branchline_calls_total", outcome="busy") == 2
    assert value(s, "branchline_failovers_total", target="trunk:main") == 3
    assert value(s, "branchline_calls_active") == 2  # one SIP call, one port-to-port call
    assert value(s, "branchline_call_legs_active", kind="local", state="connected") == 2
    assert value(s, "branchline_call_rtp_loss_ratio", line="1") == pytest.approx(0.02)
    assert value(s, "branchline_call_rtp_jitter_seconds", line="1") == pytest.approx(0.0125)
    assert value(s, "branchline_call_rtp_received_packets", line="1") == 400
    assert value(s, "branchline_call_rtp_jitter_seconds", line="phone-201") == \
        pytest.approx(0.003)
    assert ("branchline_call_rtp_loss_ratio", (("line", "2"),)) not in s  # no media
    gw.calls.clear()
    _, s = scrape(gw)
    assert value(s, "branchline_calls_active") == 0
    assert ("branchline_call_rtp_loss_ratio", (("line", "1"),)) not in s
    gw.trunk_health.stop()


def test_sip_security_modem_phones_push(loop: asyncio.AbstractEventLoop) -> None:
    gw = stand_in(loop)
    events = SecurityEventCounter()
    events.attach()
    try:
        log_event(AUTH_FAILURE, "203.0.113.7", 5060, method="REGISTER", user="100",
                  reason="bad password")
        log_event(AUTH_FAILURE, "203.0.113.7", 5060, method="REGISTER", user="101",
                  reason="bad password")
        log_event(UNKNOWN_SOURCE, "198.51.100.1", 5060, method="INVITE", reason="x")
        logging.getLogger("branchline.security").warning("not an event line")
    finally:
        events.detach()
    _, s = scrape(gw, events)
    assert value(s, "branchline_sip_messages_total", counter="received") == 12
    assert value(s, "branchline_sip_table_entries", table="transactions") == 3
    assert value(s, "branchline_sip_transport_total", counter="send_failures") == 2
    assert value(s, "branchline_security_events_total", kind="auth-failure") == 2
    assert value(s, "branchline_security_events_total", kind="unknown-source") == 1
    assert value(s, "branchline_sip_edge_requests_total", verdict="forbidden") == 2
    assert value(s, "branchline_security_blocked_sources") == 1
    assert value(s, "branchline_calls_denied_total", code="premium") == 1
    assert value(s, "branchline_modem_registered", modem="cell") == 1
    assert value(s, "branchline_modem_signal_rssi_dbm", modem="cell") == -71
    assert value(s, "branchline_modem_signal_rsrq_db", modem="cell") == -9.5
    assert ("branchline_modem_signal_rsrp_dbm", (("modem", "cell"),)) not in s
    assert value(s, "branchline_phones_registered") == 2 - 1
    assert value(s, "branchline_phone_registered", phone="202") == 0
    assert value(s, "branchline_push_queue_depth") == 4
    assert value(s, "branchline_push_dropped_total") == 1
    assert value(s, "branchline_push_attempts_total") == 12
    assert value(s, "branchline_push_last_error_timestamp_seconds") == 1.8e9
    assert ("branchline_push_last_success_timestamp_seconds", ()) not in s
    gw.trunk_health.stop()


def test_no_secret_or_identifier_in_the_exposition(loop: asyncio.AbstractEventLoop) -> None:
    gw = stand_in(loop)
    text, _ = scrape(gw)
    for secret in (*SECRETS, "356938035643809", "8931", "sip:gw@example.net", "sip-1-id"):
        assert secret not in text
    for line in text.splitlines():
        if not line.startswith("#"):
            assert line.startswith("branchline_"), line
    gw.trunk_health.stop()


def test_an_empty_gateway_scrapes_cleanly(loop: asyncio.AbstractEventLoop) -> None:
    """A daemon still starting (no agent, no health yet) gives the families, empty."""
    gw = SimpleNamespace(loop=loop, registrations={}, trunk_health=None, calls={}, ua=None,
                         edge=None, modems={}, local_registrar=None)
    _, s = scrape(gw)
    assert value(s, "branchline_calls_active") == 0
    assert value(s, "branchline_phones_registered") == 0


class _Failover(FailoverCalls):
    """Just the failover bookkeeping: placing the next target is a no-op here."""

    def __init__(self) -> None:
        self.tried: list[str] = []

    def _try_target(self, lp: Any, attempt: Attempt, now: float) -> None:
        self.tried.append(str(attempt.target))


def test_failover_counts_attempts_beyond_the_first() -> None:
    fo = _Failover()
    port = SimpleNamespace(name="1", machine=SimpleNamespace(
        call_ended=lambda *a: None))
    attempt = Attempt("1", "5551234", tuple(parse_target(t) for t in
                                            ("trunk:main", "trunk:backup", "gsm:cell")), 0.0)
    assert fo._target_failed(port, attempt, "timeout", 408, 1.0)  # type: ignore[arg-type]
    assert fo._target_failed(port, attempt, "rejected", 503, 2.0)  # type: ignore[arg-type]
    assert not fo._target_failed(port, attempt, "busy", 486, 3.0)  # type: ignore[arg-type]
    assert fo.failover_counts == {"trunk:main": 1, "trunk:backup": 1}
    assert fo.tried == ["trunk:backup", "gsm:cell"]


def test_endpoint_serves_metrics_and_refuses_other_paths() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gw = SimpleNamespace(loop=loop, registrations={}, trunk_health=None, calls={},
                             ua=None, edge=None, modems={}, local_registrar=None,
                             call_counts={"answered": 1},
                             config=SimpleNamespace(metrics=SimpleNamespace(
                                 listen=SimpleNamespace(host="127.0.0.1", port=0))))
        server = await start_metrics(gw)
        assert isinstance(server, MetricsServer) and server.port != 0

        async def get(path: str, method: str = "GET") -> tuple[str, bytes]:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            data = await reader.read()
            writer.close()
            head, _, body = data.partition(b"\r\n\r\n")
            return head.decode().split("\r\n")[0], body

        try:
            status, body = await get("/metrics")
            assert status == "HTTP/1.1 200 OK"
            names = {f.name for f in text_string_to_metric_families(body.decode())}
            assert {"branchline_calls", "process_cpu_seconds"} <= names
            status, body = await get("/metrics", "HEAD")
            assert status == "HTTP/1.1 200 OK" and body == b""
            assert (await get("/other"))[0].startswith("HTTP/1.1 404")
            assert (await get("/metrics", "POST"))[0].startswith("HTTP/1.1 405")
        finally:
            await server.close()
        gw.config = SimpleNamespace()  # no metrics: key -> no endpoint
        assert await start_metrics(gw) is None

    asyncio.run(main())


def test_push_figures_come_from_the_real_pusher(loop: asyncio.AbstractEventLoop) -> None:
    """The attribute names the collector reads are the Pusher's own (a rename breaks this)."""
    from gateway.runtime.push import Pusher

    pusher = Pusher(object(), "https://user:pw-in-url@crm.example.net/hooks",  # type: ignore[arg-type]
                    token=SECRETS[1])
    try:
        pusher.depth, pusher.delivered, pusher.last_success_at = 3, 5, 1.7e9
        gw = SimpleNamespace(loop=loop, pusher=pusher)
        text, s = scrape(gw)
        assert value(s, "branchline_push_queue_depth") == 3
        assert value(s, "branchline_push_delivered_total") == 5
        assert value(s, "branchline_push_last_success_timestamp_seconds") == 1.7e9
        assert SECRETS[1] not in text and "pw-in-url" not in text
    finally:
        pusher._executor.shutdown()


def test_a_restarted_endpoint_keeps_the_security_counts() -> None:
    """A reload that moves metrics.listen closes and starts the endpoint: counts go on."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        gw = SimpleNamespace(loop=loop, config=SimpleNamespace(metrics=SimpleNamespace(
            listen=SimpleNamespace(host="127.0.0.1", port=0))))
        first = await start_metrics(gw)
        assert first is not None
        log_event(AUTH_FAILURE, "203.0.113.9", 5060, method="REGISTER", user="1", reason="x")
        await first.close()
        second = await start_metrics(gw)
        assert second is not None
        try:
            log_event(AUTH_FAILURE, "203.0.113.9", 5060, method="REGISTER", user="1",
                      reason="x")
            assert second.security_events.counts["auth-failure"] == 2
            handlers = logging.getLogger("branchline.security").handlers
            assert handlers.count(second.security_events) == 1
        finally:
            await second.close()
        assert second.security_events not in logging.getLogger("branchline.security").handlers

    asyncio.run(main())
