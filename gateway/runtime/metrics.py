"""Prometheus metrics: the gateway's live state in the text exposition format (adapter).

Nothing here counts anything as it happens. `GatewayCollector` reads the state the daemon
already keeps (registrations, trunk health, the call table, the user agent's and the edge's
counters, modem status, the push queue...) at the moment Prometheus scrapes, so the figures
are the ones `branchline status` shows and no counter is scattered through the call code.

`MetricsServer` answers `GET /metrics` on `metrics.listen` (127.0.0.1:9467 in the docs)
from the daemon's own event loop: the gateway's state is read in one loop turn, so the
snapshot is consistent (no call ends half-way through a scrape) and no lock is taken; the
text is then formatted in a worker thread. Measured on a stand-in with 1,000 local phones
and 60 calls: 3.3 ms of reading on the loop, 6.4 ms of formatting off it.

Labels carry names only (lines, trunks, modems, phones, outcome, verdict...): never a
password, token, digest value, phone number or Call-ID. docs/metrics.md lists every metric.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("branchline.metrics")

HEALTH_STATES = ("up", "degraded", "down", "unknown")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: A scrape request larger than this (request line and headers) is refused.
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 5.0

_EVENT_KIND = re.compile(r"^SECURITY event=([a-z0-9-]+) ")


class SecurityEventCounter(logging.Handler):
    """Counts the SECURITY lines (gateway/security/events.py) by kind as they are logged.

    The events have one emission point, the ``branchline.security`` logger; counting there
    means the metric and the log (and fail2ban) always agree, with no counter in the edge.
    """

    def __init__(self) -> None:
        super().__init__(level=logging.NOTSET)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            found = _EVENT_KIND.match(record.getMessage())
        except Exception:  # noqa: BLE001  a bad record must not break logging
            return
        if found is not None:
            self.counts[found.group(1)] += 1

    def attach(self) -> None:
        from gateway.security.events import security_logger

        if self not in security_logger().handlers:
            security_logger().addHandler(self)

    def detach(self) -> None:
        from gateway.security.events import security_logger

        security_logger().removeHandler(self)


def _num(value: Any) -> float | None:
    """A finite number from a status field, or None (absent, None, not a number)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


