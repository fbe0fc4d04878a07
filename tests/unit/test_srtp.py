"""SRTP/SRTCP: RFC 3711 test vectors, libSRTP reference packets, ROC, replay and tampering.

Where the expected bytes come from:

- RFC 3711 Appendix B.2 (AES-CM keystream) and B.3 (key derivation), copied from the RFC.
- libSRTP's ``srtp_validate()`` reference packets (test/srtp_driver.c): master key and salt
  of B.3, SSRC 0xcafebabe, seq 0x1234, 16 bytes of 0xab payload, default policy
  (AES_CM_128_HMAC_SHA1_80); its ``_32`` ciphertext is the same packet with a 4-byte tag.
  libSRTP numbers its first SRTCP packet 1 (so do we, being libSRTP), so its SRTCP
  packet is our first one.
- OpenSSL's SRTP KDF test data (evpkdf_srtp.txt) for a key derivation rate of 1 with the
  SRTP labels, which exercises the index term of the PRF input.
- Packets after a sequence wrap have no published figure: those tests rebuild the
  expected packet from the primitives (derived keys, AES-CM, HMAC-SHA1 over packet||ROC)
  so the ROC's place in both IV and tag is checked by a second path.
- The primitives are an independent reference in srtp_reference.py (the gateway runs on
  libsrtp); the RFC vectors below check that reference, which then checks libsrtp.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

import pytest
from srtp_reference import (
    aes_cm_keystream,
    derive_session_key,
    derive_session_keys,
    estimate_index,
)

from gateway.media.srtp import PROFILES, SrtpContext, SrtpError

B3_KEY = bytes.fromhex("E1F97A0D3E018BE0D64FA32C06DE4139")
B3_SALT = bytes.fromhex("0EC675AD498AFEEBB6960B3AABE6")

LIBSRTP_RTP = bytes.fromhex("800f1234decafbadcafebabe" + "ab" * 16)
LIBSRTP_SRTP_80 = bytes.fromhex(
    "800f1234decafbadcafebabe4e55dc4ce79978d88ca4d215949d2402b78d6acc99ea179b8dbb"
)
LIBSRTP_SRTP_32 = LIBSRTP_SRTP_80[:-6]
LIBSRTP_RTCP = bytes.fromhex("81c8000bcafebabe" + "ab" * 16)
LIBSRTP_SRTCP = bytes.fromhex(
    "81c8000bcafebabe7128035be487b9bdbef89041f977a5a880000001993e08cd54d6c1230798"
)

KEY = bytes(range(16))
SALT = bytes(range(100, 114))


def rtp(seq: int, ssrc: int = 0x11223344, payload: bytes = b"\x55" * 160, pt: int = 0) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 160, ssrc) + payload


def rtcp_sr(ssrc: int = 0x11223344) -> bytes:
    # SR with no report blocks (length 6 words) followed by an SDES CNAME chunk.
    sr = struct.pack("!BBHI", 0x80, 200, 6, ssrc) + bytes(range(20))
    sdes = struct.pack("!BBHI", 0x81, 202, 3, ssrc) + b"\x01\x04host" + b"\x00\x00"
    return sr + sdes


# --------------------------------------------------------------- RFC 3711 vectors


def test_aes_cm_keystream_matches_rfc3711_b2() -> None:
    key = bytes.fromhex("2B7E151628AED2A6ABF7158809CF4F3C")
    iv = bytes.fromhex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000")
    stream = aes_cm_keystream(key, iv, 16 * 0xFF02)
    blocks = {
        n: stream[16 * n : 16 * (n + 1)].hex().upper() for n in (0, 1, 2, 0xFEFF, 0xFF00, 0xFF01)
    }
    assert blocks == {
        0x0000: "E03EAD0935C95E80E166B16DD92B4EB4",
        0x0001: "D23513162B02D0F72A43A2FE4A5F97AB",
        0x0002: "41E95B3BB0A2E8DD477901E4FCA894C0",
        0xFEFF: "EC8CDF7398607CB0F2D21675EA9EA1E4",
        0xFF00: "362B7C3C6773516318A077D7FC5073AE",
        0xFF01: "6A2CC3787889374FBEB4C81B17BA6C44",
    }


def test_key_derivation_matches_rfc3711_b3() -> None:
    keys = derive_session_keys(B3_KEY, B3_SALT)
    assert keys.cipher_key.hex().upper() == "C61E7A93744F39EE10734AFE3FF7A087"
    assert keys.salt.hex().upper() == "30CBBC08863D8C85D49DB34A9AE1"
    assert keys.auth_key.hex().upper() == "CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"
    # B.3 lists 94 bytes of the authentication PRF output.
    assert derive_session_key(B3_KEY, B3_SALT, 1, 94).hex().upper() == (
        "CEBE321F6FF7716B6FD4AB49AF256A15"
        "6D38BAA48F0A0ACF3C34E2359E6CDBCE"
        "E049646C43D9327AD175578EF7227098"
        "6371C10C9A369AC2F94A8C5FBCDDDC25"
        "6D6E919A48B610EF17C2041E47403576"
        "6B68642C59BBFC2F34DB60DBDFB2"
    )


def test_srtcp_keys_use_their_own_labels() -> None:
    rtp_keys = derive_session_keys(B3_KEY, B3_SALT)
    rtcp_keys = derive_session_keys(B3_KEY, B3_SALT, rtcp=True)
    assert rtcp_keys.cipher_key == derive_session_key(B3_KEY, B3_SALT, 3, 16)
    assert rtcp_keys.auth_key == derive_session_key(B3_KEY, B3_SALT, 4, 20)
    assert rtcp_keys.salt == derive_session_key(B3_KEY, B3_SALT, 5, 14)
    assert {rtcp_keys.cipher_key, rtcp_keys.salt}.isdisjoint({rtp_keys.cipher_key, rtp_keys.salt})


@pytest.mark.parametrize(
    ("index", "label", "length", "expected"),
    [
        (0x08284B49F520, 0, 16, "A920DF50EAA111D03FBE9B203121C07D"),
        (0x08284B49F520, 1, 20, "A337DC070C0DAFA942F1E3A27ACD3C9917CE4B4D"),
        (0x08284B49F520, 2, 14, "9E2BC99C86037F2AD98D72927428"),
    ],
)
def test_key_derivation_with_rate_one_matches_openssl_data(
    index: int, label: int, length: int, expected: str
) -> None:
    master_key = bytes.fromhex("8C307F105F79D5D2C26B1A933AE22CD5")
    master_salt = bytes.fromhex("563B4C15458D977B68080242CEE1")
    out = derive_session_key(master_key, master_salt, label, length, index=index, kdr=1)
    assert out.hex().upper() == expected


def test_key_derivation_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match="not supported for SRTCP label 3"):
        derive_session_key(B3_KEY, B3_SALT, 3, 16, index=5, kdr=1)
    with pytest.raises(ValueError, match="power of two"):
        derive_session_key(B3_KEY, B3_SALT, 0, 16, kdr=3)
    with pytest.raises(ValueError, match="master salt must be 14"):
        derive_session_key(B3_KEY, B3_SALT[:13], 0, 16)
    with pytest.raises(ValueError, match="master key must be 16"):
        SrtpContext(B3_KEY + b"\x00", B3_SALT)
    with pytest.raises(ValueError, match="unsupported SRTP profile 'AES_256_CM_HMAC_SHA1_80'"):
        SrtpContext(B3_KEY, B3_SALT, "AES_256_CM_HMAC_SHA1_80")


# ---------------------------------------------------------- libSRTP reference packets


def test_protect_matches_libsrtp_reference_packet_80() -> None:
    assert SrtpContext(B3_KEY, B3_SALT).protect(LIBSRTP_RTP) == LIBSRTP_SRTP_80
    assert SrtpContext(B3_KEY, B3_SALT).unprotect(LIBSRTP_SRTP_80) == LIBSRTP_RTP


def test_protect_matches_libsrtp_reference_packet_32() -> None:
    ctx = SrtpContext(B3_KEY, B3_SALT, "AES_CM_128_HMAC_SHA1_32")
    assert ctx.protect(LIBSRTP_RTP) == LIBSRTP_SRTP_32
    receiver = SrtpContext(B3_KEY, B3_SALT, "AES_CM_128_HMAC_SHA1_32")
    assert receiver.unprotect(LIBSRTP_SRTP_32) == LIBSRTP_RTP


def test_srtcp_matches_libsrtp_reference_packet() -> None:
    sender = SrtpContext(B3_KEY, B3_SALT)
    first = sender.protect_rtcp(LIBSRTP_RTCP)
    assert first[-14:-10] == bytes.fromhex("80000001")  # E flag set, index 1 as libSRTP's
    assert first == LIBSRTP_SRTCP
    assert SrtpContext(B3_KEY, B3_SALT).unprotect_rtcp(LIBSRTP_SRTCP) == LIBSRTP_RTCP


def test_srtcp_tag_is_80_bits_in_the_32_bit_profile() -> None:
    sender = SrtpContext(B3_KEY, B3_SALT, "AES_CM_128_HMAC_SHA1_32")
    assert sender.protect_rtcp(LIBSRTP_RTCP) == LIBSRTP_SRTCP
    assert PROFILES["AES_CM_128_HMAC_SHA1_32"].rtcp_tag_len == 10


# ------------------------------------------------------------------- round trips


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_round_trip_keeps_header_clear_and_hides_payload(profile: str) -> None:
    sender, receiver = SrtpContext(KEY, SALT, profile), SrtpContext(KEY, SALT, profile)
    tag_len = PROFILES[profile].rtp_tag_len
    for seq in range(1000, 1010):
        plain = rtp(seq, payload=bytes([seq & 0xFF]) * 160)
        wire = sender.protect(plain)
        assert len(wire) == len(plain) + tag_len
        assert wire[:12] == plain[:12]
        assert wire[12:172] != plain[12:]
        assert receiver.unprotect(wire) == plain


def test_csrc_extension_and_padding_stay_in_the_clear() -> None:
    header = struct.pack("!BBHII", 0xB2, 8, 7, 1234, 0xABCDEF01)  # P, X, CC=2
    csrcs = struct.pack("!II", 1, 2)
    ext = struct.pack("!HH", 0xBEDE, 1) + b"\x10\xaa\x00\x00"
    payload = b"\x01\x02\x03\x04\x05" + b"\x00\x00\x03"  # 3 octets of padding
    plain = header + csrcs + ext + payload
    wire = SrtpContext(KEY, SALT).protect(plain)
    clear = len(header + csrcs + ext)
    assert wire[:clear] == plain[:clear]
    assert wire[clear : len(plain)] != payload  # padding is encrypted with the payload
    assert SrtpContext(KEY, SALT).unprotect(wire) == plain


def test_srtcp_round_trip_and_index_sequence() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    plain = rtcp_sr()
    for expected_index in range(1, 4):  # libSRTP numbers the first packet 1
        wire = sender.protect_rtcp(plain)
        assert len(wire) == len(plain) + 4 + 10
        assert wire[:8] == plain[:8] and wire[8 : len(plain)] != plain[8:]
        assert (
            struct.unpack("!I", wire[len(plain) : len(plain) + 4])[0] == 0x80000000 | expected_index
        )
        assert receiver.unprotect_rtcp(wire) == plain


def test_srtcp_without_e_flag_is_refused_though_its_tag_is_right() -> None:
    plain = rtcp_sr()
    keys = derive_session_keys(KEY, SALT, rtcp=True)
    body = plain + struct.pack("!I", 5)  # E = 0, index 5
    tag = hmac.new(keys.auth_key, body, hashlib.sha1).digest()[:10]
    with pytest.raises(SrtpError, match="E flag cleared") as err:
        SrtpContext(KEY, SALT).unprotect_rtcp(body + tag)  # would hand on RTCP in the clear
    assert err.value.reason == "unencrypted"


# ---------------------------------------------------------------- tamper and keys


def test_every_flipped_bit_position_fails_authentication() -> None:
    wire = SrtpContext(KEY, SALT).protect(rtp(42, payload=b"\x01" * 20))
    for pos in range(len(wire)):
        damaged = bytearray(wire)
        damaged[pos] ^= 0x01  # the lowest bit keeps the version bits intact
        with pytest.raises(SrtpError) as err:
            SrtpContext(KEY, SALT).unprotect(bytes(damaged))
        assert err.value.reason == "auth", pos


def test_wrong_key_fails_authentication() -> None:
    wire = SrtpContext(KEY, SALT).protect(rtp(1))
    with pytest.raises(SrtpError, match="authentication failed") as err:
        SrtpContext(bytes(16), SALT).unprotect(wire)
    assert err.value.reason == "auth"


def test_tampered_srtcp_fails_and_leaves_state_alone() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    wire = sender.protect_rtcp(rtcp_sr())
    damaged = bytearray(wire)
    damaged[12] ^= 0xFF
    with pytest.raises(SrtpError) as err:
        receiver.unprotect_rtcp(bytes(damaged))
    assert err.value.reason == "auth"
    assert receiver.unprotect_rtcp(wire) == rtcp_sr()


def test_forged_packet_does_not_advance_receive_state() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    assert receiver.unprotect(sender.protect(rtp(100))) == rtp(100)
    forged = rtp(40000) + bytes(10)  # a far-ahead seq with a made-up tag
    with pytest.raises(SrtpError):
        receiver.unprotect(forged)
    assert receiver.receive_roc(0x11223344) == 0
    assert receiver.unprotect(sender.protect(rtp(101))) == rtp(101)


# ------------------------------------------------------------------------ replay


def test_replayed_packet_is_rejected() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    wire = sender.protect(rtp(500))
    receiver.unprotect(wire)
    with pytest.raises(SrtpError, match="already received") as err:
        receiver.unprotect(wire)
    assert err.value.reason == "replay"


def test_reordered_packets_inside_the_window_are_accepted_once() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    wires = {seq: sender.protect(rtp(seq)) for seq in range(200, 300)}
    receiver.unprotect(wires[299])
    assert receiver.unprotect(wires[236]) == rtp(236)  # 63 behind: last slot in the window
    with pytest.raises(SrtpError) as err:
        receiver.unprotect(wires[235])  # 64 behind: outside
    assert err.value.reason == "replay"
    assert receiver.unprotect(wires[250]) == rtp(250)
    with pytest.raises(SrtpError):
        receiver.unprotect(wires[250])


def test_srtcp_replay_is_rejected() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    first, second = sender.protect_rtcp(rtcp_sr()), sender.protect_rtcp(rtcp_sr())
    receiver.unprotect_rtcp(second)
    receiver.unprotect_rtcp(first)  # late but new
    with pytest.raises(SrtpError) as err:
        receiver.unprotect_rtcp(first)
    assert err.value.reason == "replay"


def test_replay_window_follows_the_highest_index() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    wires = {seq: sender.protect(rtp(seq)) for seq in (10, 36, 37, 100, 936, 999, 1000)}

    def refused(seq: int) -> bool:
        try:
            receiver.unprotect(wires[seq])
        except SrtpError as err:
            assert err.reason == "replay", seq
            return True
        return False

    assert not refused(10)
    assert refused(10)
    assert not refused(100)
    assert refused(36)  # 100 - 63 is the oldest slot
    assert not refused(37)
    assert refused(37)
    assert not refused(1000)  # a jump wider than the window clears it
    assert refused(936) and refused(1000)
    assert not refused(999)


# --------------------------------------------------------------- ROC and index


@pytest.mark.parametrize(
    ("roc", "s_l", "seq", "expected_v"),
    [
        (0, 100, 101, 0),
        (0, 100, 50, 0),
        (3, 100, 65000, 2),  # late packet from before the last wrap
        (3, 65500, 10, 4),  # wrapped
        (3, 65500, 65400, 3),
        (3, 40000, 7232, 3),  # s_l - 2^15 exactly: still this ROC
        (3, 40000, 7231, 4),  # one below: wrapped
        (3, 100, 32868, 3),  # seq - s_l exactly 2^15: still this ROC
        (3, 100, 32869, 2),  # one more: from before the wrap
    ],
)
def test_estimate_index_appendix_a(roc: int, s_l: int, seq: int, expected_v: int) -> None:
    v, index = estimate_index(roc, s_l, seq)
    assert v == expected_v
    assert index == expected_v * 65536 + seq


def test_roc_advances_across_sequence_wrap_on_both_sides() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    seqs = [65533, 65534, 65535, 0, 1, 2]
    for seq in seqs:
        assert receiver.unprotect(sender.protect(rtp(seq))) == rtp(seq)
    assert sender.send_roc(0x11223344) == 1
    assert receiver.receive_roc(0x11223344) == 1


def test_packet_after_wrap_carries_roc_in_iv_and_tag() -> None:
    sender = SrtpContext(KEY, SALT)
    for seq in (65534, 65535):
        sender.protect(rtp(seq))
    wire = sender.protect(rtp(0))
    # Rebuild the expected packet from the primitives with ROC 1, index 2^16.
    keys = derive_session_keys(KEY, SALT)
    ssrc, index = 0x11223344, 1 << 16
    iv = (int.from_bytes(keys.salt, "big") << 16) ^ (ssrc << 64) ^ (index << 16)
    stream = aes_cm_keystream(keys.cipher_key, iv.to_bytes(16, "big"), 160)
    body = bytes(a ^ b for a, b in zip(rtp(0)[12:], stream, strict=True))
    packet = rtp(0)[:12] + body
    tag = hmac.new(keys.auth_key, packet + b"\x00\x00\x00\x01", hashlib.sha1).digest()[:10]
    assert wire == packet + tag
    assert wire != SrtpContext(KEY, SALT).protect(rtp(0))  # same seq at ROC 0 differs


def test_late_packet_from_before_the_wrap_still_decrypts() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    wires = {seq: sender.protect(rtp(seq)) for seq in (65533, 65534, 65535, 0, 1)}
    for seq in (65533, 65535, 0, 1):
        receiver.unprotect(wires[seq])
    assert receiver.receive_roc(0x11223344) == 1
    assert receiver.unprotect(wires[65534]) == rtp(65534)
    assert receiver.receive_roc(0x11223344) == 1


def test_loss_straddling_the_wrap_keeps_the_roc() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    wires = [sender.protect(rtp(seq % 65536)) for seq in range(65000, 66000)]
    receiver.unprotect(wires[0])
    assert receiver.unprotect(wires[-1]) == rtp(65999 % 65536)  # 999 lost in between
    assert receiver.receive_roc(0x11223344) == 1


def test_streams_are_tracked_per_ssrc() -> None:
    sender, receiver = SrtpContext(KEY, SALT), SrtpContext(KEY, SALT)
    a = [sender.protect(rtp(seq, ssrc=1)) for seq in (65535, 0)]
    b = sender.protect(rtp(65535, ssrc=2))
    assert (sender.send_roc(1), sender.send_roc(2), sender.send_roc(3)) == (1, 0, None)
    for wire in (*a, b):
        receiver.unprotect(wire)
    assert receiver.unprotect(sender.protect(rtp(0, ssrc=2))) == rtp(0, ssrc=2)
    assert (receiver.receive_roc(1), receiver.receive_roc(2)) == (1, 1)
    # Same sequence number on another SSRC is not a replay.
    assert receiver.unprotect(sender.protect(rtp(7, ssrc=9))) == rtp(7, ssrc=9)


# ------------------------------------------------------------------- bad packets


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x00" + bytes(19), "short"),  # 21 bytes: header + 9, tag needs 10
        (b"\x83" + bytes(11 + 10), "short"),  # claims 3 CSRCs
        (b"\x90" + bytes(11 + 10), "short"),  # extension flag, no extension header
        (b"\x40" + bytes(30), "malformed"),  # version 1
    ],
)
def test_bad_srtp_packets_are_refused_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(SrtpError) as err:
        SrtpContext(KEY, SALT).unprotect(data)
    assert err.value.reason == reason


def test_bad_rtcp_packets_are_refused() -> None:
    with pytest.raises(SrtpError) as err:
        SrtpContext(KEY, SALT).unprotect_rtcp(rtcp_sr()[:8] + bytes(13))
    assert err.value.reason == "short"
    with pytest.raises(SrtpError) as err:
        SrtpContext(KEY, SALT).protect_rtcp(b"\x80\xc8\x00")
    assert err.value.reason == "short"
    with pytest.raises(SrtpError) as err:
        SrtpContext(KEY, SALT).protect(b"\x00" * 20)
    assert err.value.reason == "malformed"
