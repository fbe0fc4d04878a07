"""Value converters for the config loader: YAML node in, typed value out, or `_Bad`.

Kept apart from the section readers so each file stays short; the converters know nothing
about where a value sits in the file, only what a good value looks like.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config import schema as s
from gateway.config.schema import HostPort, PortRange

T = TypeVar("T")

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = {_NULL, _BOOL, _INT, _FLOAT, _STR}


class _Bad(Exception):
    """A value is wrong; raised by converters and turned into a ConfigIssue by the caller."""

    def __init__(
        self, message: str, expected: str = "", node: Node | None = None, offset: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.expected = expected
        self.node = node
        self.offset = offset  # character offset inside a scalar's value, when known


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(node: Node) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return {
        _NULL: "null",
        _BOOL: f"the boolean {node.value}",
        _INT: f"the integer {node.value}",
        _FLOAT: f"the number {node.value}",
    }.get(node.tag, f"the string {node.value!r}")


def _suggest(word: str, choices: Iterable[str]) -> str:
    options = list(choices)
    lowered = {c.lower(): c for c in options}
    if word.lower() in lowered:
        return f" (did you mean {lowered[word.lower()]!r}?)"
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _one_of(choices: Sequence[str]) -> str:
    quoted = [repr(c) for c in choices]
    if len(quoted) == 1:
        return quoted[0]
    return "one of " + ", ".join(quoted)


def _valid_hostname(host: str) -> bool:
    if not host or len(host) > 253:
        return False
    label = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
    return all(label.fullmatch(part) for part in host.rstrip(".").split("."))


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return _valid_hostname(host)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _min_match_length(pattern: str) -> int | None:
    """The length of the shortest string `pattern` can match, when the parser can tell."""
    try:
        from re import _parser  # type: ignore[attr-defined]

        low, _high = _parser.parse(pattern).getwidth()
        return int(low)
    except Exception:
        return None


# --- converters (raise _Bad) ---------------------------------------------------------------


def _scalar_text(node: Node, expected: str) -> str:
    """The raw text of a scalar, so `number: 0101` stays "0101" and is never read as octal."""
    if not isinstance(node, ScalarNode) or node.tag == _NULL or node.tag not in _PLAIN_TAGS:
        raise _Bad(f"expected {expected}, got {_describe(node)}", expected)
    return str(node.value)


def _text(*, nonempty: bool) -> Callable[[Node], str]:
    def convert(node: Node) -> str:
        value = _scalar_text(node, "a string")
        if nonempty and not value.strip():
            raise _Bad("must not be empty", "a non-empty string")
        return value

    return convert


def _header_text(node: Node) -> str:
    value = _text(nonempty=True)(node)
    if any(ord(c) < 32 or ord(c) == 127 for c in value) or '"' in value:
        raise _Bad("contains control characters or '\"'", "printable text on one line")
    return value


def _pattern(regex: str, expected: str, *, allow_empty: bool = False) -> Callable[[Node], str]:
    compiled = re.compile(regex)

    def convert(node: Node) -> str:
        value = _scalar_text(node, "a string")
        if value == "" and allow_empty:
            return value
        if not compiled.fullmatch(value):
            raise _Bad(f"invalid value {value!r}", expected)
        return value

    return convert


def _choice(choices: Sequence[str], aliases: dict[str, str] | None = None) -> Callable[[Node], str]:
    def convert(node: Node) -> str:
        value = _scalar_text(node, _one_of(choices))
        if value in choices:
            return value
        hint = (
            f" (did you mean {aliases[value]!r}?)"
            if aliases and value in aliases
            else _suggest(value, choices)
        )
        raise _Bad(f"unknown value {value!r}{hint}", _one_of(choices))

    return convert


def _transport(node: Node) -> str:
    value = _scalar_text(node, _one_of(s.TRANSPORTS))
    if value in s.TRANSPORTS:
        return value
    if value.lower() in s.TRANSPORTS:
        raise _Bad(f"unknown transport {value!r} (did you mean {value.lower()!r}?)",
                   _one_of(s.TRANSPORTS))
    if value.lower() in ("ws", "wss", "sctp"):
        raise _Bad(f"transport {value!r} is not supported", _one_of(s.TRANSPORTS))
    raise _Bad(f"unknown transport {value!r}{_suggest(value, s.TRANSPORTS)}", _one_of(s.TRANSPORTS))


def _bool(node: Node) -> bool:
    if not isinstance(node, ScalarNode) or node.tag != _BOOL:
        raise _Bad(f"expected true or false, got {_describe(node)}", "true or false")
    return bool(SafeConstructor().construct_yaml_bool(node))


def _existing_file(node: Node) -> str:
    """An absolute path to a readable file (certificates, keys, CA bundles)."""
    value = _abs_path(node)
    if not os.path.isfile(value):
        raise _Bad(f"no such file {value!r}", "an absolute path to an existing file")
    if not os.access(value, os.R_OK):
        raise _Bad(f"file {value!r} is not readable", "a file the daemon can read")
    return value


def _dns_server(node: Node) -> HostPort:
    """A name server "IP" or "IP:port" (never a name: resolving it would need DNS)."""
    text = _scalar_text(node, "IP[:port], e.g. 127.0.0.1:5353")
    hp = _parse_host_port(text, False, True)
    return hp if hp.port_given else HostPort(hp.host, s.DEFAULT_DNS_PORT)


def _int_range(low: int, high: int) -> Callable[[Node], int]:
    expected = f"an integer from {low} to {high}"

    def convert(node: Node) -> int:
        if not isinstance(node, ScalarNode) or node.tag != _INT:
            raise _Bad(f"expected an integer, got {_describe(node)}", expected)
        value = int(SafeConstructor().construct_yaml_int(node))
        if not low <= value <= high:
            raise _Bad(f"{value} is out of range", expected)
        return value

    return convert


def _float_range(low: float, high: float) -> Callable[[Node], float]:
    expected = f"a number from {low:g} to {high:g}"

    def convert(node: Node) -> float:
        if not isinstance(node, ScalarNode) or node.tag not in (_INT, _FLOAT):
            raise _Bad(f"expected a number, got {_describe(node)}", expected)
        constructor = SafeConstructor()
        raw = (
            constructor.construct_yaml_int(node)
            if node.tag == _INT
            else constructor.construct_yaml_float(node)
        )
        value = float(raw)
        if not low <= value <= high:  # also rejects .nan
            raise _Bad(f"{value:g} is out of range", expected)
        return value

    return convert


def _optional(convert: Callable[[Node], T]) -> Callable[[Node], T | None]:
    def wrapped(node: Node) -> T | None:
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            return None
        return convert(node)

    return wrapped


def _abs_path(node: Node) -> str:
    value = _text(nonempty=True)(node)
    if not value.startswith("/"):
        raise _Bad(f"{value!r} is not an absolute path", "an absolute path")
    if "\0" in value:
        raise _Bad("path contains a NUL character", "an absolute path")
    return value


def _socket_path(node: Node) -> str:
    value = _abs_path(node)
    if len(value.encode("utf-8")) > s.UNIX_SOCKET_PATH_MAX:
        raise _Bad(
            f"path is {len(value.encode('utf-8'))} bytes, too long for a Unix socket",
            f"an absolute path of at most {s.UNIX_SOCKET_PATH_MAX} bytes",
        )
    return value


def _host(node: Node) -> str:
    value = _scalar_text(node, "a host name or IP address")
    if not _valid_host(value):
        raise _Bad(f"invalid host {value!r}", "a host name or IP address")
    return value


def _parse_host_port(text: str, need_port: bool, ip_only: bool) -> HostPort:
    """Parse "host:port", "[v6]:port", "host" or a bare IPv6 address; raises _Bad."""
    expected = "IP:port, e.g. 0.0.0.0:5060" if need_port and ip_only else "host[:port]"
    port_text: str | None = None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise _Bad(f"unclosed '[' in {text!r}", expected)
        host, rest = text[1:end], text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise _Bad(f"unexpected {rest!r} after ']'", expected)
            port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host = text
    if not (_is_ip(host) if ip_only else _valid_host(host)):
        raise _Bad(f"invalid {'IP address' if ip_only else 'host'} {host!r}", expected)
    if port_text is None:
        if need_port:
            raise _Bad(f"{text!r} has no port", expected)
        return HostPort(host, s.DEFAULT_SIP_PORT, port_given=False)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise _Bad(f"invalid port {port_text!r}", expected + " with a port from 1 to 65535")
    return HostPort(host, int(port_text))


def _host_port(*, need_port: bool, ip_only: bool) -> Callable[[Node], HostPort]:
    def convert(node: Node) -> HostPort:
        expected = "IP:port, e.g. 0.0.0.0:5060" if need_port and ip_only else "host[:port]"
        return _parse_host_port(_scalar_text(node, expected), need_port, ip_only)

    return convert


def _parse_port_range(text: str) -> PortRange:
    expected = f"an even first port and a higher last port, e.g. {s.DEFAULT_RTP_PORTS}"
    match = re.fullmatch(s.RTP_PORTS_PATTERN, text.replace(" ", ""))
    if not match:
        raise _Bad(f"invalid port range {text!r}", expected)
    first, last = int(match.group(1)), int(match.group(2))
    if not (s.RTP_PORT_MIN <= first <= s.RTP_PORT_MAX and s.RTP_PORT_MIN <= last <= s.RTP_PORT_MAX):
        raise _Bad(f"ports must be from {s.RTP_PORT_MIN} to {s.RTP_PORT_MAX}", expected)
    if first % 2:
        raise _Bad(f"first port {first} is odd (RTP uses even ports)", expected)
    if last <= first:
        raise _Bad(f"last port {last} is not above first port {first}", expected)
    return PortRange(first, last)


def _port_range(node: Node) -> PortRange:
    return _parse_port_range(_scalar_text(node, "a port range such as 10000-10999"))


def _regex(node: Node) -> str:
    value = _text(nonempty=True)(node)
    try:
        re.compile(value)
    except re.error as exc:
        raise _Bad(
            f"invalid regular expression: {exc.msg}",
            "a regular expression (full match on the dialled digits)",
            offset=exc.pos,
        ) from exc
    return value


def _digit_map(node: Node) -> str:
    from gateway.routing.dialplan import DialPlanError, DigitMap

    value = _text(nonempty=True)(node)
    try:
        DigitMap(value)
    except DialPlanError as exc:
        raise _Bad(
            f"invalid digit map: {exc.message}",
            "a digit map such as '(1xx|[2-9]xxxxxx|x.T)'",
            offset=exc.position,
        ) from exc
    return value


def _value_column_offset(node: ScalarNode, offset: int) -> int:
    """Columns from a scalar's start to character `offset` of its value.

    Exact for one-line plain and quoted scalars without escapes; otherwise 0, so the issue
    points at the start of the value rather than at a wrong character.
    """
    start, end = node.start_mark, node.end_mark
    if start is None or end is None or start.buffer is None or start.line != end.line:
        return 0
    raw = start.buffer[start.index : end.index]
    quote = 1 if node.style in ("'", '"') else 0
    if raw[quote : len(raw) - quote] != node.value or not 0 <= offset <= len(node.value):
        return 0
    return quote + offset


def _password_problem(password: str, username: str, auth_username: str | None) -> str | None:
    if not password:
        return "password is empty"
    lowered = password.lower()
    if lowered in s.WEAK_PASSWORDS:
        return "password is a well-known default"
    if lowered in {username.lower(), (auth_username or username).lower()}:
        return "password is the same as the user name"
    return None


def _not_plain(value: Any) -> str | None:
    """A description of the first value that JSON cannot carry, or None."""
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return (
            None if value == value and value not in (float("inf"), float("-inf")) else repr(value)
        )
    if isinstance(value, list):
        for item in value:
            problem = _not_plain(item)
            if problem:
                return problem
        return None
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"key {key!r}"
            problem = _not_plain(item)
            if problem:
                return problem
        return None
    return f"{value!r} ({type(value).__name__})"


def _value_node(mapping: Node, key: str) -> Node | None:
    """The value node written for `key` in a mapping node, if any."""
    if not isinstance(mapping, MappingNode):
        return None
    found: Node | None = None
    for key_node, value_node in mapping.value:
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            found = value_node
    return found