class GatewayCollector(Collector):
    """Reads a running `Gateway` (or anything shaped like one) at scrape time."""

    def __init__(self, gw: Any, security_events: SecurityEventCounter | None = None) -> None:
        self.gw = gw
        self.security_events = security_events

    def collect(self) -> Iterable[Metric]:
        gw = self.gw
        now = gw.loop.time()
        yield from self._registrations(gw)
        yield from self._trunks(gw, now)
        yield from self._calls(gw, now)
        yield from self._sip(gw)
        yield from self._security(gw, now)
        yield from self._modems(gw)
        yield from self._sound_cards(gw)
        yield from self._phones(gw)
        yield from self._push(gw)

    # -- registrations and trunks ----------------------------------------------------------

    def _registrations(self, gw: Any) -> Iterator[Metric]:
        reg = GaugeMetricFamily(
            "branchline_registration_registered",
            "1 while the account (a line or phone relayed upstream) is registered with its "
            "trunk, else 0", labels=["account", "trunk"])
        for r in getattr(gw, "registrations", {}).values():
            reg.add_metric([str(r.account_id), str(r.trunk)], 1.0 if r.registered else 0.0)
        yield reg

    def _trunks(self, gw: Any, now: float) -> Iterator[Metric]:
        monitor = getattr(gw, "trunk_health", None)
        described: Mapping[str, Mapping[str, Any]] = \
            monitor.describe(now) if monitor is not None else {}
        state = GaugeMetricFamily(
            "branchline_trunk_health_state",
            "Trunk health: 1 for the trunk's current state (up, degraded, down; unknown when "
            "not probed), 0 for the others", labels=["trunk", "state"])
        entered = CounterMetricFamily(
            "branchline_trunk_health_transitions",
            "Health transitions of the trunk, by the state entered", labels=["trunk", "to"])
        detection = GaugeMetricFamily(
            "branchline_trunk_health_detection_seconds",
            "How long the last health transition took to detect (from the first sign of "
            "trouble or recovery to the transition)", labels=["trunk"])
        since = GaugeMetricFamily(
            "branchline_trunk_health_state_seconds",
            "Seconds the trunk has been in its current health state", labels=["trunk"])
        probes = CounterMetricFamily(
            "branchline_trunk_probes", "OPTIONS probes to the trunk, by result",
            labels=["trunk", "result"])
        rtt = GaugeMetricFamily("branchline_trunk_probe_rtt_seconds",
                                "Smoothed round-trip time of the trunk's answered probes",
                                labels=["trunk"])
        loss = GaugeMetricFamily("branchline_trunk_probe_loss_ratio",
                                 "Share of the trunk's probes unanswered in the health window",
                                 labels=["trunk"])
        for trunk, info in described.items():
            current = str(info.get("state", "unknown"))
            for s in HEALTH_STATES:
                state.add_metric([trunk, s], 1.0 if s == current else 0.0)
            for to, count in (info.get("entered") or {}).items():
                entered.add_metric([trunk, str(to)], float(count))
            last = info.get("last_transition") or {}
            found = _num(last.get("detection_time"))
            if found is not None:
                detection.add_metric([trunk], found)
            found = _num(info.get("for"))
            if found is not None:
                since.add_metric([trunk], found)
            for result, key in (("sent", "probes_sent"), ("answered", "probes_answered"),
                                ("missed", "probes_missed")):
                found = _num(info.get(key))
                if found is not None:
                    probes.add_metric([trunk, result], found)
            found = _num(info.get("rtt_ms"))
            if found is not None:
                rtt.add_metric([trunk], found / 1000.0)
            found = _num(info.get("loss"))
            if found is not None:
                loss.add_metric([trunk], found)
        yield from (state, entered, detection, since, probes, rtt, loss)

    # -- calls -----------------------------------------------------------------------------

    def _calls(self, gw: Any, now: float) -> Iterator[Metric]:
        outcomes = CounterMetricFamily(
            "branchline_calls", "Finished calls by outcome (answered, busy, no-answer, "
            "failed, cancelled, rejected), since the daemon started", labels=["outcome"])
        for outcome, count in sorted((getattr(gw, "call_counts", None) or {}).items()):
            outcomes.add_metric([str(outcome)], float(count))
        yield outcomes
        failovers = CounterMetricFamily(
            "branchline_failovers",
            "Outgoing call attempts moved on to the next target, by the target that failed",
            labels=["target"])
        for target, count in sorted((getattr(gw, "failover_counts", None) or {}).items()):
            failovers.add_metric([str(target)], float(count))
        yield failovers

        table: Mapping[str, Any] = getattr(gw, "calls", {})
        legs: Counter[tuple[str, str]] = Counter()
        seen: set[int] = set()
        active = 0
        for call in table.values():
            legs[(str(call.kind), str(call.state))] += 1
            peer = getattr(call, "peer", None)
            if peer is not None and id(peer) in seen:
                continue  # the other leg of a port-to-port call: one call
            seen.add(id(call))
            active += 1
        yield GaugeMetricFamily("branchline_calls_active",
                                "Calls in progress (a port-to-port call counts once)",
                                value=float(active))
        by_leg = GaugeMetricFamily("branchline_call_legs_active",
                                   "Call legs in the call table, by kind and state",
                                   labels=["kind", "state"])
        for (kind, st), count in sorted(legs.items()):
            by_leg.add_metric([kind, st], float(count))
        yield by_leg

        # RTP of the calls with media now (SIP legs, and the legs to local phones), by port.
        media: dict[str, dict[str, Any]] = {}
        for call in table.values():
            if getattr(call, "media", None) is not None:
                _worst(media, call.port.name, call.media.stats())
        for port in (getattr(gw, "phone_ports", None) or {}).values():
            leg = getattr(port, "leg", None)
            if leg is not None and getattr(leg, "media", None) is not None:
                _worst(media, port.name, leg.media.stats())
        families = {
            "loss": GaugeMetricFamily(
                "branchline_call_rtp_loss_ratio",
                "Share of expected RTP packets lost on the port's call now", labels=["line"]),
            "jitter": GaugeMetricFamily(
                "branchline_call_rtp_jitter_seconds",
                "Interarrival jitter (RFC 3550) of the port's call now", labels=["line"]),
            "mos": GaugeMetricFamily(
                "branchline_call_mos", "MOS estimate (E-model) of the port's call now",
                labels=["line"]),
            "rx": GaugeMetricFamily(
                "branchline_call_rtp_received_packets",
                "RTP packets received on the port's call so far", labels=["line"]),
            "tx": GaugeMetricFamily(
                "branchline_call_rtp_sent_packets",
                "RTP packets sent on the port's call so far", labels=["line"]),
        }
        for line, figures in sorted(media.items()):
            for key, field, scale in (("loss", "loss_fraction", 1.0),
                                      ("jitter", "jitter_ms", 0.001), ("mos", "mos", 1.0),
                                      ("rx", "packets_received", 1.0),
                                      ("tx", "packets_sent", 1.0)):
                found = _num(figures.get(field))
                if found is not None:
                    families[key].add_metric([line], found * scale)
        yield from families.values()

    # -- SIP -------------------------------------------------------------------------------

    def _sip(self, gw: Any) -> Iterator[Metric]:
        ua = getattr(gw, "ua", None)
        events = CounterMetricFamily(
            "branchline_sip_messages",
            "The SIP user agent's counters (received, sent, invalid, filtered, overload...)",
            labels=["counter"])
        tables = GaugeMetricFamily("branchline_sip_table_entries",
                                   "Entries in the SIP core's tables (transactions, dialogs, "
                                   "calls...)", labels=["table"])
        if ua is not None:
            for key, count in sorted(dict(ua.stats).items()):
                events.add_metric([str(key)], float(count))
            for key, size in sorted(ua.table_sizes().items()):
                tables.add_metric([str(key)], float(size))
        yield events
        yield tables
        transport = CounterMetricFamily(
            "branchline_sip_transport", "The SIP transports' counters (sent, send_failures, "
            "pings_sent...)", labels=["counter"])
        sip = getattr(gw, "sip", None)
        for key, count in sorted((getattr(sip, "stats", None) or {}).items()):
            found = _num(count)
            if found is not None:
                transport.add_metric([str(key)], found)
        yield transport

    # -- security --------------------------------------------------------------------------

    def _security(self, gw: Any, now: float) -> Iterator[Metric]:
        events = CounterMetricFamily(
            "branchline_security_events",
            "SECURITY log lines by kind (auth-failure, unknown-source, rate-limited, "
            "trunk-rate-limited, call-denied): what fail2ban reads", labels=["kind"])
        if self.security_events is not None:
            for kind, count in sorted(self.security_events.counts.items()):
                events.add_metric([kind], float(count))
        yield events
        edge = getattr(gw, "edge", None)
        verdicts = CounterMetricFamily(
            "branchline_sip_edge_requests",
            "Requests judged by the SIP edge (ACL, rate limits, digest auth), by verdict",
            labels=["verdict"])
        blocked = GaugeMetricFamily("branchline_security_blocked_sources",
                                    "Source addresses refused by the rate limiter now")
        if edge is not None:
            for key, count in sorted(edge.stats.items()):
                verdicts.add_metric([str(key)], float(count))
            limiter = getattr(edge, "limiter", None)
            if limiter is not None:
                blocked.add_metric([], float(len(limiter.blocked(now))))
        yield verdicts
        yield blocked
        denied = CounterMetricFamily(
            "branchline_calls_denied", "Calls refused by route permissions (toll-fraud "
            "defence), by code", labels=["code"])
        guard = getattr(gw, "route_guard", None)
        for code, count in sorted((getattr(guard, "denied", None) or {}).items()):
            denied.add_metric([str(code)], float(count))
        yield denied

    # -- modems, phones, push --------------------------------------------------------------

    def _modems(self, gw: Any) -> Iterator[Metric]:
        registered = GaugeMetricFamily(
            "branchline_modem_registered",
            "1 while the modem is registered on a mobile network, else 0", labels=["modem"])
        signal = {
            key: GaugeMetricFamily(f"branchline_modem_signal_{key}",
                                   f"The modem's last reported {what}", labels=["modem"])
            for key, what in (("rssi_dbm", "received signal strength (RSSI), dBm"),
                              ("rsrp_dbm", "LTE reference signal power (RSRP), dBm"),
                              ("rsrq_db", "LTE reference signal quality (RSRQ), dB"),
                              ("sinr_db", "signal to interference and noise ratio, dB"))
        }
        for name, driver in sorted((getattr(gw, "modems", None) or {}).items()):
            st = driver.status()
            net = st.get("network") or {}
            registered.add_metric([name], 1.0 if net.get("registered") else 0.0)
            for key, family in signal.items():
                found = _num((st.get("signal") or {}).get(key))
                if found is not None:
                    family.add_metric([name], found)
        yield registered
        yield from signal.values()

    def _sound_cards(self, gw: Any) -> Iterator[Metric]:
        """The ALSA cards under the hardware lines (hal/audio/alsa.py `AlsaAudio.stats`)."""
        under = CounterMetricFamily("branchline_sound_card_underruns",
                                    "Times the line's sound card ran dry on playback",
                                    labels=["line"])
        over = CounterMetricFamily("branchline_sound_card_overruns",
                                   "Times the line's sound card overflowed on capture",
                                   labels=["line"])
        latency = GaugeMetricFamily("branchline_sound_card_latency_seconds",
                                    "Audio queued in and for the card, by direction",
                                    labels=["line", "direction"])
        ppm = GaugeMetricFamily("branchline_sound_card_clock_ppm",
                                "The card's clock against the loop clock (positive: fast)",
                                labels=["line"])
        fixed = CounterMetricFamily("branchline_sound_card_drift_samples",
                                    "Samples added or dropped to follow the card's clock",
                                    labels=["line", "kind"])
        for name, lp in sorted((getattr(gw, "lines", None) or {}).items()):
            stats = getattr(getattr(getattr(lp, "port", None), "codec", None), "stats", None)
            if not callable(stats):
                continue  # simulated or null lines have no sound card
            st = stats()
            under.add_metric([name], float(st.get("underruns", 0)))
            over.add_metric([name], float(st.get("overruns", 0)))
            latency.add_metric([name, "out"], float(st.get("playback_latency_ms", 0)) / 1000)
            latency.add_metric([name, "in"], float(st.get("capture_latency_ms", 0)) / 1000)
            if (card_ppm := _num(st.get("card_ppm"))) is not None:
                ppm.add_metric([name], card_ppm)
            fixed.add_metric([name, "added"], float(st.get("samples_added", 0)))
            fixed.add_metric([name, "dropped"], float(st.get("samples_dropped", 0)))
        yield from (under, over, latency, ppm, fixed)

    def _phones(self, gw: Any) -> Iterator[Metric]:
        local = getattr(gw, "local_registrar", None)
        entries = local.status() if local is not None else []
        per = GaugeMetricFamily("branchline_phone_registered",
                                "1 while the local SIP phone has a live registration, else 0",
                                labels=["phone"])
        for entry in entries:
            per.add_metric([str(entry.get("user"))], 1.0 if entry.get("registered") else 0.0)
        yield GaugeMetricFamily("branchline_phones_registered",
                                "Local SIP phones with a live registration",
                                value=float(sum(1 for e in entries if e.get("registered"))))
        yield per

    def _push(self, gw: Any) -> Iterator[Metric]:
        """The push of finished calls (gateway/runtime/push.py `Pusher`), when configured."""
        push = getattr(gw, "pusher", None)
        if push is None:
            return
        depth = _num(getattr(push, "depth", None))
        if depth is not None:
            yield GaugeMetricFamily("branchline_push_queue_depth",
                                    "Finished calls waiting to be pushed to the HTTP endpoint",
                                    value=depth)
        for key, name, doc in (
                ("delivered", "branchline_push_delivered",
                 "Call records the endpoint took (2xx)"),
                ("dropped", "branchline_push_dropped",
                 "Call records the endpoint refused for good (4xx other than 408/429)"),
                ("overflowed", "branchline_push_overflowed",
                 "Call records dropped because the queue passed push.max_queue"),
                ("attempts", "branchline_push_attempts", "POST requests made")):
            found = _num(getattr(push, key, None))
            if found is not None:
                yield CounterMetricFamily(name, doc, value=found)
        for key, name, doc in (
                ("last_success_at", "branchline_push_last_success_timestamp_seconds",
                 "When the endpoint last took a record (Unix time)"),
                ("last_error_at", "branchline_push_last_error_timestamp_seconds",
                 "When a delivery last failed (Unix time)")):
            family = GaugeMetricFamily(name, doc)
            found = _num(getattr(push, key, None))
            if found is not None:
                family.add_metric([], found)
            yield family


