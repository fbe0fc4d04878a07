"""The SIP trace: redaction of credentials and keys, the Call-ID/address filter, malformed
input, and bounded watcher queues."""

from __future__ import annotations

import asyncio

import pytest

from gateway.runtime.trace import SipTrace, TraceWatcher, format_record, trace_command
from gateway.sip.trace import REDACTED, TraceFilter, describe, parse_address, redact

SECRET = "6f1ed002ab5595859014ebf0951522d9"
REQUEST = (
    "REGISTER sip:trunk.example SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bK1\r\n"
    "From: <sip:alice@trunk.example>;tag=1\r\n"
    "To: <sip:alice@trunk.example>\r\n"
    "Call-ID: reg-1@192.0.2.7\r\n"
    "CSeq: 2 REGISTER\r\n"
    f'Authorization: Digest username="alice", realm="trunk.example", nonce="n0nce",\r\n'
    f'  uri="sip:trunk.example", response="{SECRET}", cnonce="c0nce", nc=00000001\r\n'
    f'proxy-authorization:Digest username="bob",response="{SECRET}"\r\n'
    "Content-Length: 0\r\n\r\n"
).encode()


def test_credentials_are_redacted_and_the_account_kept() -> None:
    text = redact(REQUEST)
    assert SECRET not in text
    assert "n0nce" not in text and "c0nce" not in text
    assert 'Authorization: Digest username="alice", realm="trunk.example", <redacted>' in text
    assert 'proxy-authorization: Digest username="bob", <redacted>' in text
    # the folded continuation went with its header; everything else is untouched
    assert 'uri="sip:trunk.example"' not in text
    assert "Call-ID: reg-1@192.0.2.7\r\n" in text
    assert text.endswith("Content-Length: 0\r\n\r\n")


def test_other_secrets_are_redacted() -> None:
    body = (
        "v=0\r\nk=base64:c2VjcmV0a2V5\r\n"
        "a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz|2^20|1:4\r\n"
        "a=key-mgmt:mikey AQAFgM0XflABAAAA\r\n"
    )
    msg = ("INVITE sip:bob:hunter2@example.com SIP/2.0\r\nCall-ID: x\r\n"
           f"Content-Length: {len(body)}\r\n\r\n{body}").encode()
    text = redact(msg)
    for secret in ("hunter2", "c2VjcmV0a2V5", "WVNfX19zZW1jdGwg", "AQAFgM0XflABAAAA"):
        assert secret not in text
    assert f"inline:{REDACTED}|2^20|1:4" in text
    assert f"sip:bob:{REDACTED}@example.com" in text
    # a host:port URI is not a password
    assert redact(b"Contact: <sip:192.0.2.1:5060;transport=udp>, <sip:bob@x>\r\n") == \
        "Contact: <sip:192.0.2.1:5060;transport=udp>, <sip:bob@x>\r\n"


def test_malformed_input_is_marked_and_still_redacted() -> None:
    garbage = (b"\xff\xfeNOT SIP\r\nCall-ID: bad-1\r\n\r\n\r\n"
               + f'AUTHORIZATION : Digest response="{SECRET}"\r\n'.encode()
               + f'X-Stray: response={SECRET}\r\n'.encode())
    info = describe(garbage)
    assert info.malformed
    assert info.call_id == "bad-1"
    assert SECRET not in redact(garbage)
    good = describe(REQUEST)
    assert good.malformed is None and good.call_id == "reg-1@192.0.2.7"
    assert good.first_line == "REGISTER sip:trunk.example SIP/2.0"


def test_filter_by_call_id_and_address() -> None:
    remote = ("192.0.2.7", 5060)
    assert TraceFilter().matches("anything", remote)
    assert TraceFilter.build(call_id="a").matches("a", remote)
    assert not TraceFilter.build(call_id="a").matches("b", remote)
    assert not TraceFilter.build(call_id="a").matches(None, remote)
    assert TraceFilter.build(address="192.0.2.7").matches(None, remote)
    assert TraceFilter.build(address="192.0.2.7:5060").matches(None, remote)
    assert not TraceFilter.build(address="192.0.2.7:5061").matches(None, remote)
    assert not TraceFilter.build(address="192.0.2.8").matches(None, remote)
    both = TraceFilter.build(call_id="a", address="192.0.2.7")
    assert both.matches("a", remote) and not both.matches("b", remote)
    v6 = TraceFilter.build(address="[2001:db8::0001]:5060")
    assert v6.matches(None, ("2001:db8::1", 5060))
    assert parse_address("2001:db8::1") == ("2001:db8::1", None)
    for bad in ("", "host:99999", "[::1", "[::1]x", "host:port"):
        with pytest.raises(ValueError):
            parse_address(bad)


def test_watcher_queue_is_bounded_and_counts_drops() -> None:
    async def run() -> None:
        hub = SipTrace(clock=lambda: 0.0)
        slow = hub.watch(TraceFilter())
        slow.limit = 10
        for _ in range(25):
            hub.message("in", "udp", ("127.0.0.1", 5060), ("192.0.2.7", 5060), REQUEST)
        assert len(slow.queue) == 10 and slow.dropped == 15
        batch = await slow.next_batch()
        assert batch is not None
        assert batch[0] == {"dropped": 15, "dropped_total": 15}
        assert len(batch) == 11 and all(SECRET not in r["text"] for r in batch[1:])
        assert hub.describe()["watcher_drops"] == 15
        hub.unwatch(slow)
        assert await slow.next_batch() is None
        assert not hub.active
        # big messages are bounded by bytes as well as by count
        big = hub.watch(TraceFilter())
        for _ in range(40):
            hub.message("in", "udp", None, ("192.0.2.7", 5060), REQUEST + b"x" * 60000)
        assert big.queued_bytes <= big.byte_limit and big.dropped > 0
        assert len(big.queue) + big.dropped == 40

    asyncio.run(run())


def test_nothing_is_built_when_nobody_watches_a_call() -> None:
    hub = SipTrace()
    other = hub.watch(TraceFilter.build(call_id="other"))
    hub.message("in", "udp", None, ("192.0.2.7", 5060), REQUEST)
    hub.message("in", "udp", None, ("192.0.2.7", 5060), b"\r\n\r\n")  # keep-alive
    assert not other.queue and hub.stats["traced"] == 0


def test_trace_command_switches_log_and_refuses_bad_filters(caplog: pytest.LogCaptureFixture) -> None:
    hub = SipTrace()
    assert trace_command(hub, {"action": "on"})["log"] is True
    with caplog.at_level("DEBUG", logger="branchline.sip.trace"):
        hub.message("out", "tcp", ("10.0.0.1", 5060), ("192.0.2.7", 40000), REQUEST)
    assert "OUT TCP 10.0.0.1:5060 -> 192.0.2.7:40000" in caplog.text
    assert SECRET not in caplog.text
    assert trace_command(hub, {"action": "off"})["log"] is False
    with pytest.raises(ValueError, match="port"):
        trace_command(hub, {"action": "watch", "address": "x:0"})
    with pytest.raises(ValueError, match="unknown trace action"):
        trace_command(hub, {"action": "loud"})


def test_format_record_marks_malformed() -> None:
    record = {"time": 0.0, "direction": "in", "transport": "udp", "local": "a:1",
              "remote": "b:2", "size": 3, "malformed": "Missing Via", "text": "X\r\n"}
    assert "IN UDP a:1 <- b:2 (3 bytes) MALFORMED (Missing Via)" in format_record(record)
    assert "dropped" in format_record({"dropped": 4, "dropped_total": 4})
    assert isinstance(TraceWatcher(TraceFilter()).filter, TraceFilter)
