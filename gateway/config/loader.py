"""Build a `Config` from YAML, reporting every problem with its line and column.

The loader walks the node tree from `yaml.compose` (SafeLoader) rather than plain Python
data, so each value still knows where it was written. It collects all issues before
raising, so an installer fixes a file in one pass instead of one error per restart.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any, TypeVar

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gateway.config import schema as s
from gateway.config.schema import (
    Config,
    DialPlan,
    GatewaySettings,
    HostPort,
    LineConfig,
    LineTrunk,
    PortRange,
    Route,
    SipSettings,
    TrunkConfig,
)

T = TypeVar("T")

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_PLAIN_TAGS = {_NULL, _BOOL, _INT, _FLOAT, _STR}


@dataclass(frozen=True)
class ConfigIssue:
    """One problem in a config file; line and column are 1-based (0 when not in the file)."""

    line: int
    column: int
    path: str
    message: str
    expected: str = ""

    def format(self, source: str) -> str:
        """ "FILE:LINE:COL: path: message (expected: ...)", the shape editors can jump to."""
        where = f"{source}:{self.line}:{self.column}" if self.line > 0 else source
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.expected:
            text += f" (expected: {self.expected})"
        return text


class ConfigError(Exception):
    """A config was refused; `errors` lists every issue found, in file order."""

    def __init__(self, source: str, errors: Sequence[ConfigIssue]) -> None:
        self.source = source
        self.errors: list[ConfigIssue] = list(errors)
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return "\n".join(issue.format(self.source) for issue in self.errors)


RouteProbe = Callable[[str | None], str | None]


def default_route_address(toward: str | None = None) -> str | None:
    """The local IPv4 address the kernel would use toward `toward` (or the default route).

    `connect()` on a UDP socket only selects a route; no packet is sent. Only IP literals are
    used as targets, so loading a config never triggers a DNS lookup.
    """
    target = "192.0.2.1"  # TEST-NET-1: any address that follows the default route
    if toward is not None:
        try:
            if ipaddress.ip_address(toward).version == 4:
                target = toward
        except ValueError:
            pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((target, 9))
            address = str(sock.getsockname()[0])
    except OSError:
        return None
    return None if address in ("0.0.0.0", "") else address


def load_config(path: str | os.PathLike[str], *, route_probe: RouteProbe | None = None) -> Config:
    """Load and validate a config file; raises ConfigError (also for an unreadable file)."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(source, [ConfigIssue(0, 0, "", f"cannot read file: {reason}")]) from exc
    return load_config_text(text, source, route_probe=route_probe)


