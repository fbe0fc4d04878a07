"""Reassembly of concatenated SMS (gateway.modem.sms.Reassembler): parts out of order, twice,
or never, with the caller's clock."""

from __future__ import annotations

import datetime as dt

import pytest

from gateway.modem.sms import (
    AssembledSms,
    Reassembler,
    SmsDeliver,
    decode_deliver,
    encode_deliver,
    encode_deliver_parts,
)

STAMP = dt.datetime(2026, 12, 6, 9, 0, 0, tzinfo=dt.UTC)
TEXT = "".join(f"word{i:03d} " for i in range(50))  # 400 septets: three parts


def _parts(text: str = TEXT, originator: str = "+4915112345678", ref: int = 77) -> list[SmsDeliver]:
    return [
        decode_deliver(p.hex) for p in encode_deliver_parts(originator, text, STAMP, reference=ref)
    ]


def test_three_parts_out_of_order_come_out_whole_once() -> None:
    parts = _parts()
    assert len(parts) == 3
    r = Reassembler(timeout=30.0)
    assert r.add(parts[2], now=0.0) == []
    assert r.add(parts[0], now=1.0) == []
    assert r.pending == 1 and r.get_timer() == 31.0
    (msg,) = r.add(parts[1], now=2.0)
    assert msg == AssembledSms("+4915112345678", TEXT, STAMP, True, 77, 3, ())
    assert r.pending == 0 and r.get_timer() is None
    assert r.handle_timer(100.0) == []


def test_duplicates_are_ignored_before_and_after_completion() -> None:
    parts = _parts()
    r = Reassembler(timeout=30.0)
    assert r.add(parts[0], 0.0) == []
    assert r.add(parts[0], 0.5) == []  # repeated while waiting
    assert r.add(parts[1], 1.0) == []
    (msg,) = r.add(parts[2], 2.0)
    assert msg.text == TEXT
    assert r.add(parts[1], 3.0) == []  # the network repeats a part after we emitted
    assert r.pending == 0


def test_timeout_emits_what_arrived_with_a_placeholder() -> None:
    parts = _parts()
    r = Reassembler(timeout=30.0)
    r.add(parts[0], 0.0)
    r.add(parts[2], 5.0)
    assert r.get_timer() == 35.0  # the deadline runs from the latest new part
    assert r.handle_timer(34.9) == []
    (msg,) = r.expire(35.0)
    assert not msg.complete and msg.missing == (2,)
    assert msg.text == parts[0].text + "[part 2 of 3 missing]" + parts[2].text
    assert r.pending == 0 and r.get_timer() is None


def test_a_part_later_than_the_timeout_is_still_delivered() -> None:
    parts = _parts()
    r = Reassembler(timeout=10.0)
    r.add(parts[0], 0.0)
    r.add(parts[1], 0.0)
    (first,) = r.handle_timer(10.0)
    assert first.missing == (3,)
    assert r.add(parts[2], 11.0) == []  # waits in case its siblings come again
    (late,) = r.handle_timer(21.0)
    assert late.missing == (1, 2) and parts[2].text in late.text


def test_single_messages_pass_straight_through() -> None:
    sms = decode_deliver(encode_deliver("Bank", "Your code is 1234", STAMP).hex)
    assert Reassembler().add(sms, 0.0) == [AssembledSms("Bank", "Your code is 1234", STAMP)]


def test_key_includes_originator_and_reference() -> None:
    a = _parts(originator="+111", ref=1)
    b = _parts(text=TEXT.upper(), originator="+222", ref=1)
    c = _parts(text=TEXT[::-1], originator="+111", ref=2)
    r = Reassembler()
    out: list[AssembledSms] = []
    for trio in zip(a, b, c, strict=True):
        for part in trio:
            out += r.add(part, 0.0)
    assert {(m.originator, m.reference): m.text for m in out} == {
        ("+111", 1): TEXT,
        ("+222", 1): TEXT.upper(),
        ("+111", 2): TEXT[::-1],
    }
    assert all(m.complete for m in out)


def test_bounded_pending_flushes_the_oldest_first() -> None:
    r = Reassembler(timeout=60.0, max_pending=2)
    firsts = [_parts(ref=ref)[0] for ref in (1, 2, 3)]
    assert r.add(firsts[0], 0.0) == []
    assert r.add(firsts[1], 1.0) == []
    (flushed,) = r.add(firsts[2], 2.0)
    assert flushed.reference == 1 and flushed.missing == (2, 3)
    assert flushed.text.startswith(firsts[0].text)  # nothing that arrived is dropped
    assert r.pending == 2


def test_flush_at_shutdown_and_16_bit_references() -> None:
    pdus = encode_deliver_parts("+1", TEXT, STAMP, reference=40000, ref16=True)
    parts = [decode_deliver(p.hex) for p in pdus]
    r = Reassembler()
    r.add(parts[1], 0.0)
    (msg,) = r.flush(0.0)
    assert msg.reference == 40000 and msg.missing == (1, 3)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        Reassembler(timeout=0)
    with pytest.raises(ValueError):
        Reassembler(max_pending=0)
