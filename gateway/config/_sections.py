"""The config sections: gateway, sip, lines and dial plan (trunks live in _trunks.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Collection
from types import MappingProxyType
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from gateway.config import schema as s
from gateway.config._convert import (
    _NULL,
    _abs_path,
    _Bad,
    _bool,
    _choice,
    _describe,
    _digit_map,
    _dns_server,
    _existing_file,
    _header_text,
    _host,
    _host_port,
    _int_range,
    _min_match_length,
    _one_of,
    _optional,
    _parse_host_port,
    _parse_port_range,
    _password_problem,
    _pattern,
    _port_range,
    _regex,
    _socket_path,
    _suggest,
    _text,
    _value_node,
)
from gateway.config._modems import _ModemReader
from gateway.config._reader import _Fields, _Seen
from gateway.config._trunks import _TrunkReader
from gateway.config.schema import (
    Config,
    DialPlan,
    GatewaySettings,
    HostPort,
    LineConfig,
    LineTrunk,
    Route,
    SecuritySettings,
    SipSettings,
    TlsFiles,
    TrunkConfig,
)
from gateway.routing.targets import EXPECTED as EXPECTED_TARGET
from gateway.routing.targets import (
    FxoTarget,
    GsmTarget,
    LineTarget,
    RouteTarget,
    TrunkTarget,
    parse_target,
)


class _Reader(_TrunkReader, _ModemReader):
    """Reads a whole config file into a `Config`, collecting every issue."""

    def config(self, root: Node | None, source: str) -> Config | None:
        """Build the whole Config, or None when any section failed."""
        top = self.mapping(root, "", s.TOP_KEYS)
        if top is None:
            return None
        gateway = self.gateway(top.values.get("gateway"))
        trunks, trunk_names = self.trunks(top.values.get("trunks"))
        sip = self.sip(top.values.get("sip"), trunks)
        lines = self.lines(top.values.get("lines"), trunk_names)
        groups, group_names = self.gsm_groups(top.values.get("gsm_groups"))
        modems = self.modems(top.values.get("modems"), groups, group_names)
        # gsm:<group> targets are checked once a gsm_groups section is written
        known_groups = list(group_names) if top.has("gsm_groups") else None
        for node, path, group in self.allow_gsm_groups:  # trunks[i].allow_gsm.groups
            if group not in group_names:
                known = ", ".join(group_names) or "none are defined"
                self.issue(node, path, f"no GSM group named {group!r}",
                           f"a name from gsm_groups ({known})")
        dialplan = self.dialplan(
            top.values.get("dialplan"), trunks, trunk_names, lines, known_groups
        )
        security = self.security(top.values.get("security"))
        if (
            self.issues
            or gateway is None
            or sip is None
            or trunks is None
            or lines is None
            or dialplan is None
            or security is None
            or groups is None
            or modems is None
        ):
            return None
        return Config(gateway, sip, tuple(trunks), tuple(lines), dialplan, source,
                      security=security, modems=tuple(modems), gsm_groups=tuple(groups))

    # -- security

    def security(self, node: Node | None) -> SecuritySettings | None:
        """The `security:` section: how the SIP edge challenges clients."""
        f = self.mapping(node, "security", s.SECURITY_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        algorithms = self.take(f, "digest_algorithms",
                               self.digest_algorithms(f.child("digest_algorithms")),
                               s.DEFAULT_DIGEST_ALGORITHMS)
        if len(self.issues) > before:
            return None
        return SecuritySettings(algorithms)

    def digest_algorithms(self, path: str) -> Callable[[Node], tuple[str, ...]]:
        """A converter for `security.digest_algorithms`: a non-empty list, each name once."""
        aliases = {name.lower(): name for name in s.DIGEST_ALGORITHMS}
        aliases.update({"SHA256": "SHA-256", "sha256": "SHA-256", "SHA-512/256": "SHA-512-256"})

        def convert(node: Node) -> tuple[str, ...]:
            before = len(self.issues)
            names = self.list_of(node, path, _choice(s.DIGEST_ALGORITHMS, aliases))
            if len(self.issues) > before:
                return s.DEFAULT_DIGEST_ALGORITHMS
            if not names:
                raise _Bad("the digest algorithm list is empty",
                           "at least one of " + ", ".join(s.DIGEST_ALGORITHMS))
            for index, name in enumerate(names):
                if name in names[:index]:
                    raise _Bad(f"digest algorithm {name!r} is listed twice", "each one once",
                               node=node.value[index])
            return tuple(names)

        return convert

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
        stream_listen = _optional(_host_port(need_port=True, ip_only=True))
        tcp_listen = self.take(f, "tcp_listen", stream_listen, None)
        tls_listen = self.take(f, "tls_listen", stream_listen, None)
        tls = self.sip_tls(f.values.get("tls"), f.child("tls"))
        no_servers: tuple[HostPort, ...] = ()
        dns_servers = self.take(
            f, "dns_servers", self.dns_servers(f.child("dns_servers")), no_servers
        )
        trace = self.take(f, "trace", _bool, False)
        receive_buffer = self.take(
            f, "udp_receive_buffer",
            _int_range(s.UDP_RECEIVE_BUFFER_MIN, s.UDP_RECEIVE_BUFFER_MAX),
            s.DEFAULT_UDP_RECEIVE_BUFFER,
        )
        if len(self.issues) > before:
            return None
        if tls_listen is not None and tls is None:
            self.issue(
                f.node_of("tls_listen"),
                f.child("tls_listen"),
                "a TLS listener needs the gateway's certificate",
                "sip.tls with cert_file and key_file",
            )
            return None
        if tcp_listen is not None and tcp_listen == tls_listen:
            self.issue(
                f.node_of("tls_listen"),
                f.child("tls_listen"),
                f"{tls_listen} is already the TCP listener",
                "a different port for TCP and TLS",
            )
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
        return SipSettings(
            listen, public, agent, rtp, codecs, dtmf, tcp_listen, tls_listen, tls, dns_servers,
            trace, receive_buffer,
        )

    def sip_tls(self, node: Node | None, path: str) -> TlsFiles | None:
        """`sip.tls`: the certificate the TLS listener presents (None when not written)."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return None
        f = self.mapping(node, path, s.SIP_TLS_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        cert = self.require(f, "cert_file", _existing_file, "", "the PEM certificate (chain)")
        key = self.require(f, "key_file", _existing_file, "", "the PEM private key")
        ca_file = self.take(f, "ca_file", _optional(_existing_file), None)
        verify_clients = self.take(f, "verify_clients", _bool, False)
        if verify_clients and ca_file is None and len(self.issues) == before:
            self.issue(
                f.node_of("verify_clients"),
                f.child("verify_clients"),
                "checking client certificates needs a CA file",
                "ca_file with the CA that signs the clients' certificates",
            )
        if len(self.issues) > before:
            return None
        return TlsFiles(cert, key, ca_file, verify_clients)

    def dns_servers(self, path: str) -> Callable[[Node], tuple[HostPort, ...]]:
        """A converter for `sip.dns_servers`: up to MAX_DNS_SERVERS "IP[:port]" entries."""

        def convert(node: Node) -> tuple[HostPort, ...]:
            before = len(self.issues)
            servers = self.list_of(node, path, _dns_server)
            if len(self.issues) > before:
                return ()
            if len(servers) > s.MAX_DNS_SERVERS:
                raise _Bad(
                    f"{len(servers)} name servers listed",
                    f"at most {s.MAX_DNS_SERVERS} name servers",
                )
            return tuple(servers)

        return convert

    def derive_public_host(self, listen: HostPort, trunks: list[TrunkConfig] | None) -> str:
        """The address for Contact/Via/SDP when `public_host` is not configured."""
        if not ipaddress.ip_address(listen.host).is_unspecified:
            return listen.host
        toward = trunks[0].proxy.host if trunks else None
        return self.route_probe(toward) or "127.0.0.1"

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
        if backend and len(self.issues) == before:
            self.backend(f, backend, options)
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

    def backend(self, f: _Fields, backend: str, options: dict[str, Any]) -> None:
        """The backend must be one hal knows, and its options the ones that backend reads."""
        from hal.registry import FXS_BACKENDS, check_fxs_options, did_you_mean

        if backend not in FXS_BACKENDS:
            known = sorted(FXS_BACKENDS)
            self.issue(f.node_of("backend"), f.child("backend"),
                       f"unknown FXS backend {backend!r}{did_you_mean(backend, known)}",
                       _one_of(known))
            return
        node = f.node_of("options") if f.has("options") else f.node
        for problem in check_fxs_options(backend, options):
            where: Node = node
            path = f.child("options")
            if problem.key is not None:
                path += f".{problem.key}"
                for key_node, value_node in node.value if isinstance(node, MappingNode) else ():
                    if isinstance(key_node, ScalarNode) and key_node.value == problem.key:
                        where = key_node if problem.unknown else value_node
            self.issue(where, path, problem.message, problem.expected)

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
        self,
        node: Node | None,
        trunks: list[TrunkConfig] | None,
        trunk_names: dict[str, Node],
        lines: list[LineConfig] | None = None,
        gsm_groups: Collection[str] | None = None,
    ) -> DialPlan | None:
        """The `dialplan:` section, with default routes when none are written.

        Route targets name lines, trunks, GSM groups and FXO lines; each name is checked
        against what is configured. `lines` None (the lines section had errors) skips the
        line checks; `gsm_groups` None (no `modems:` section read) leaves gsm:<group>
        names to the runtime, which refuses a call to a group it does not have.
        """
        f = self.mapping(node, "dialplan", s.DIALPLAN_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        digit_map = self.take(f, "digit_map", _digit_map, s.DEFAULT_DIGIT_MAP)
        items = self.sequence(f.values.get("routes"), f.child("routes"))
        routes: list[Route] = []
        for index, item in enumerate(items):
            route = self.route(item, f"dialplan.routes[{index}]", trunk_names, lines,
                               gsm_groups)
            if route is not None:
                routes.append(route)
        if len(self.issues) > before:
            return None
        if not items:
            routes = [Route(s.DEFAULT_LOCAL_ROUTE, "local")]
            if trunks:
                routes.append(Route(s.CATCH_ALL_ROUTE, f"trunk:{trunks[0].name}"))
        return DialPlan(digit_map, tuple(routes))

    def route(
        self,
        node: Node,
        path: str,
        trunk_names: dict[str, Node],
        lines: list[LineConfig] | None = None,
        gsm_groups: Collection[str] | None = None,
    ) -> Route | None:
        """One route: pattern, target, and the digit rewrite."""
        f = self.mapping(node, path, s.ROUTE_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        pattern = self.require(f, "pattern", _regex, "", "a regular expression")
        target = self.require(
            f, "to", _pattern(s.ROUTE_TARGET_PATTERN, EXPECTED_TARGET), "", EXPECTED_TARGET
        )
        if target:
            self.route_target(f, parse_target(target), trunk_names, lines, gsm_groups)
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

    def route_target(
        self,
        f: _Fields,
        target: RouteTarget,
        trunk_names: dict[str, Node],
        lines: list[LineConfig] | None,
        gsm_groups: Collection[str] | None,
    ) -> None:
        """An issue at `to:` when the target names a trunk, line or group that is not there."""
        names: Collection[str] | None
        match target:
            case TrunkTarget(name=name):
                what, names, section = "trunk", trunk_names, "trunks"
            case LineTarget(name=name):
                what, section = "line", "lines"
                names = None if lines is None else [ln.name for ln in lines if ln.type == "fxs"]
            case FxoTarget(name=name):
                what, section = "FXO line", "lines of type fxo"
                names = None if lines is None else [ln.name for ln in lines if ln.type == "fxo"]
            case GsmTarget(group=name):
                what, names, section = "GSM group", gsm_groups, "gsm_groups"
            case _:
                return
        if names is None or name in names:
            return
        known = ", ".join(names) or "none are defined"
        self.issue(
            f.node_of("to"),
            f.child("to"),
            f"no {what} named {name!r}{_suggest(name, names)}",
            f"{EXPECTED_TARGET} with a name from {section} ({known})",
        )
