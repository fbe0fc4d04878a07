"""Transport awareness and RFC 3263 failover of the pure user agent (fake clock)."""

from __future__ import annotations

from ua_wire import OFFER, drain, events, make_ua, raw_request, reply, requests, responses

from gateway.sip.events import CallEnded, CallProgress, RegistrationStateChanged
from gateway.sip.registration import AccountSettings
from gateway.sip.target import Outgoing, Target

LOCAL = ("127.0.0.1", 5060)
T1 = Target("udp", "127.0.0.1", 5080)
T2 = Target("udp", "127.0.0.1", 5090)


def _invite(ua, dest, now=0.0):  # type: ignore[no-untyped-def]
    return ua.invite(target_uri="sip:200@example.net", from_uri="sip:100@example.net",
                     dest=dest, sdp=OFFER, now=now)


def _run(ua, until, step=0.05):  # type: ignore[no-untyped-def]
    """Advance the fake clock, collecting what goes out at each deadline."""
    out = []
    now = 0.0
    while True:
        t = ua.get_timer()
        if t is None or t > until:
            return out
        now = max(now, t)
        ua.handle_timer(now)
        out.extend((now, o, m) for o, m in drain(ua))


def test_tcp_target_sets_via_contact_and_no_retransmission() -> None:
    ua = make_ua(LOCAL)
    call_id = _invite(ua, [Target("tcp", "127.0.0.1", 5080)])
    ((out, inv),) = requests(drain(ua), "INVITE")
    assert out == Outgoing(out.data, ("127.0.0.1", 5080), "tcp", None)
    assert (inv.headers.get("Via") or "").startswith("SIP/2.0/TCP ")  # type: ignore[union-attr]
    assert inv.headers.get("Contact") == "<sip:100@127.0.0.1:5060;transport=tcp>"
    later = _run(ua, 31.0)
    assert [m for _, _, m in later if getattr(m, "method", "") == "INVITE"] == []
    _run(ua, 40.0)  # Timer B still applies on a reliable transport
    assert CallEnded(call_id, "timeout", 408) in events(ua)


def test_tls_target_uses_transport_tls_contact_and_server_name() -> None:
    ua = make_ua(LOCAL, ports={"tls": 5061})
    _invite(ua, [Target("tls", "10.0.0.1", 5061, "sip.example.net")])
    ((out, inv),) = requests(drain(ua), "INVITE")
    assert (out.transport, out.server_name, out.dest) == ("tls", "sip.example.net",
                                                          ("10.0.0.1", 5061))
    assert (inv.headers.get("Via") or "").startswith("SIP/2.0/TLS 127.0.0.1:5061")  # type: ignore[union-attr]
    assert inv.headers.get("Contact") == "<sip:100@127.0.0.1:5061;transport=tls>"


def test_legacy_datagrams_to_send_still_pairs() -> None:
    ua = make_ua(LOCAL)
    _invite(ua, ("127.0.0.1", 5080))
    ((data, dest),) = ua.datagrams_to_send()
    assert dest == ("127.0.0.1", 5080) and data.startswith(b"INVITE ")


def test_silent_first_target_fails_over_within_two_seconds_and_sticks() -> None:
    ua = make_ua(LOCAL)
    call_id = _invite(ua, [T1, T2])
    assert [o.dest for o, _ in requests(drain(ua), "INVITE")] == [T1.addr]
    sent = _run(ua, 1.6)
    to_second = [(t, m) for t, o, m in sent if o.dest == T2.addr]
    assert len(to_second) == 1 and to_second[0][0] <= 2.0
    inv2 = to_second[0][1]
    # the first target's INVITE is abandoned: no more retransmissions to it
    after = _run(ua, 1.9)
    assert all(o.dest != T1.addr for _, o, _ in after)
    ua.receive_datagram(reply(inv2, 180), T2.addr, 1.9)
    assert CallProgress(call_id, 180, None) in events(ua)
    assert ua.stats["failovers"] == 1
    # the next call to the same trunk starts at the target that answered
    _invite(ua, [T1, T2], now=2.0)
    assert [o.dest for o, _ in requests(drain(ua), "INVITE")] == [T2.addr]


def test_503_moves_to_next_target_and_acks_the_503() -> None:
    ua = make_ua(LOCAL)
    _invite(ua, [T1, T2])
    ((_, inv),) = requests(drain(ua), "INVITE")
    ua.receive_datagram(reply(inv, 503), T1.addr, 0.1)
    out = drain(ua)
    assert [o.dest for o, _ in requests(out, "ACK")] == [T1.addr]
    assert [o.dest for o, _ in requests(out, "INVITE")] == [T2.addr]
    assert events(ua) == []


def test_transport_error_moves_to_next_target() -> None:
    ua = make_ua(LOCAL)
    _invite(ua, [Target("tcp", "127.0.0.1", 5080), Target("tcp", "127.0.0.1", 5090)])
    drain(ua)
    ua.transport_error(("127.0.0.1", 5080), 0.01, transport="tcp")
    assert [o.dest for o, _ in requests(drain(ua), "INVITE")] == [T2.addr]


def test_all_targets_failing_ends_the_call_with_the_last_status() -> None:
    ua = make_ua(LOCAL)
    call_id = _invite(ua, [T1, T2])
    ((_, inv),) = requests(drain(ua), "INVITE")
    ua.receive_datagram(reply(inv, 503), T1.addr, 0.1)
    ((_, inv2),) = requests(drain(ua), "INVITE")
    ua.receive_datagram(reply(inv2, 503), T2.addr, 0.2)
    assert events(ua) == [CallEnded(call_id, "rejected", 503)]


def test_registration_fails_over_then_returns_to_preferred_at_refresh() -> None:
    ua = make_ua(LOCAL)
    settings = AccountSettings(aor="sip:100@example.net", registrar_host="example.net",
                               targets=(T1, T2), expires=120, probe_interval=1000.0)
    ua.add_account("trunk", settings, 0.0)
    assert [o.dest for o, _ in requests(drain(ua), "REGISTER")] == [T1.addr]
    sent = _run(ua, 1.6)
    regs = [(t, m) for t, o, m in sent if o.dest == T2.addr and m.method == "REGISTER"]
    assert len(regs) == 1 and regs[0][0] <= 2.0
    ua.receive_datagram(reply(regs[0][1], 200, extra="Expires: 120"), T2.addr, 1.7)
    assert any(isinstance(e, RegistrationStateChanged) and e.registered for e in events(ua))
    # a call on the same trunk now goes to the working registrar first
    _invite(ua, [T1, T2], now=1.8)
    assert [o.dest for o, _ in requests(drain(ua), "INVITE")] == [T2.addr]
    # the refresh (at 60 s after 1.7) tries the preferred target again
    later = _run(ua, 62.0)
    refresh = [o.dest for _, o, m in later if getattr(m, "method", "") == "REGISTER"]
    assert refresh[0] == T1.addr


def test_request_over_tcp_is_answered_over_tcp_to_the_source() -> None:
    ua = make_ua(LOCAL)
    ua.receive_datagram(raw_request("OPTIONS", transport="TCP", src=("127.0.0.1", 40000)),
                        ("127.0.0.1", 40000), 0.0, transport="tcp")
    out = drain(ua)
    assert [(o.transport, o.dest) for o, _ in out] == [("tcp", ("127.0.0.1", 40000))]
    assert [r.status for r in responses(out)] == [200]