def _worst(media: dict[str, dict[str, Any]], line: str, stats: Mapping[str, Any]) -> None:
    """Keep the worse of two calls' figures on one port (a call on hold and a new one)."""
    have = media.get(line)
    if have is None or (_num(stats.get("loss_fraction")) or 0.0) > \
            (_num(have.get("loss_fraction")) or 0.0):
        media[line] = dict(stats)


def build_registry(gw: Any, security_events: SecurityEventCounter | None = None, *,
                   process: bool = True) -> CollectorRegistry:
    """A registry holding only the gateway's collector (and the process's own figures)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GatewayCollector(gw, security_events))
    if process:
        ProcessCollector(registry=registry)
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The registry in the text exposition format (one consistent read)."""
    return generate_latest(registry)


class _Snapshot(Collector):
    """Families already read on the event loop, plus the process's own figures."""

    def __init__(self, families: list[Metric], process: Collector | None) -> None:
        self.families = families
        self.process = process

    def collect(self) -> Iterable[Metric]:
        yield from self.families
        if self.process is not None:
            yield from self.process.collect()


def format_snapshot(families: list[Metric], process: Collector | None = None) -> bytes:
    """Text exposition of a snapshot; safe in a worker thread (it reads only `families`
    and /proc)."""
    return generate_latest(_Snapshot(families, process))


