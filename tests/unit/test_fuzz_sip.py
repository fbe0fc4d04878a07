"""Fuzz targets (hypothesis) for the parser and for the UserAgent's transaction layer.

Bounded and derandomised so CI runs the same inputs every time and stays fast. Seeds are the
RFC 4475 torture messages (when present) plus a few valid requests and responses; inputs are
random bytes, mutated seeds and sequences of them fed with random clock steps.
"""

from __future__ import annotations

import math
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.sip.errors import SipParseError
from gateway.sip.events import IncomingCall
from gateway.sip.message import Request, Response, parse_message
from gateway.sip.ua import UserAgent
from gateway.sip.validate import validate_request

_TORTURE = Path(__file__).resolve().parents[1] / "data" / "rfc4475"

_VALID = [
    b"INVITE sip:102@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKa1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:100@127.0.0.2>;tag=f1\r\nTo: <sip:102@127.0.0.1>\r\n"
    b"Call-ID: c1@127.0.0.2\r\nCSeq: 1 INVITE\r\nContact: <sip:100@127.0.0.2>\r\n"
    b"Content-Type: application/sdp\r\nContent-Length: 62\r\n\r\n"
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.2\r\ns=-\r\nc=IN IP4 127.0.0.2\r\nt=0 0\r\n",
    b"CANCEL sip:102@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKa1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:100@127.0.0.2>;tag=f1\r\nTo: <sip:102@127.0.0.1>\r\n"
    b"Call-ID: c1@127.0.0.2\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n",
    b"ACK sip:102@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKa1;rport\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:100@127.0.0.2>;tag=f1\r\nTo: <sip:102@127.0.0.1>;tag=t1\r\n"
    b"Call-ID: c1@127.0.0.2\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
    b"BYE sip:102@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKb2\r\n"
    b"Max-Forwards: 70\r\nFrom: <sip:100@127.0.0.2>;tag=f1\r\nTo: <sip:102@127.0.0.1>;tag=t1\r\n"
    b"Call-ID: c1@127.0.0.2\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS sip:127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.2:5060;branch=z9hG4bKo3\r\n"
    b"Max-Forwards: 0\r\nFrom: <sip:p@127.0.0.2>;tag=o\r\nTo: <sip:127.0.0.1>\r\n"
    b"Call-ID: o3\r\nCSeq: 7 OPTIONS\r\nRequire: timer, foo\r\nContent-Length: 0\r\n\r\n",
    b"REGISTER sip:127.0.0.1 SIP/2.0\r\nv: SIP/2.0/UDP 127.0.0.2;branch=z9hG4bKr4\r\n"
    b"f: <sip:101@127.0.0.1>;tag=r\r\nt: <sip:101@127.0.0.1>\r\ni: r4\r\nCSeq: 1 REGISTER\r\n"
    b"m: <sip:101@127.0.0.2>;expires=60\r\nl: 0\r\n\r\n",
    b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx5\r\n"
    b"From: <sip:101@127.0.0.1>;tag=a\r\nTo: <sip:300@127.0.0.2>;tag=b\r\nCall-ID: x5\r\n"
    b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"SIP/2.0 401 Unauthorized\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx6\r\n"
    b"From: <sip:101@127.0.0.1>;tag=a\r\nTo: <sip:101@127.0.0.1>;tag=b\r\nCall-ID: x6\r\n"
    b"CSeq: 1 REGISTER\r\nWWW-Authenticate: Digest realm=\"x\", nonce=\"n\"\r\n"
    b"Content-Length: 0\r\n\r\n",
]
SEEDS = _VALID + [p.read_bytes() for p in sorted(_TORTURE.glob("*.dat"))]

