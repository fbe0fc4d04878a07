"""Stream framing: whole SIP messages out of arbitrary TCP/TLS chunks."""

from __future__ import annotations

import pytest

from gateway.sip.framing import MAX_MESSAGE, PING, PONG, StreamFramer


def _msg(body: bytes = b"", *, method: str = "OPTIONS", cl: str | None = None) -> bytes:
    length = str(len(body)) if cl is None else cl
    return (
        f"{method} sip:a@127.0.0.1 SIP/2.0\r\n"
        "Via: SIP/2.0/TCP 127.0.0.1:5060;branch=z9hG4bK1\r\n"
        "Call-ID: x@y\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode() + body


def test_one_message_in_one_chunk() -> None:
    f = StreamFramer()
    m = _msg(b"v=0\r\n")
    assert f.feed(m) == [m]
    assert f.buffered == 0 and f.error is None


def test_message_split_byte_by_byte() -> None:
    f = StreamFramer()
    m = _msg(b"hello body")
    out: list[bytes] = []
    for i in range(len(m)):
        out += f.feed(m[i : i + 1])
        if i < len(m) - 1:
            assert out == []
    assert out == [m]


def test_merged_messages_and_a_partial_third() -> None:
    f = StreamFramer()
    a, b, c = _msg(b"a"), _msg(b"bb", method="INFO"), _msg(b"ccc")
    assert f.feed(a + b + c[:10]) == [a, b]
    assert f.buffered == 10
    assert f.feed(c[10:]) == [c]


def test_response_and_compact_content_length() -> None:
    f = StreamFramer()
    m = b"SIP/2.0 200 OK\r\nl: 3\r\nCall-ID: 1\r\n\r\nabc"
    assert f.feed(m + m) == [m, m]


def test_ping_is_counted_not_delivered() -> None:
    f = StreamFramer()
    m = _msg()
    assert f.feed(PING + m + PING) == [m]
    assert f.take_pings() == 2
    assert f.take_pings() == 0


def test_ping_split_across_reads_is_one_ping_not_two_pongs() -> None:
    f = StreamFramer()
    assert f.feed(b"\r\n") == []
    assert f.feed(b"\r\n") == []
    assert f.take_pings() == 1
    assert f.take_pongs() == 0


def test_lone_crlf_is_a_pong() -> None:
    f = StreamFramer()
    m = _msg()
    assert f.feed(PONG + m) == [m]
    assert f.take_pongs() == 1
    assert f.take_pings() == 0


def test_missing_content_length_is_fatal() -> None:
    f = StreamFramer()
    good = _msg(b"x")
    bad = b"OPTIONS sip:a@b SIP/2.0\r\nCall-ID: 1\r\n\r\n"
    assert f.feed(good + bad) == [good]
    assert f.error is not None and "Content-Length" in f.error
    assert f.feed(good) == []  # cut off for good


@pytest.mark.parametrize("cl", ["-1", "abc", "1 2", "9999999999"])
def test_bad_content_length_is_fatal(cl: str) -> None:
    f = StreamFramer()
    assert f.feed(_msg(cl=cl)) == []
    assert f.error is not None


def test_contradicting_content_lengths_are_fatal() -> None:
    f = StreamFramer()
    m = b"SIP/2.0 200 OK\r\nContent-Length: 1\r\nl: 2\r\n\r\nab"
    assert f.feed(m) == []
    assert f.error == "contradicting Content-Length headers"


def test_oversized_body_is_refused_before_buffering_it() -> None:
    f = StreamFramer()
    head = _msg(cl=str(MAX_MESSAGE))
    assert f.feed(head) == []
    assert f.error is not None and "over" in f.error
    assert f.buffered == 0


def test_endless_header_block_is_bounded() -> None:
    f = StreamFramer(max_message=2048)
    f.feed(b"OPTIONS sip:a@b SIP/2.0\r\n")
    for _ in range(100):
        f.feed(b"X-Junk: " + b"a" * 50 + b"\r\n")
        if f.error:
            break
    assert f.error is not None
    assert f.buffered == 0


def test_garbage_instead_of_a_start_line_is_fatal() -> None:
    f = StreamFramer()
    assert f.feed(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n") == []
    assert f.error is not None and "start line" in f.error


def test_garbage_without_line_end_is_bounded() -> None:
    f = StreamFramer()
    f.feed(b"\x00" * 2000)
    assert f.error is not None


def test_stray_cr_is_fatal() -> None:
    f = StreamFramer()
    f.feed(b"\r\x00OPTIONS")
    assert f.error == "stray CR between messages"


def test_body_containing_blank_lines_is_kept_whole() -> None:
    f = StreamFramer()
    body = b"v=0\r\n\r\n\r\nmore"
    m = _msg(body)
    assert f.feed(m) == [m]
    assert f.take_pings() == 0