class MetricsServer:
    """`GET /metrics` on the configured address, answered from the daemon's event loop."""

    def __init__(self, gw: Any, host: str, port: int,
                 security_events: SecurityEventCounter | None = None) -> None:
        self.host = host
        self.port = port
        self.security_events = security_events or SecurityEventCounter()
        self.collector = GatewayCollector(gw, self.security_events)
        self.process = ProcessCollector(registry=None)
        self._server: asyncio.base_events.Server | None = None
        self.scrapes = 0

    async def start(self) -> None:
        self.security_events.attach()
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]  # port 0 in tests: the one we got
        log.info("metrics on http://%s:%s/metrics", self.host, self.port)

    async def close(self) -> None:
        self.security_events.detach()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError,
                ConnectionError):
            writer.close()
            return
        status, body, ctype = await self._answer(head)
        writer.write(
            f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n".encode("ascii")
            + (b"" if head.startswith(b"HEAD ") else body))
        try:
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[str, bytes, str]:
        if len(head) > MAX_REQUEST_BYTES:
            return "431 Request Header Fields Too Large", b"", "text/plain"
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return "400 Bad Request", b"bad request\n", "text/plain"
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if method not in (b"GET", b"HEAD"):
            return "405 Method Not Allowed", b"GET /metrics\n", "text/plain"
        if target not in (b"/metrics", b"/"):
            return "404 Not Found", b"GET /metrics\n", "text/plain"
        try:
            # The gateway's state is read in this one loop turn (a consistent snapshot, a
            # few ms for a thousand phones); formatting it, the larger part, and reading
            # /proc happen in a worker thread so the 20 ms audio tick is not held up.
            families = list(self.collector.collect())
            body = await asyncio.to_thread(format_snapshot, families, self.process)
        except Exception:  # noqa: BLE001  a broken figure must not take the daemon down
            log.exception("metrics: scrape failed")
            return "500 Internal Server Error", b"scrape failed, see the log\n", "text/plain"
        self.scrapes += 1
        return "200 OK", body, CONTENT_TYPE


async def start_metrics(gw: Any) -> MetricsServer | None:
    """The metrics endpoint when the config has `metrics.listen`, started; else None."""
    settings = getattr(gw.config, "metrics", None)
    listen = getattr(settings, "listen", None)
    if listen is None:
        return None
    # One event counter for the daemon's life: a reload that moves the endpoint keeps it,
    # so the security counters do not restart at 0.
    events = getattr(gw, "_metrics_security_events", None)
    if not isinstance(events, SecurityEventCounter):
        events = SecurityEventCounter()
        gw._metrics_security_events = events
    server = MetricsServer(gw, listen.host, listen.port, events)
    try:
        await server.start()
    except OSError as exc:  # calls matter more than figures: run on without the endpoint
        server.security_events.detach()
        log.error("metrics: cannot listen on %s:%s: %s", listen.host, listen.port, exc)
        return None
    return server
