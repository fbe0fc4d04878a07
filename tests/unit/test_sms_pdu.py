"""The SMS PDU codec (gateway.modem.sms) against vectors worked out by hand from 3GPP TS 23.038
and 23.040, round trips in both directions, splitting, and malformed input.

The hand-made vectors are explained inline so a reader can check each octet against the spec.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.modem.sms import (
    TON_ALPHANUMERIC,
    TON_INTERNATIONAL,
    TON_UNKNOWN,
    Concat,
    Encoding,
    SmsDeliver,
    SmsError,
    SmsSubmit,
    choose_encoding,
    decode_deliver,
    decode_pdu,
    decode_status_report,
    decode_submit,
    encode_deliver,
    encode_deliver_parts,
    encode_status_report,
    encode_submit,
    encode_submit_parts,
    split_text,
)
from gateway.modem.sms_text import gsm7_decode, gsm7_encode, pack_septets, unpack_septets

UTC = dt.UTC
CET = dt.timezone(dt.timedelta(hours=1))
GSM_EXT = "^{}\\[~]|€"

# --- septets ----------------------------------------------------------------------------------


def test_hellohello_septet_packing() -> None:
    # 23.038 6.1.2.1.1: "hellohello" packs into nine octets.
    assert pack_septets(gsm7_encode("hellohello")).hex().upper() == "E8329BFD4697D9EC37"
    assert gsm7_decode(unpack_septets(bytes.fromhex("E8329BFD4697D9EC37"), 10)) == "hellohello"


def test_extension_character_is_escape_plus_code() -> None:
    # € is 1B 65: 0x1B | (0x65 & 1) << 7 = 9B, then 0x65 >> 1 = 32.
    assert gsm7_encode("€") == [0x1B, 0x65]
    assert pack_septets(gsm7_encode("€")).hex().upper() == "9B32"
    assert gsm7_encode(GSM_EXT) == [
        0x1B, 0x14, 0x1B, 0x28, 0x1B, 0x29, 0x1B, 0x2F, 0x1B, 0x3C,
        0x1B, 0x3D, 0x1B, 0x3E, 0x1B, 0x40, 0x1B, 0x65,
    ]  # fmt: skip
    assert gsm7_decode(gsm7_encode(GSM_EXT)) == GSM_EXT


def test_default_alphabet_specials() -> None:
    assert gsm7_encode("@£$¥") == [0, 1, 2, 3]
    assert gsm7_encode("ΔΩ¤§¿à") == [0x10, 0x15, 0x24, 0x5F, 0x60, 0x7F]
    # An escape before a code without an extension shows the default character; a trailing
    # escape shows a space (nothing is silently dropped).
    assert gsm7_decode([0x1B, 0x41, 0x1B]) == "A "


def test_encoding_choice() -> None:
    assert choose_encoding("Price 5€ [ok]") is Encoding.GSM7
    assert choose_encoding("Grüße Ånne") is Encoding.GSM7  # ü ß Å are in the default table
    assert choose_encoding("naïve") is Encoding.UCS2  # ï is not in the default alphabet
    assert choose_encoding("Hi 😀") is Encoding.UCS2


# --- SMS-SUBMIT -------------------------------------------------------------------------------


def test_submit_vector_by_hand() -> None:
    # 00 no SMSC (use the SIM's) | 01 SUBMIT, no VP | 00 MR | 0B 91 6407281553F8 (+46708251358,
    # international ISDN, swapped digits, F pad) | 00 PID | 00 DCS GSM-7 | 0A septets | text.
    pdu = encode_submit("+46708251358", "hellohello")
    assert pdu.hex == "0001000B916407281553F800000AE8329BFD4697D9EC37"
    assert pdu.length == 22  # what AT+CMGS=<length> needs: everything after the SMSC octet


def test_submit_round_trip_with_validity_and_flags() -> None:
    pdu = encode_submit(
        "+491701234567",
        "Meeting {moved} to [room 4] ~ 20€",
        reference=42,
        smsc="+491710760000",
        validity=dt.timedelta(days=1),
        status_report_request=True,
        reject_duplicates=True,
        message_class=1,
    )
    got = decode_submit(pdu.hex, length=pdu.length)
    assert isinstance(got, SmsSubmit)
    assert got.destination == "+491701234567"
    assert got.destination_ton == TON_INTERNATIONAL
    assert got.smsc == "+491710760000"
    assert got.text == "Meeting {moved} to [room 4] ~ 20€"
    assert got.reference == 42
    assert got.validity == dt.timedelta(days=1)
    assert got.status_report_request and got.reject_duplicates
    assert got.message_class == 1 and got.encoding is Encoding.GSM7
    assert got.tpdu_length == pdu.length


@pytest.mark.parametrize(
    ("period", "octet", "back"),
    [
        (dt.timedelta(minutes=5), 0, dt.timedelta(minutes=5)),
        (dt.timedelta(hours=12), 143, dt.timedelta(hours=12)),
        (dt.timedelta(days=1), 167, dt.timedelta(days=1)),
        (dt.timedelta(days=4), 170, dt.timedelta(days=4)),
        (dt.timedelta(weeks=5), 197, dt.timedelta(weeks=5)),
        (dt.timedelta(minutes=7), 1, dt.timedelta(minutes=10)),  # rounded up, never shorter
        (dt.timedelta(weeks=100), 255, dt.timedelta(weeks=63)),
    ],
)
def test_relative_validity_octet(period: dt.timedelta, octet: int, back: dt.timedelta) -> None:
    pdu = encode_submit("+123", "x", validity=period)
    raw = bytes.fromhex(pdu.hex)
    assert raw[1] & 0x18 == 0x10  # TP-VPF relative
    # 00 | first | MR | 03 91 21F3 | PID | DCS | VP
    assert raw[9] == octet
    assert decode_submit(pdu.hex).validity == back


def test_absolute_validity_round_trip() -> None:
    until = dt.datetime(2027, 1, 31, 23, 59, 0, tzinfo=dt.timezone(dt.timedelta(hours=-3)))
    got = decode_submit(encode_submit("+123", "x", validity=until).hex)
    assert got.validity == until


def test_national_and_alphanumeric_addresses() -> None:
    national = decode_submit(encode_submit("0170123", "x").hex)
    assert national.destination == "0170123" and national.destination_ton == TON_UNKNOWN
    # 23.040 9.1.2.5: an alphanumeric address is GSM-7 packed; its length is in semi-octets.
    raw = bytes.fromhex(encode_deliver("Vodafone", "x", dt.datetime(2026, 1, 1)).hex)
    assert raw[2] == 14 and raw[3] == 0xD0  # 8 septets = 56 bits = 14 semi-octets, TON 5
    got = decode_deliver(raw)
    assert got.originator == "Vodafone" and got.originator_ton == TON_ALPHANUMERIC


# --- SMS-DELIVER ------------------------------------------------------------------------------


def test_deliver_vector_by_hand() -> None:
    stamp = dt.datetime(2026, 12, 6, 10, 30, 15, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    pdu = encode_deliver("+4915112345678", "€", stamp, smsc="+4917200000")
    # 06 91 9471020000: SMSC, 6 octets with its type | 04 DELIVER, no more messages waiting |
    # 0D 91 945111325476F8: 13 digits, swapped, F pad | 00 PID | 00 DCS |
    # 62 21 60 01 03 51 0A: 26-12-06 10:30:15 swapped; -5 h = 20 quarters, tens 2 | sign 8 = A
    # in the low nibble | 02 septets | 9B32 (the € escape pair).
    assert pdu.hex == (
        "06919471020000" + "04" + "0D91945111325476F8" + "0000" + "62216001035" + "10A" + "029B32"
    )
    got = decode_deliver(pdu.hex, length=pdu.length)
    assert got.timestamp == stamp
    assert got.timestamp.utcoffset() == dt.timedelta(hours=-5)
    assert got.text == "€"
    assert not got.more_messages


def test_deliver_round_trip_fields() -> None:
    stamp = dt.datetime(2026, 3, 29, 1, 59, 59, tzinfo=CET)
    pdu = encode_deliver(
        "+33612345678",
        "Bonjour à tous",
        stamp,
        smsc="+33609001390",
        message_class=0,
        pid=0x41,
        status_report=True,
        more_messages=True,
    )
    got = decode_deliver(pdu.hex)
    assert isinstance(got, SmsDeliver)
    assert (got.originator, got.text, got.timestamp) == ("+33612345678", "Bonjour à tous", stamp)
    assert got.smsc == "+33609001390"
    assert got.message_class == 0 and got.pid == 0x41
    assert got.status_report and got.more_messages
    assert got.concat is None and got.udh == ()


def test_ucs2_with_emoji_surrogates() -> None:
    pdu = encode_deliver("+1555", "Hi😀", dt.datetime(2026, 1, 1, tzinfo=UTC))
    raw = bytes.fromhex(pdu.hex)
    # DCS 08 (UCS-2), UDL 8 octets: 0048 0069 D83D DE00 (U+1F600 as a surrogate pair).
    assert raw.endswith(bytes.fromhex("08" + "0048" + "0069" + "D83DDE00"))
    assert raw[-17] == 0x08  # TP-DCS, before the 7-octet SCTS, UDL and 8 octets of text
    got = decode_deliver(pdu.hex)
    assert got.text == "Hi😀" and got.encoding is Encoding.UCS2


def test_8bit_data_round_trip() -> None:
    payload = bytes(range(0, 256, 3))
    got = decode_deliver(encode_deliver("+1", data=payload).hex)
    assert got.encoding is Encoding.EIGHT_BIT and got.data == payload


def test_udh_fill_bits_by_hand() -> None:
    # UDH 05 00 03 2A 02 01 is 48 bits; one fill bit puts the text on septet 7, so UDL = 7 + 2.
    # 'h' (0x68) sits in bits 49..55: octet 0x68 << 1 = D0; 'i' (0x69) fills the next octet.
    pdu = encode_submit("+1", "hi", concat=Concat(0x2A, 2, 1))
    assert pdu.hex.endswith("09" + "0500032A0201" + "D069")
    got = decode_submit(pdu.hex)
    assert got.text == "hi"
    assert got.concat == Concat(0x2A, 2, 1)


def test_sixteen_bit_reference_and_unknown_ies_are_kept() -> None:
    # UDH with an unknown IE (0x24, national language, 1 octet) before a 16-bit concat IE.
    ud = bytes.fromhex("09" + "240101" + "080412340302") + "ok".encode("utf-16-be")
    tpdu = bytes.fromhex("44" + "0291" + "21" + "0008" + "62216001035100") + bytes([len(ud)]) + ud
    got = decode_deliver(b"\x00" + tpdu)
    assert got.text == "ok"
    assert got.concat == Concat(0x1234, 3, 2, ref16=True)
    assert [ie.iei for ie in got.udh] == [0x24, 0x08]


def test_invalid_concat_ie_is_ignored_not_fatal() -> None:
    # Part 0 of 2 is invalid (23.040 9.2.3.24.1): the IE is ignored, the text kept.
    pdu = encode_submit("+1", "hi", concat=Concat(1, 2, 1)).hex
    assert "050003010201" in pdu
    bad = pdu.replace("050003010201", "050003010200")  # sequence number 0
    got = decode_submit(bad)
    assert got.concat is None and got.text == "hi"


@pytest.mark.parametrize(
    ("dcs", "ud", "encoding", "klass", "text"),
    [
        (0x00, "0141", Encoding.GSM7, None, "A"),
        (0x10, "0141", Encoding.GSM7, 0, "A"),  # flash (class 0)
        (0x12, "0141", Encoding.GSM7, 2, "A"),  # class 2: SIM
        (0x18, "020041", Encoding.UCS2, 0, "A"),
        (0x04, "0141", Encoding.EIGHT_BIT, None, "A"),
        (0x24, "0141", Encoding.EIGHT_BIT, None, "A"),  # compressed: kept as octets
        (0x48, "020041", Encoding.UCS2, None, "A"),  # automatic deletion group
        (0xC0, "0141", Encoding.GSM7, None, "A"),  # message waiting, discard
        (0xE0, "020041", Encoding.UCS2, None, "A"),  # message waiting, UCS-2
        (0xF1, "0141", Encoding.GSM7, 1, "A"),
        (0xF5, "0141", Encoding.EIGHT_BIT, 1, "A"),
        (0x0C, "0141", Encoding.GSM7, None, "A"),  # reserved alphabet: read as GSM-7
    ],
)
def test_data_coding_schemes(
    dcs: int, ud: str, encoding: Encoding, klass: int | None, text: str
) -> None:
    pdu = f"000402912100{dcs:02X}62216001035100{ud}"  # SMSC, first, OA, PID, DCS, SCTS
    got = decode_deliver(pdu)
    assert (got.encoding, got.message_class, got.text, got.dcs) == (encoding, klass, text, dcs)


def test_decode_pdu_dispatches_on_mti() -> None:
    assert isinstance(decode_pdu(encode_submit("+1", "a").hex), SmsSubmit)
    assert isinstance(decode_pdu(encode_deliver("+1", "a").hex), SmsDeliver)


def test_status_report_vector_by_hand() -> None:
    sent = dt.datetime(2026, 12, 6, 10, 30, 15, tzinfo=UTC)
    done = dt.datetime(2026, 12, 6, 10, 30, 20, tzinfo=UTC)
    pdu = encode_status_report(42, "+4915112345678", 0x00, sent, done, smsc="+4917200000")
    # SMSC | 06: STATUS-REPORT, no more waiting | 2A: TP-MR 42 | TP-RA | SCTS | DT | 00 TP-ST.
    assert pdu.hex == (
        "06919471020000" + "06" + "2A" + "0D91945111325476F8"
        "62216001035100" + "62216001030200" + "00"
    )
    got = decode_status_report(pdu.hex, length=pdu.length)
    assert (got.reference, got.recipient, got.timestamp, got.discharge_time) == (
        42,
        "+4915112345678",
        sent,
        done,
    )
    assert got.delivered and got.final
    pending = decode_status_report(encode_status_report(1, "+1", 0x30, sent, done).hex)
    assert not pending.delivered and not pending.final
    with pytest.raises(SmsError, match="TP-MTI"):
        decode_pdu(pdu.hex)  # a report is not read as a message


def test_status_report_with_optional_user_data() -> None:
    base = encode_status_report(9, "+1", 0x41, dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1))
    # TP-PI 06: DCS and UDL present; DCS 00; UDL 2; "€" as before.
    got = decode_status_report(base.hex + "06" + "00" + "02" + "9B32")
    assert got.text == "€" and got.status == 0x41 and got.final and not got.delivered


# --- splitting --------------------------------------------------------------------------------


def test_split_limits() -> None:
    assert split_text("a" * 160) == ["a" * 160]
    assert [len(p) for p in split_text("a" * 161)] == [153, 8]
    assert [len(p) for p in split_text("ж" * 70)] == [70]
    assert [len(p) for p in split_text("ж" * 71)] == [67, 4]
    assert [len(p) for p in split_text("a" * 161, ref16=True)] == [152, 9]


def test_escape_pairs_are_never_split() -> None:
    text = "a" * 152 + "€" + "b" * 10  # € would need septets 153 and 154
    parts = split_text(text)
    assert parts == ["a" * 152, "€" + "b" * 10]
    pdus = encode_submit_parts("+1", text, reference=5)
    assert "".join(decode_submit(p.hex).text for p in pdus) == text


def test_surrogate_pairs_are_never_split() -> None:
    text = "ж" * 66 + "😀" + "ж" * 10
    parts = split_text(text)
    assert parts[0] == "ж" * 66 and parts[1].startswith("😀")


def test_three_part_submit_headers() -> None:
    text = "x" * 400
    pdus = encode_submit_parts("+1", text, reference=200)
    got = [decode_submit(p.hex, length=p.length) for p in pdus]
    assert [g.concat for g in got] == [Concat(200, 3, i) for i in (1, 2, 3)]
    assert "".join(g.text for g in got) == text
    assert all(g.encoding is Encoding.GSM7 for g in got)


def test_deliver_parts_ucs2_ref16() -> None:
    text = "😀" * 50 + "x"
    pdus = encode_deliver_parts("+1", text, reference=300, ref16=True)
    got = [decode_deliver(p.hex) for p in pdus]
    assert [len(g.text) for g in got] == [33, 18]
    assert all(g.concat and g.concat.ref16 and g.concat.reference == 300 for g in got)
    assert "".join(g.text for g in got) == text


# --- errors -----------------------------------------------------------------------------------


def test_every_truncation_raises_sms_error_with_offset() -> None:
    full = bytes.fromhex(encode_deliver("+4915112345678", "hello there", smsc="+49172").hex)
    for n in range(len(full)):
        with pytest.raises(SmsError) as info:
            decode_deliver(full[:n])
        assert info.value.offset is not None and info.value.offset <= n


@pytest.mark.parametrize(
    ("pdu", "field", "offset"),
    [
        ("zz", "PDU", None),
        ("0001000B91", "TP-DA digits", 5),
        ("000100", "TP-DA length", 3),
        ("0004", "TP-OA length", 2),
        ("0003", "TP-MTI", 1),
        ("00040291210000" + "6A216001035100" + "00", "TP-SCTS", 7),  # year nibble A
        ("00440291210000" + "62216001035100" + "03" + "050000", "TP-UDHL", 15),
        ("00040291210008" + "62216001035100" + "03" + "004100", "TP-UD", 15),  # odd UCS-2
        ("0004029121000062216001035100" + "A1", "TP-UDL", 14),  # 161 septets
    ],
)
def test_malformed_pdus_name_field_and_offset(pdu: str, field: str, offset: int | None) -> None:
    with pytest.raises(SmsError) as info:
        decode_pdu(pdu)
    assert info.value.field == field
    assert info.value.offset == offset
    assert field in str(info.value)


def test_length_mismatch_with_modem_is_reported() -> None:
    pdu = encode_submit("+1", "hello")
    with pytest.raises(SmsError, match="length"):
        decode_submit(pdu.hex, length=pdu.length + 1)


def test_encoder_refuses_what_cannot_be_sent() -> None:
    with pytest.raises(SmsError, match="161 septets"):
        encode_submit("+1", "a" * 161)
    with pytest.raises(SmsError, match="GSM-7"):
        encode_submit("+1", "ж", encoding=Encoding.GSM7)
    with pytest.raises(SmsError, match="TP-DA"):
        encode_submit("+1-555", "x", destination_ton=TON_INTERNATIONAL)
    with pytest.raises(SmsError, match="TP-SCTS"):
        encode_deliver(
            "+1", "x", dt.datetime(2026, 1, 1, tzinfo=dt.timezone(dt.timedelta(minutes=7)))
        )


# --- properties -------------------------------------------------------------------------------

_FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(st.binary(max_size=200), st.booleans())
def test_fuzz_random_octets_raise_only_sms_error(data: bytes, smsc: bool) -> None:
    for decode in (decode_pdu, decode_status_report):
        try:
            decode(data, smsc=smsc)
        except SmsError:
            pass


@_FUZZ
@given(st.data())
def test_fuzz_mutated_valid_pdus_raise_only_sms_error(data: st.DataObject) -> None:
    text = data.draw(st.text(max_size=30))  # fits one PDU even as UCS-2 surrogate pairs
    seed = bytearray.fromhex(
        data.draw(
            st.sampled_from(
                [
                    encode_deliver("+4917", text, concat=Concat(3, 2, 1)).hex,
                    encode_submit("Shop", text, validity=dt.timedelta(hours=1)).hex,
                ]
            )
        )
    )
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(seed) - 1))
        seed[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(seed)))
    try:
        decode_pdu(bytes(seed[:cut]))
    except SmsError:
        pass


_GSM_CHARS = st.sampled_from(list("@£$¥èéΔ_ΦΓÆæßÉ !\"#¤%&'()*+,-./09:;<=>?¡AZÄÖÑÜ§¿azäöñüà\n\r")
                             + list(GSM_EXT))  # fmt: skip


@_FUZZ
@given(
    st.one_of(
        st.text(_GSM_CHARS, max_size=500),
        st.text(_GSM_CHARS, min_size=150, max_size=500),  # long enough to be split
        st.text(max_size=300),
        st.text(min_size=60, max_size=300),
    ),
    st.integers(0, 255),
)
def test_split_and_reassemble_round_trip(text: str, reference: int) -> None:
    pdus = encode_submit_parts("+4917", text, reference=reference)
    got = [decode_submit(p.hex, length=p.length) for p in pdus]
    # Lone surrogates cannot travel (UTF-16 pairs them on the way back), so compare what can.
    want = text.encode("utf-16-be", "surrogatepass").decode("utf-16-be", "replace")
    assert "".join(g.text for g in got) == want
    if len(got) > 1:
        assert [g.concat.seq for g in got if g.concat] == list(range(1, len(got) + 1))
        assert all(p.length <= 140 + 13 for p in pdus)
