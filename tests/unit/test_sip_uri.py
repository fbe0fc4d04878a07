"""SIP URI parsing and printing."""

from __future__ import annotations

import pytest

from gateway.sip.errors import SipParseError
from gateway.sip.uri import SipUri


def test_full_uri_fields() -> None:
    uri = SipUri.parse("sip:alice:secret@Example.COM:5070;Transport=TCP;lr?Subject=hi&Priority=urgent")
    assert uri.scheme == "sip"
    assert uri.user == "alice"
    assert uri.password == "secret"
    assert uri.host == "Example.COM"
    assert uri.port == 5070
    assert uri.params == {"transport": "TCP", "lr": None}
    assert uri.headers == {"Subject": "hi", "Priority": "urgent"}
    assert uri.transport == "tcp"


@pytest.mark.parametrize(
    "text",
    [
        "sip:alice@example.com",
        "sips:bob@10.0.0.1:5061",
        "sip:example.com",
        "sip:[2001:db8::1]:5060;transport=udp",
        "sip:user;par=u%40example.net@example.com",
        "sip:%61lice@example.com;maddr=239.255.255.1;ttl=15",
        "tel:+15551234567;phone-context=example.com",
        "sip:alice@example.com;lr?Route=%3Csip:x%3E",
    ],
)
def test_round_trip(text: str) -> None:
    assert str(SipUri.parse(text)) == text


def test_ipv6_host_port() -> None:
    uri = SipUri.parse("sip:alice@[::1]:5080")
    assert uri.host == "[::1]"
    assert uri.host_port() == ("::1", 5080)
    assert SipUri.parse("sip:[::1]").host_port(5061) == ("::1", 5061)


def test_default_port() -> None:
    assert SipUri.parse("sip:alice@192.0.2.1").host_port() == ("192.0.2.1", 5060)


def test_escaped_user_kept_as_written() -> None:
    uri = SipUri.parse("sip:sips%3Auser%40example.com@example.net")
    assert uri.user == "sips%3Auser%40example.com"
    assert uri.host == "example.net"


def test_semicolon_in_user_part() -> None:
    uri = SipUri.parse("sip:user;par=u%40example.net@example.com")
    assert uri.user == "user;par=u%40example.net"
    assert uri.params == {}


def test_scheme_is_case_insensitive() -> None:
    assert SipUri.parse("SIP:a@b").scheme == "sip"


def test_unknown_scheme_is_416() -> None:
    with pytest.raises(SipParseError) as info:
        SipUri.parse("soap.beep://192.0.2.103:3002")
    assert info.value.status == 416


@pytest.mark.parametrize(
    "text",
    [
        "",
        "alice@example.com",
        "sip:",
        "sip:alice@",
        "sip:alice@exa mple.com",
        "sip:alice@example.com:99999",
        "sip:alice@example.com:port",
        "sip:alice@[::1",
        "sip:<alice@example.com>",
        "sip:al ice@example.com",
        'sip:"a"@example.com',
        "sip:alice@example.com;=x",
    ],
)
def test_malformed(text: str) -> None:
    with pytest.raises(SipParseError):
        SipUri.parse(text)
