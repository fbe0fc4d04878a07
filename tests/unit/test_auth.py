"""Digest authentication: client answers and server-side checks."""

from __future__ import annotations

import hashlib

import pytest

from gateway.sip.auth import (
    Challenge,
    DigestOutcome,
    NonceCounts,
    build_authorization,
    check_credentials,
    check_nonce,
    digest_uri_matches,
    make_challenges,
    make_nonce,
    parse_authorization,
    select_challenge,
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


# ---------------------------------------------------------------------- RFC 7616 vectors

RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"


@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_section_3_9_1_vectors(algorithm: str, expected: str) -> None:
    ch = Challenge.parse(f'Digest realm="http-auth@example.org", qop="auth, auth-int", '
                         f'algorithm={algorithm}, nonce="{RFC7616_NONCE}"')
    params = parse_authorization(build_authorization(
        ch, method="GET", uri="/dir/index.html", username="Mufasa",
        password="Circle of Life", nc=1, cnonce=RFC7616_CNONCE))
    assert params["response"] == expected


# ---------------------------------------------------------------------- choosing a challenge


def test_select_challenge_takes_sha256_from_unknown_md5_and_sha256() -> None:
    values = ['Digest realm="r", nonce="n1", algorithm=SHA3-FANCY, qop="auth"',
              'Digest realm="r", nonce="n2", algorithm=MD5, qop="auth"',
              'Digest realm="r", nonce="n3", algorithm=SHA-256, qop="auth"']
    chosen = select_challenge(values)
    assert (chosen.algorithm, chosen.nonce) == ("SHA-256", "n3")
    assert select_challenge(values[:2]).algorithm == "MD5"  # the unknown one is skipped


def test_select_challenge_prefers_sha512_256_and_skips_what_it_cannot_answer() -> None:
    values = ['Basic realm="r"',
              'Digest realm="r", nonce="a", algorithm=SHA-256, qop="auth-conf"',
              'Digest realm="r", nonce="b", algorithm=MD5',
              'Digest realm="r", nonce="c", algorithm=SHA-512-256, qop="auth"',
              'Digest realm="r", nonce="d", algorithm=SHA-256, qop="auth"']
    assert select_challenge(values).nonce == "c"
    assert select_challenge(values[:3]).nonce == "b"  # qop=auth-conf alone is not ours
    with pytest.raises(SipParseError):
        select_challenge(['Digest realm="r", nonce="n", algorithm=ROT13', "garbage", 'Basic x=1'])
    with pytest.raises(SipParseError):
        select_challenge([])


def test_sha512_256_answer_verifies() -> None:
    ch = select_challenge(['Digest realm="r", nonce="n", algorithm=SHA-512-256, qop="auth"'])
    params = parse_authorization(build_authorization(ch, method="INVITE", uri="sip:a@b",
                                                     username="u", password="p", cnonce="c"))
    ha1 = hashlib.new("sha512_256", b"u:r:p").hexdigest()
    ha2 = hashlib.new("sha512_256", b"INVITE:sip:a@b").hexdigest()
    assert params["response"] == hashlib.new(
        "sha512_256", f"{ha1}:n:00000001:c:auth:{ha2}".encode()).hexdigest()


def test_auth_int_sha256_hashes_the_entity_body_by_hand() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\n"
    ch = Challenge.parse('Digest realm="r", nonce="n", algorithm=SHA-256, qop="auth-int"')
    params = parse_authorization(build_authorization(
        ch, method="INVITE", uri="sip:5551234@pbx", username="u", password="p", nc=1,
        cnonce="c0", body=body))

    def sha(text: str | bytes) -> str:
        return hashlib.sha256(text if isinstance(text, bytes) else text.encode()).hexdigest()

    ha2 = sha(f"INVITE:sip:5551234@pbx:{sha(body)}")
    assert params["response"] == sha(f"{sha('u:r:p')}:n:00000001:c0:auth-int:{ha2}")


# ---------------------------------------------------------------------- server side

SECRET = b"s" * 32


def test_server_offers_sha256_first_then_md5_with_one_nonce() -> None:
    values = make_challenges("branch", "NONCE", stale=True, algorithms=("SHA-256", "MD5"))
    parsed = [Challenge.parse(v) for v in values]
    assert [c.algorithm for c in parsed] == ["SHA-256", "MD5"]
    assert {c.nonce for c in parsed} == {"NONCE"}
    assert all(c.stale and c.qop == ["auth"] and c.realm == "branch" for c in parsed)
    assert select_challenge(values).algorithm == "SHA-256"


def test_the_default_offer_leads_with_md5_for_clients_that_read_only_the_first() -> None:
    values = make_challenges("branch", "NONCE")
    assert [Challenge.parse(v).algorithm for v in values] == ["MD5", "SHA-256"]
    assert select_challenge(values).algorithm == "SHA-256"  # a client that picks the best


@pytest.mark.parametrize(("digest_uri", "request_uri"), [
    ("sip:alice@gw.example", "sip:alice@gw.example"),
    ("sip:alice@GW.Example", "sip:alice@gw.example"),
    ("sip:%61lice@gw.example", "sip:alice@gw.example"),
    ("sip:alice@gw.example;transport=UDP", "sip:alice@gw.example;transport=udp"),
    ("sip:alice@gw.example;foo=1", "sip:alice@gw.example"),
    ("sip:alice@[::1]:5070", "sip:alice@[0:0::1]:5070"),
])
def test_digest_uri_matches_equivalent_sip_uris(digest_uri: str, request_uri: str) -> None:
    assert digest_uri_matches(digest_uri, request_uri)


@pytest.mark.parametrize(("digest_uri", "request_uri"), [
    ("sip:alice@gw.example", "sip:5551234@gw.example"),
    ("sip:Alice@gw.example", "sip:alice@gw.example"),
    ("sip:alice@gw.example", "sip:alice@gw.example:5060"),
    ("sip:alice@gw.example", "sips:alice@gw.example"),
    ("sip:alice@gw.example;transport=tcp", "sip:alice@gw.example"),
    ("sip:alice@gw.example;user=phone", "sip:alice@gw.example;user=ip"),
    ("sip:alice@gw.example?subject=x", "sip:alice@gw.example"),
    ("sip:gw.example", "sip:alice@gw.example"),
    ("not a uri", "sip:alice@gw.example"),
])
def test_digest_uri_refuses_other_uris(digest_uri: str, request_uri: str) -> None:
    assert not digest_uri_matches(digest_uri, request_uri)


def _answer(nonce: str, *, nc: int = 1, uri: str = "sip:gw", algorithm: str = "MD5",
            qop: list[str] | None = None, password: str = "pw") -> dict[str, str]:
    ch = Challenge(realm="r", nonce=nonce, algorithm=algorithm,
                   qop=["auth"] if qop is None else qop)
    return parse_authorization(build_authorization(ch, method="REGISTER", uri=uri,
                                                   username="u", password=password, nc=nc))


def _check(params: dict[str, str], counts: NonceCounts, now: float = 1.0,
           request_uri: str = "sip:gw") -> DigestOutcome:
    return check_credentials(params, method="REGISTER", request_uri=request_uri,
                             password="pw", secret=SECRET, counts=counts, now=now).outcome


def test_check_credentials_refuses_a_repeated_or_lower_nonce_count() -> None:
    counts = NonceCounts()
    nonce = make_nonce(SECRET, 0.0)
    assert _check(_answer(nonce, nc=1), counts) is DigestOutcome.ACCEPTED
    assert _check(_answer(nonce, nc=1), counts) is DigestOutcome.REPLAYED
    assert _check(_answer(nonce, nc=3), counts) is DigestOutcome.ACCEPTED
    assert _check(_answer(nonce, nc=2), counts) is DigestOutcome.REPLAYED
    assert _check(_answer(nonce, nc=3), counts) is DigestOutcome.REPLAYED
    assert len(counts) == 1


def test_check_credentials_rules_before_hashing() -> None:
    counts = NonceCounts()
    nonce = make_nonce(SECRET, 0.0)
    no_qop = _answer(nonce, qop=[])
    assert "qop" not in no_qop
    assert verify_response(no_qop, method="REGISTER", password="pw")  # a valid RFC 2069 answer
    result = check_credentials(no_qop, method="REGISTER", request_uri="sip:gw", password="pw",
                               secret=SECRET, counts=counts, now=1.0)
    assert (result.outcome, result.reason) == (DigestOutcome.REFUSED, "qop missing")
    assert _check(_answer(nonce, algorithm="MD5-sess"), counts) is DigestOutcome.REFUSED
    assert _check(_answer(nonce, uri="sip:other"), counts) is DigestOutcome.REFUSED
    assert _check({**_answer(nonce), "nc": "1"}, counts) is DigestOutcome.REFUSED
    assert _check(_answer(nonce, password="guess"), counts) is DigestOutcome.WRONG
    assert _check(_answer(nonce, algorithm="SHA-256"), counts) is DigestOutcome.ACCEPTED
    assert _check(_answer(nonce, nc=2), counts, now=301.0) is DigestOutcome.STALE
    assert _check(_answer("forged-nonce-x"), counts) is DigestOutcome.STALE


def test_nonce_counts_stay_bounded_and_forgetting_never_reopens_a_replay() -> None:
    counts = NonceCounts(max_entries=8)
    nonces = [make_nonce(SECRET, i / 1000) for i in range(100)]
    for nonce in nonces:
        assert counts.advance(nonce, 1, 0.1) == "ok"
        assert len(counts) <= 8
    # the first ones were forgotten: their replay is not accepted, it is "answer stale"
    assert counts.advance(nonces[0], 1, 0.1) == "forgotten"
    assert counts.advance(nonces[0], 2, 0.1) == "forgotten"
    assert counts.advance(nonces[-1], 1, 0.1) == "replayed"
    assert counts.advance(nonces[-1], 2, 0.1) == "ok"
    # a nonce issued after the forgotten ones still starts fresh
    assert counts.advance(make_nonce(SECRET, 1.0), 1, 1.0) == "ok"


def test_nonce_counts_drop_expired_entries() -> None:
    counts = NonceCounts(max_entries=100, max_age=300.0)
    for i in range(10):
        counts.advance(make_nonce(SECRET, float(i)), 1, float(i))
    counts.advance(make_nonce(SECRET, 400.0), 1, 400.0)
    assert len(counts) == 1


def test_the_accepted_request_resent_is_a_retransmission_anything_else_a_replay() -> None:
    counts = NonceCounts()
    nonce = make_nonce(SECRET, 0.0)
    params = _answer(nonce, nc=1)

    def check(key: bytes | None) -> DigestOutcome:
        return check_credentials(params, method="REGISTER", request_uri="sip:gw",
                                 password="pw", secret=SECRET, counts=counts, now=1.0,
                                 request_key=key).outcome

    assert check(b"request-1") is DigestOutcome.ACCEPTED
    assert check(b"request-1") is DigestOutcome.RETRANSMITTED  # UDP resent it
    assert check(b"request-1") is DigestOutcome.RETRANSMITTED
    assert check(b"request-2") is DigestOutcome.REPLAYED  # another Call-ID/CSeq/branch/source
    assert check(None) is DigestOutcome.REPLAYED
    assert counts.advance(nonce, 2, 1.0, b"request-3") == "ok"
    # once a higher count was used, the old request is history: a replay
    assert counts.advance(nonce, 1, 1.0, b"request-1") == "replayed"
    assert counts.advance(nonce, 2, 1.0, b"request-3") == "retransmission"
