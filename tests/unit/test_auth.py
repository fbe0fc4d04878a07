"""Digest authentication: client answers and server-side checks."""

from __future__ import annotations

import hashlib

import pytest

from gateway.sip.auth import (
    Challenge,
    build_authorization,
    check_nonce,
    make_nonce,
    parse_authorization,
    verify_response,
)
from gateway.sip.errors import SipParseError

RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int", '
    'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def test_challenge_parse() -> None:
    ch = Challenge.parse(RFC2617_CHALLENGE)
    assert ch.realm == "testrealm@host.com"
    assert ch.nonce == "dcd98b7102dd2f0e8b11d0f600bfb0c093"
    assert ch.opaque == "5ccc069c403ebaf9f0171e9517f40e41"
    assert ch.qop == ["auth", "auth-int"]
    assert ch.algorithm == "MD5"
    assert ch.stale is False


def test_challenge_parse_unquoted_stale_and_escapes() -> None:
    ch = Challenge.parse(
        'digest  realm = "a \\"quoted\\" realm, with comma" ,nonce=abc123,stale=TRUE,algorithm=MD5'
    )
    assert ch.realm == 'a "quoted" realm, with comma'
    assert ch.nonce == "abc123"
    assert ch.stale is True
    assert ch.qop == []


@pytest.mark.parametrize(
    "value",
    ['Basic realm="x"', 'Digest nonce="n"', 'Digest realm="x, nonce="n"', "Digest realm"],
)
def test_challenge_parse_rejects(value: str) -> None:
    with pytest.raises(SipParseError):
        Challenge.parse(value)


def test_rfc2617_vector() -> None:
    value = build_authorization(
        Challenge.parse(RFC2617_CHALLENGE),
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
        nc=1,
        cnonce="0a4f113b",
    )
    params = parse_authorization(value)
    assert params["response"] == "6629fae49393a05397450978507c4ef1"
    assert params["qop"] == "auth"
    assert params["nc"] == "00000001"
    assert params["cnonce"] == "0a4f113b"
    assert params["opaque"] == "5ccc069c403ebaf9f0171e9517f40e41"
    assert verify_response(params, method="GET", password="Circle Of Life")
    assert not verify_response(params, method="GET", password="circle of life")
    assert not verify_response(params, method="POST", password="Circle Of Life")


def test_rfc2069_form_without_qop() -> None:
    ch = Challenge.parse('Digest realm="sip.example.com", nonce="n0nce"')
    value = build_authorization(
        ch, method="REGISTER", uri="sip:sip.example.com", username="100", password="pw"
    )
    params = parse_authorization(value)
    ha1 = _md5("100:sip.example.com:pw")
    ha2 = _md5("REGISTER:sip:sip.example.com")
    assert params["response"] == _md5(f"{ha1}:n0nce:{ha2}")
    assert "qop" not in params and "cnonce" not in params and "opaque" not in params


def test_auth_int_when_only_offer_and_nc_increments() -> None:
    ch = Challenge.parse('Digest realm="r", nonce="n", qop="auth-int"')
    body = b"v=0\r\n"
    value = build_authorization(
        ch, method="INVITE", uri="sip:x@y", username="u", password="p", nc=3, cnonce="c", body=body
    )
    params = parse_authorization(value)
    assert params["qop"] == "auth-int"
    assert params["nc"] == "00000003"
    ha2 = _md5(f"INVITE:sip:x@y:{hashlib.md5(body).hexdigest()}")
    assert params["response"] == _md5(f"{_md5('u:r:p')}:n:00000003:c:auth-int:{ha2}")
    assert verify_response(params, method="INVITE", password="p", body=body)
    assert not verify_response(params, method="INVITE", password="p", body=b"other")


def test_random_cnonce_differs() -> None:
    ch = Challenge.parse(RFC2617_CHALLENGE)
    a = parse_authorization(
        build_authorization(ch, method="GET", uri="/", username="u", password="p")
    )
    b = parse_authorization(
        build_authorization(ch, method="GET", uri="/", username="u", password="p")
    )
    assert a["cnonce"] != b["cnonce"]


def test_sha256_and_md5_sess() -> None:
    for algorithm in ("SHA-256", "MD5-sess"):
        ch = Challenge.parse(f'Digest realm="r", nonce="n", qop="auth", algorithm={algorithm}')
        value = build_authorization(ch, method="BYE", uri="sip:a@b", username="u", password="p")
        params = parse_authorization(value)
        assert params["algorithm"] == algorithm
        assert verify_response(params, method="BYE", password="p")
        assert not verify_response(params, method="BYE", password="q")
    sha = parse_authorization(
        build_authorization(
            Challenge.parse('Digest realm="r", nonce="n", algorithm=SHA-256'),
            method="BYE", uri="sip:a@b", username="u", password="p",
        )
    )
    assert len(sha["response"]) == 64


def test_parse_authorization_requires_fields() -> None:
    with pytest.raises(SipParseError):
        parse_authorization('Digest username="u", realm="r"')
    with pytest.raises(SipParseError):
        parse_authorization('Basic dXNlcjpwYXNz')


def test_verify_rejects_tampered_or_odd_params() -> None:
    ch = Challenge.parse(RFC2617_CHALLENGE)
    params = parse_authorization(
        build_authorization(ch, method="GET", uri="/", username="u", password="p")
    )
    assert not verify_response({**params, "uri": "/other"}, method="GET", password="p")
    assert not verify_response({**params, "qop": "weird"}, method="GET", password="p")
    assert not verify_response({**params, "algorithm": "ROT13"}, method="GET", password="p")
    no_cnonce = {k: v for k, v in params.items() if k != "cnonce"}
    assert not verify_response(no_cnonce, method="GET", password="p")


def test_nonce_lifecycle() -> None:
    secret = b"k" * 32
    nonce = make_nonce(secret, now=1000.0)
    assert check_nonce(secret, nonce, now=1000.0)
    assert check_nonce(secret, nonce, now=1299.0)
    assert not check_nonce(secret, nonce, now=1301.0)  # stale
    assert check_nonce(secret, nonce, now=1301.0, max_age=400.0)
    assert not check_nonce(secret, nonce, now=999.0)  # from the future
    assert not check_nonce(b"other", nonce, now=1000.0)
    forged = "ffffffff" + nonce[nonce.index("-") :]
    assert not check_nonce(secret, forged, now=1000.0)
    assert not check_nonce(secret, "garbage", now=1000.0)
    assert make_nonce(secret, 1000.0) != nonce