_TOKENS = [b"\r\n", b"\r\n\r\n", b" ", b"\t", b";", b",", b":", b"<", b">", b'"', b"\\", b"%",
           b"=", b"?", b"@", b"[", b"]", b"\x00", b"\xff", b"\xc3\xa9", b"SIP/2.0", b"sip:",
           b"tel:", b"tag=", b"branch=z9hG4bK", b";rport", b"Via: ", b"v: ", b"To: ", b"CSeq: ",
           b"Content-Length: ", b"l: 99999", b"-1", b"4294967296", b"0", b"INVITE", b"ACK",
           b"CANCEL", b"BYE", b"Max-Forwards: 0", b"Require: x", b"Contact: *", b"[::1]:5060"]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed with a few hypothesis-chosen edits (so failures shrink to small edits)."""
    buf = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 6))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(buf)))
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] = draw(st.integers(0, 255))
        elif op == 1:
            del buf[pos:pos + draw(st.integers(1, 30))]
        elif op == 2:
            buf[pos:pos] = draw(st.sampled_from(_TOKENS))
        elif op == 3 and buf:
            start = draw(st.integers(0, len(buf) - 1))
            buf[pos:pos] = buf[start:start + draw(st.integers(1, 120))]
        else:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=12))
    return bytes(buf)


datagrams = st.one_of(mutated(), st.binary(max_size=600), st.sampled_from(SEEDS))

FAST = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _parse_or_none(data: bytes) -> Request | Response | None:
    try:
        return parse_message(data)
    except SipParseError as exc:
        assert exc.reason and isinstance(exc.reason, str)
        assert 400 <= exc.status <= 599
        return None


@FAST
@given(datagrams)
def test_parser_raises_only_sip_parse_error_and_round_trips(data: bytes) -> None:
    msg = _parse_or_none(data)
    if msg is None:
        return
    wire = bytes(msg)
    again = parse_message(wire)  # what we accepted and printed, we accept again
    assert type(again) is type(msg)
    assert bytes(again) == wire
    def kept(m: Request | Response) -> list[tuple[str, str]]:
        return [(k, v) for k, v in m.headers.items() if k != "Content-Length"]

    assert kept(again) == kept(msg) and again.body == msg.body
    # Every accessor the UA relies on works on an accepted message.
    assert msg.call_id and msg.cseq.method and msg.top_via.transport
    _ = (msg.from_addr, msg.to_addr, msg.vias, msg.branch)
    if isinstance(msg, Request):
        refusal = validate_request(msg)  # never raises
        assert refusal is None or 400 <= refusal.status <= 599


@FAST
@given(st.binary(max_size=3000))
def test_parser_on_raw_bytes(data: bytes) -> None:
    _parse_or_none(data)


def _sizes(ua: UserAgent) -> dict[str, int]:
    table_sizes = getattr(ua, "table_sizes", None)
    if callable(table_sizes):
        return dict(table_sizes())
    client, server = ua._txl.counts()  # noqa: SLF001 - older agents had no table_sizes()
    return {"client_transactions": client, "server_transactions": server,
            "calls": len(ua._calls)}  # noqa: SLF001


def _serve(ua: UserAgent, now: float, answered: set[str]) -> int:
    """Play a small application: ring every new incoming call and reject it."""
    sent = len(ua.datagrams_to_send())
    while (event := ua.next_event()) is not None:
        if isinstance(event, IncomingCall) and event.call_id not in answered:
            answered.add(event.call_id)
            ua.ringing(event.call_id, now)
            ua.reject(event.call_id, 486, now)
    return sent + len(ua.datagrams_to_send())


SOURCES = [("127.0.0.2", 5060), ("127.0.0.3", 5070), ("10.0.0.9", 40000)]

steps = st.lists(
    st.tuples(datagrams, st.sampled_from(SOURCES),
              st.one_of(st.just(0.0), st.floats(0.0, 2.0), st.floats(0.0, 40.0))),
    min_size=1, max_size=25,
)


@FAST
@given(steps)
def test_user_agent_never_raises_and_stays_bounded(sequence: list[tuple[bytes, tuple[str, int], float]]) -> None:
    ua = UserAgent(local_host="127.0.0.1", local_port=5060, instance_id="fuzz")
    now = 1000.0
    answered: set[str] = set()
    out = 0
    for data, source, step in sequence:
        now += step
        timer = ua.get_timer()
        if timer is not None:
            assert math.isfinite(timer)
            if timer <= now:
                ua.handle_timer(now)
        ua.receive_datagram(data, source, now)
        out += _serve(ua, now, answered)
        sizes = _sizes(ua)
        assert sizes["server_transactions"] <= len(sequence)
        assert sizes["calls"] <= len(sequence)
    assert ua.stats.get("internal_errors", 0) == 0, ua.stats
    assert out <= 60 * len(sequence)  # retransmissions, not an amplifier
    # Let every timer run out: all transactions and calls must be gone.
    for _ in range(400):
        timer = ua.get_timer()
        if timer is None:
            break
        assert math.isfinite(timer) and timer >= now - 1e-6 - 3600
        now = max(now, timer)
        ua.handle_timer(now)
        _serve(ua, now, answered)
    now += 600.0
    ua.handle_timer(now)
    _serve(ua, now, answered)
    sizes = _sizes(ua)
    assert sizes["server_transactions"] == 0 and sizes["client_transactions"] == 0, sizes
    assert sizes["calls"] == 0, sizes