def load_config_text(
    text: str, source_name: str = "<string>", *, route_probe: RouteProbe | None = None
) -> Config:
    """Validate YAML text; `source_name` is what error lines start with."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ConfigError(
            source_name, [ConfigIssue(line, column, "", f"YAML syntax error: {message}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            source_name, [ConfigIssue(0, 0, "", f"YAML syntax error: {exc}")]
        ) from exc
    reader = _Reader(route_probe or default_route_address)
    config = reader.config(root, source_name)
    if reader.issues or config is None:
        raise ConfigError(source_name, reader.sorted_issues())
    return config


def load_default() -> Config:
    """The embedded default: two simulated phones (101, 102), no trunk, loopback only."""
    text = resources.files("gateway.config").joinpath("default.yaml").read_text("utf-8")
    return load_config_text(text, "<default>")


# --- helpers -----------------------------------------------------------------------------


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


class _Fields:
    """The keys of one mapping node that passed the unknown/duplicate-key checks."""

    def __init__(self, node: MappingNode, path: str, values: dict[str, Node]) -> None:
        self.node = node
        self.path = path
        self.values = values

    def has(self, key: str) -> bool:
        """True when the key was written (even as null)."""
        return key in self.values

    def node_of(self, key: str) -> Node:
        """The value node for `key`, or the mapping itself (for "missing key" positions)."""
        return self.values.get(key, self.node)

    def child(self, key: str) -> str:
        """The dotted path of `key` inside this mapping."""
        return _join(self.path, key)


@dataclass
class _Seen:
    """Values that must be unique across lines, with the node that first used each."""

    names: dict[str, Node] = field(default_factory=dict)
    numbers: dict[str, Node] = field(default_factory=dict)
    accounts: dict[tuple[str, str], Node] = field(default_factory=dict)


class _Reader:
    """Walks the node tree, converting values and collecting issues."""

    def __init__(self, route_probe: RouteProbe) -> None:
        self.issues: list[ConfigIssue] = []
        self.route_probe = route_probe
        self.constructor = SafeConstructor()

    # -- issue bookkeeping

    def issue(
        self, node: Node, path: str, message: str, expected: str = "", offset: int | None = None
    ) -> None:
        """Record a problem at `node`'s position (or `offset` characters into its value)."""
        mark = node.start_mark
        if mark is None:
            self.issues.append(ConfigIssue(0, 0, path, message, expected))
            return
        line, column = mark.line + 1, mark.column + 1
        if offset is not None and isinstance(node, ScalarNode):
            column += _value_column_offset(node, offset)
        self.issues.append(ConfigIssue(line, column, path, message, expected))

    def sorted_issues(self) -> list[ConfigIssue]:
        """Issues in file order, without repeats (aliases can visit a node twice)."""
        unique = list(dict.fromkeys(self.issues))
        return sorted(unique, key=lambda i: (i.line, i.column))

    # -- structure

    def mapping(self, node: Node | None, path: str, allowed: Sequence[str]) -> _Fields | None:
        """Check a mapping's keys: strings, known (with a suggestion), not repeated."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            empty = MappingNode("tag:yaml.org,2002:map", [])
            if node is not None:
                empty.start_mark = node.start_mark
            return _Fields(empty, path, {})
        if not isinstance(node, MappingNode):
            self.issue(
                node,
                path or "(top level)",
                f"expected a mapping, got {_describe(node)}",
                "keys: " + ", ".join(allowed),
            )
            return None
        seen: dict[str, Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE:
                continue
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                self.issue(key_node, path or "(top level)", "keys must be plain strings")
                continue
            name = key_node.value
            if name in seen:
                first = seen[name].start_mark.line + 1
                self.issue(
                    key_node,
                    _join(path, name),
                    f"duplicate key {name!r} (first written on line {first})",
                )
            seen[name] = key_node
        try:
            self.constructor.flatten_mapping(node)  # resolve "<<: *anchor" merge keys
        except ConstructorError as exc:
            mark = exc.problem_mark or node.start_mark
            self.issues.append(
                ConfigIssue(
                    mark.line + 1,
                    mark.column + 1,
                    path or "(top level)",
                    f"bad merge key: {exc.problem}",
                )
            )
        values: dict[str, Node] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _NULL:
                continue
            name = key_node.value
            if name not in allowed:
                self.issue(
                    key_node,
                    _join(path, name),
                    f"unknown key {name!r}{_suggest(name, allowed)}",
                    "one of: " + ", ".join(allowed),
                )
                continue
            values[name] = value_node
        return _Fields(node, path, values)

    def sequence(self, node: Node | None, path: str) -> list[Node]:
        """The items of a list (null or absent means empty)."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return []
        if not isinstance(node, SequenceNode):
            self.issue(node, path, f"expected a list, got {_describe(node)}", "a list")
            return []
        return list(node.value)

    def take(self, fields: _Fields, key: str, convert: Callable[[Node], T], default: T) -> T:
        """Convert `key` if written, else return `default`; a bad value is recorded."""
        if key not in fields.values:
            return default
        node = fields.values[key]
        try:
            return convert(node)
        except _Bad as bad:
            self.issue(bad.node or node, fields.child(key), bad.message, bad.expected, bad.offset)
            return default

    def require(
        self, fields: _Fields, key: str, convert: Callable[[Node], T], placeholder: T, expected: str
    ) -> T:
        """Like take(), but a missing key is an issue at the mapping's position."""
        if key not in fields.values:
            self.issue(fields.node, fields.child(key), f"missing required key {key!r}", expected)
            return placeholder
        return self.take(fields, key, convert, placeholder)

    def list_of(self, node: Node, path: str, convert: Callable[[Node], T]) -> list[T]:
        """Convert each list item, recording a bad item under its index and carrying on."""
        if not isinstance(node, SequenceNode):
            raise _Bad(f"expected a list, got {_describe(node)}", "a list")
        out: list[T] = []
        for index, item in enumerate(node.value):
            try:
                out.append(convert(item))
            except _Bad as bad:
                self.issue(bad.node or item, f"{path}[{index}]", bad.message, bad.expected)
        return out

    def plain_data(self, node: Node, path: str) -> Any:
        """Construct a subtree as JSON-compatible data (for backend options)."""
        try:
            value = self.constructor.construct_object(node, deep=True)
        except ConstructorError as exc:
            raise _Bad(f"cannot read value: {exc.problem}") from exc
        problem = _not_plain(value)
        if problem:
            raise _Bad(
                f"unsupported value {problem}", "strings, numbers, booleans, lists, mappings"
            )
        return value

    # -- top level

    def config(self, root: Node | None, source: str) -> Config | None:
        """Build the whole Config, or None when any section failed."""
        top = self.mapping(root, "", s.TOP_KEYS)
        if top is None:
            return None
        gateway = self.gateway(top.values.get("gateway"))
        trunks, trunk_names = self.trunks(top.values.get("trunks"))
        sip = self.sip(top.values.get("sip"), trunks)
        lines = self.lines(top.values.get("lines"), trunk_names)
        dialplan = self.dialplan(top.values.get("dialplan"), trunks, trunk_names)
        if (
            self.issues
            or gateway is None
            or sip is None
            or trunks is None
            or lines is None
            or dialplan is None
        ):
            return None
        return Config(gateway, sip, tuple(trunks), tuple(lines), dialplan, source)

    # -- gateway

    def gateway(self, node: Node | None) -> GatewaySettings | None:
        """The `gateway:` section."""
        f = self.mapping(node, "gateway", s.GATEWAY_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        name = self.take(f, "name", _text(nonempty=True), s.DEFAULT_NAME)
        country = self.take(
            f, "country", _choice(s.COUNTRIES, aliases={"GB": "UK"}), s.DEFAULT_COUNTRY
        )
        control = self.take(f, "control_socket", _socket_path, s.DEFAULT_CONTROL_SOCKET)
        state_dir = self.take(f, "state_dir", _abs_path, s.DEFAULT_STATE_DIR)
        level = self.take(f, "log_level", _choice(s.LOG_LEVELS), s.DEFAULT_LOG_LEVEL)
        if len(self.issues) > before:
            return None
        return GatewaySettings(name, country, control, state_dir, level)

    # -- sip

    def sip(self, node: Node | None, trunks: list[TrunkConfig] | None) -> SipSettings | None:
        """The `sip:` section; resolves `public_host` when it is not written."""
        f = self.mapping(node, "sip", s.SIP_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        listen = self.take(
            f,
            "listen",
            _host_port(need_port=True, ip_only=True),
            _parse_host_port(s.DEFAULT_LISTEN, True, True),
        )
        public = self.take(f, "public_host", _optional(_host), None)
        agent = self.take(f, "user_agent", _header_text, s.default_user_agent())
        rtp = self.take(f, "rtp_ports", _port_range, _parse_port_range(s.DEFAULT_RTP_PORTS))
        codecs = self.take(f, "codecs", self.codec_list(f.child("codecs")), s.DEFAULT_CODECS)
        dtmf = self.take(f, "dtmf", _choice(s.DTMF_MODES), s.DEFAULT_DTMF)
        if len(self.issues) > before:
            return None
        if listen.port in rtp:
            where = f.node_of("rtp_ports") if f.has("rtp_ports") else f.node_of("listen")
            self.issue(
                where,
                f.child("rtp_ports"),
                f"RTP range {rtp} contains the SIP port {listen.port}",
                "a range that leaves the SIP port free",
            )
            return None
        if public is None:
            public = self.derive_public_host(listen, trunks)
        return SipSettings(listen, public, agent, rtp, codecs, dtmf)

    def derive_public_host(self, listen: HostPort, trunks: list[TrunkConfig] | None) -> str:
        """The address for Contact/Via/SDP when `public_host` is not configured."""
        if not ipaddress.ip_address(listen.host).is_unspecified:
            return listen.host
        toward = trunks[0].proxy.host if trunks else None
        return self.route_probe(toward) or "127.0.0.1"

    def codec_list(self, path: str) -> Callable[[Node], tuple[str, ...]]:
        """A converter for a non-empty list of distinct codec names."""

        def convert(node: Node) -> tuple[str, ...]:
            before = len(self.issues)
            names = self.list_of(node, path, _choice(s.CODECS))
            if len(self.issues) > before:
                return s.DEFAULT_CODECS
            if not names:
                raise _Bad("the codec list is empty", "at least one of " + ", ".join(s.CODECS))
            for index, name in enumerate(names):
                if name in names[:index]:
                    raise _Bad(
                        f"codec {name!r} is listed twice", "each codec once", node=node.value[index]
                    )
            return tuple(names)

        return convert

    # -- trunks

    def trunks(self, node: Node | None) -> tuple[list[TrunkConfig] | None, dict[str, Node]]:
        """The `trunks:` list, plus every trunk name seen (even in an otherwise bad trunk)."""
        items = self.sequence(node, "trunks")
        before = len(self.issues)
        trunks: list[TrunkConfig] = []
        names: dict[str, Node] = {}
        for index, item in enumerate(items):
            trunk = self.trunk(item, f"trunks[{index}]", names)
            if trunk is not None:
                trunks.append(trunk)
        if len(self.issues) > before:
            return None, names
        return trunks, names

    def trunk(self, node: Node, path: str, names: dict[str, Node]) -> TrunkConfig | None:
        """One trunk; records its name in `names` for later cross-checks."""
        f = self.mapping(node, path, s.TRUNK_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        name = self.require(
            f,
            "name",
            _pattern(s.TRUNK_NAME_PATTERN, "lower-case letters, digits, '_' and '-'"),
            "",
            "a trunk name",
        )
        if name:
            if name in names:
                first = names[name].start_mark.line + 1
                self.issue(
                    f.node_of("name"),
                    f.child("name"),
                    f"trunk name {name!r} is already used on line {first}",
                    "a unique name",
                )
            else:
                names[name] = f.node_of("name")
        registrar = self.require(
            f,
            "registrar",
            _host_port(need_port=False, ip_only=False),
            HostPort("", 0),
            "host[:port]",
        )
        proxy = self.take(f, "proxy", _optional(_host_port(need_port=False, ip_only=False)), None)
        domain = self.take(f, "domain", _optional(_host), None)
        transport = self.take(f, "transport", _transport, s.DEFAULT_TRANSPORT)
        expires = self.take(
            f, "expires", _int_range(s.EXPIRES_MIN, s.EXPIRES_MAX), s.DEFAULT_EXPIRES
        )
        keepalive = self.take(
            f,
            "keepalive_interval",
            _float_range(s.KEEPALIVE_MIN, s.KEEPALIVE_MAX),
            s.DEFAULT_KEEPALIVE,
        )
        codecs = self.take(f, "codecs", _optional(self.codec_list(f.child("codecs"))), None)
        if len(self.issues) > before:
            return None
        return TrunkConfig(
            name,
            registrar,
            proxy or registrar,
            domain or registrar.host,
            transport,
            expires,
            keepalive,
            codecs,
        )

    # -- lines

    def lines(self, node: Node | None, trunk_names: dict[str, Node]) -> list[LineConfig] | None:
        """The `lines:` list with unique names, numbers and accounts."""
        items = self.sequence(node, "lines")
        before = len(self.issues)
        seen = _Seen()
        lines: list[LineConfig] = []
        for index, item in enumerate(items):
            line = self.line(item, f"lines[{index}]", trunk_names, seen)
            if line is not None:
                lines.append(line)
        if len(self.issues) > before:
            return None
        return lines

    def unique(self, seen: dict[Any, Node], value: Any, node: Node, path: str, label: str) -> None:
        """Remember where `value` was written, or record an issue if it was already used."""
        if value in seen:
            first = seen[value].start_mark.line + 1
            self.issue(node, path, f"{label} is already used on line {first}", "a unique value")
        else:
            seen[value] = node

    def line(
        self, node: Node, path: str, trunk_names: dict[str, Node], seen: _Seen
    ) -> LineConfig | None:
        """One telephone line; names, numbers and accounts are checked against `seen`."""
        f = self.mapping(node, path, s.LINE_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        name = self.require(
            f,
            "name",
            _pattern(s.LINE_NAME_PATTERN, "letters, digits, '_', '.' and '-'"),
            "",
            "a line name",
        )
        kind = self.take(f, "type", _choice(s.LINE_TYPES), s.DEFAULT_LINE_TYPE)
        backend = self.require(
            f,
            "backend",
            _pattern(s.BACKEND_PATTERN, "a hal backend name such as 'sim' or 'ag1171'"),
            "",
            "a hal backend name such as 'sim' or 'ag1171'",
        )
        number = self.require(
            f,
            "number",
            _pattern(s.NUMBER_PATTERN, "digits only"),
            "",
            "the local extension, digits only",
        )
        if name:
            self.unique(seen.names, name, f.node_of("name"), f.child("name"), f"line name {name!r}")
        if number:
            self.unique(
                seen.numbers, number, f.node_of("number"), f.child("number"), f"number {number!r}"
            )
        display = self.take(f, "display_name", _optional(_header_text), None)
        options: dict[str, Any] = self.take(f, "options", self.options(f.child("options")), {})
        account = None
        if f.has("trunk"):
            account = self.line_trunk(f.node_of("trunk"), f.child("trunk"), trunk_names)
            if account is not None:
                where = _value_node(f.node_of("trunk"), "username") or f.node_of("trunk")
                label = f"account {account.username!r} on trunk {account.name!r}"
                key = (account.name, account.username)
                self.unique(seen.accounts, key, where, f.child("trunk.username"), label)
        if len(self.issues) > before:
            return None
        return LineConfig(name, backend, number, kind, display, MappingProxyType(options), account)

    def options(self, path: str) -> Callable[[Node], dict[str, Any]]:
        """A converter for a backend options mapping (any plain data, string keys)."""

        def convert(node: Node) -> dict[str, Any]:
            if isinstance(node, ScalarNode) and node.tag == _NULL:
                return {}
            if not isinstance(node, MappingNode):
                raise _Bad(f"expected a mapping, got {_describe(node)}", "a mapping of options")
            value = self.plain_data(node, path)
            if not all(isinstance(k, str) for k in value):
                raise _Bad("option names must be strings", "a mapping of options")
            return dict(value)

        return convert

    def line_trunk(self, node: Node, path: str, trunk_names: dict[str, Node]) -> LineTrunk | None:
        """A line's account on a trunk (null means the line does not register)."""
        if isinstance(node, ScalarNode) and node.tag == _NULL:
            return None
        f = self.mapping(node, path, s.LINE_TRUNK_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        name = self.require(f, "name", _text(nonempty=True), "", "the name of a trunk")
        if name and name not in trunk_names:
            known = ", ".join(trunk_names) or "none are defined"
            self.issue(
                f.node_of("name"),
                f.child("name"),
                f"no trunk named {name!r}{_suggest(name, trunk_names)}",
                f"a name from trunks ({known})",
            )
        username = self.require(
            f,
            "username",
            _pattern(s.USERNAME_PATTERN, "a SIP user name without spaces, '@' or ':'"),
            "",
            "a SIP user name",
        )
        auth = self.take(
            f, "auth_username", _optional(_pattern(s.USERNAME_PATTERN, "a user name")), None
        )
        before_password = len(self.issues)
        password = (
            self.require(f, "password", _optional(_text(nonempty=False)), None, "a password") or ""
        )
        if f.has("password") and len(self.issues) == before_password:
            problem = _password_problem(password, username, auth)
            if problem:
                self.issue(
                    f.node_of("password"),
                    f.child("password"),
                    problem,
                    "a non-empty password that is not a factory default or the user name",
                )
        if len(self.issues) > before:
            return None
        return LineTrunk(name, username, password, auth)

    # -- dial plan

    def dialplan(
        self, node: Node | None, trunks: list[TrunkConfig] | None, trunk_names: dict[str, Node]
    ) -> DialPlan | None:
        """The `dialplan:` section, with default routes when none are written."""
        f = self.mapping(node, "dialplan", s.DIALPLAN_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        digit_map = self.take(f, "digit_map", _digit_map, s.DEFAULT_DIGIT_MAP)
        items = self.sequence(f.values.get("routes"), f.child("routes"))
        routes: list[Route] = []
        for index, item in enumerate(items):
            route = self.route(item, f"dialplan.routes[{index}]", trunk_names)
            if route is not None:
                routes.append(route)
        if len(self.issues) > before:
            return None
        if not items:
            routes = [Route(s.DEFAULT_LOCAL_ROUTE, "local")]
            if trunks:
                routes.append(Route(s.CATCH_ALL_ROUTE, f"trunk:{trunks[0].name}"))
        return DialPlan(digit_map, tuple(routes))

    def route(self, node: Node, path: str, trunk_names: dict[str, Node]) -> Route | None:
        """One route: pattern, target, and the digit rewrite."""
        f = self.mapping(node, path, s.ROUTE_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        pattern = self.require(f, "pattern", _regex, "", "a regular expression")
        target = self.require(
            f,
            "to",
            _pattern(s.ROUTE_TARGET_PATTERN, "'local' or 'trunk:<name>'"),
            "",
            "'local' or 'trunk:<name>'",
        )
        if target.startswith("trunk:"):
            trunk = target.split(":", 1)[1]
            if trunk not in trunk_names:
                known = ", ".join(trunk_names) or "none are defined"
                self.issue(
                    f.node_of("to"),
                    f.child("to"),
                    f"no trunk named {trunk!r}{_suggest(trunk, trunk_names)}",
                    f"'local' or 'trunk:<name>' with a name from trunks ({known})",
                )
        strip = self.take(f, "strip", _int_range(0, 64), 0)
        prepend = self.take(
            f, "prepend", _pattern(s.PREPEND_PATTERN, "digits, '*', '#', '+'", allow_empty=True), ""
        )
        if pattern and f.has("strip") and len(self.issues) == before:
            shortest = _min_match_length(pattern)
            if shortest is not None and strip > shortest:
                self.issue(
                    f.node_of("strip"),
                    f.child("strip"),
                    f"strip {strip} is longer than the shortest number the pattern "
                    f"matches ({shortest} digits)",
                    f"0..{shortest}",
                )
        if len(self.issues) > before:
            return None
        return Route(pattern, target, strip, prepend)


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
    if value.lower() in ("tcp", "tls", "ws", "wss", "sctp"):
        raise _Bad(f"transport {value!r} is not supported yet", _one_of(s.TRANSPORTS))
    raise _Bad(f"unknown transport {value!r}{_suggest(value, s.TRANSPORTS)}", _one_of(s.TRANSPORTS))


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
        return HostPort(host, s.DEFAULT_SIP_PORT)
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
