"""The security event line: fixed layout, escaping that defeats forgery, no secrets."""

from __future__ import annotations

import logging
import re

import pytest

from gateway.security import events
from gateway.security.events import format_event, format_source, log_event

# What a log reader (or the fail2ban filter) relies on: marker, kind, source, then fields.
HEAD = re.compile(r"^SECURITY event=(?P<kind>[a-z-]+) src=(?P<src>\S+)(?: |$)")
# A complete parser of the documented format, used to prove escaping round-trips.
FIELD = re.compile(r' (?P<key>[a-z_0-9]+)=(?:"(?P<quoted>(?:[^"\\]|\\.)*)"|(?P<bare>[^ "]+))')


def parse(line: str) -> tuple[str, str, dict[str, str]]:
    """Kind, source and fields of a line; fails the test if anything is left over."""
    head = HEAD.match(line)
    assert head is not None, line
    fields: dict[str, str] = {}
    pos = head.end() - (1 if line[head.end() - 1 : head.end()] == " " else 0)
    for m in FIELD.finditer(line, pos):
        assert m.start() == pos, f"junk at {pos}: {line[pos:]!r}"
        fields[m["key"]] = m["quoted"] if m["quoted"] is not None else m["bare"]
        pos = m.end()
    assert pos == len(line), f"unparsed tail {line[pos:]!r}"
    return head["kind"], head["src"], fields


def unescape(value: str) -> str:
    return re.sub(
        r"\\(x[0-9a-f]{2}|u[0-9a-f]{4}|.)",
        lambda m: chr(int(m[1][1:], 16)) if len(m[1]) > 1 else m[1],
        value,
    )


def test_example_line_is_exactly_the_documented_format() -> None:
    line = format_event(
        "auth-failure", "203.0.113.7", 5060, method="REGISTER", user="100", reason="bad password"
    )
    assert line == (
        'SECURITY event=auth-failure src=203.0.113.7:5060 method=REGISTER user="100" '
        'reason="bad password"'
    )


def test_numbers_and_booleans_are_bare_strings_quoted() -> None:
    line = format_event(
        "rate-limited", "198.51.100.4", 40000, bucket="call", suppressed=17, first=True, t=1.5
    )
    assert line.endswith(' bucket="call" suppressed=17 first=true t=1.500')


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("2001:db8::7", "[2001:db8::7]:5060"),
        ("2001:0db8:0000::0007", "[2001:db8::7]:5060"),
        ("::ffff:192.0.2.9", "192.0.2.9:5060"),
        ("192.0.2.9", "192.0.2.9:5060"),
    ],
)
def test_source_is_normalised(ip: str, expected: str) -> None:
    assert format_source(ip, 5060) == expected
    assert format_event("unknown-source", ip, 5060).endswith(f"src={expected}")


@pytest.mark.parametrize(
    "hostile",
    [
        '100" reason="ok',
        "100\nSECURITY event=auth-failure src=6.6.6.6:5060",
        "100\r\nSECURITY event=auth-failure src=6.6.6.6:5060",
        '" SECURITY event=auth-failure src=6.6.6.6:5060 x="',
        'back\\slash\\" src=6.6.6.6:1',
        "bidi\u202eevil\u2028next\x85line\x00nul\x1b[31m",
    ],
)
def test_hostile_value_stays_inside_its_quotes(hostile: str) -> None:
    line = format_event("auth-failure", "203.0.113.7", 5060, user=hostile, method="REGISTER")
    assert "\n" not in line and "\r" not in line
    assert all(ch.isprintable() for ch in line)
    kind, src, fields = parse(line)
    assert (kind, src) == ("auth-failure", "203.0.113.7:5060")
    assert list(fields) == ["user", "method"]
    assert unescape(fields["user"]) == hostile


def test_long_values_are_cut() -> None:
    line = format_event("auth-failure", "203.0.113.7", 5060, user="9" * 5000)
    _, _, fields = parse(line)
    assert fields["user"] == "9" * events.MAX_VALUE_CHARS + "..."


def test_method_that_is_not_a_token_is_quoted() -> None:
    line = format_event("auth-failure", "203.0.113.7", 5060, method="REG ISTER")
    assert line.endswith('method="REG ISTER"')


@pytest.mark.parametrize(
    "key", ["password", "response", "nonce", "authorization", "ha1", "secret", "pin"]
)
def test_secret_fields_are_refused(key: str) -> None:
    with pytest.raises(ValueError, match="secrets"):
        format_event("auth-failure", "203.0.113.7", 5060, **{key: "hunter2"})


@pytest.mark.parametrize(
    ("kind", "ip", "port", "fields", "match"),
    [
        ("Auth Failure", "203.0.113.7", 5060, {}, "kind"),
        ("auth-failure\nx", "203.0.113.7", 5060, {}, "kind"),
        ("auth-failure", "gw.example.net", 5060, {}, "src_ip"),
        ("auth-failure", "203.0.113.7 x", 5060, {}, "src_ip"),
        ("auth-failure", "203.0.113.7", 70000, {}, "src_port"),
        ("auth-failure", "203.0.113.7", 5060, {"src": "6.6.6.6"}, "reserved"),
        ("auth-failure", "203.0.113.7", 5060, {"Bad-Key": "x"}, "field"),
        ("auth-failure", "203.0.113.7", 5060, {"user": b"100"}, "expected str"),
    ],
)
def test_bad_input_is_refused_with_a_named_error(
    kind: str, ip: str, port: int, fields: dict[str, object], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        format_event(kind, ip, port, **fields)  # type: ignore[arg-type]


def test_log_event_writes_one_warning_on_the_security_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=events.LOGGER_NAME)
    line = log_event("unknown-source", "203.0.113.7", 5060, method="OPTIONS", user="%s%n")
    records = [r for r in caplog.records if r.name == "branchline.security"]
    assert len(records) == 1
    assert records[0].levelno == logging.WARNING
    assert records[0].getMessage() == line
    assert line == 'SECURITY event=unknown-source src=203.0.113.7:5060 method=OPTIONS user="%s%n"'
