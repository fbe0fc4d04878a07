"""The config sections: gateway, sip, lines and dial plan (trunks live in _trunks.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from types import MappingProxyType
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode

from gateway.config import schema as s
from gateway.config import service as svc
from gateway.config import survivable as sv
from gateway.config._convert import (
    _NULL,
    _abs_path,
    _Bad,
    _bool,
    _choice,
    _describe,
    _dns_server,
    _existing_file,
    _float_range,
    _header_text,
    _host,
    _host_port,
    _int_range,
    _one_of,
    _optional,
    _parse_host_port,
    _parse_port_range,
    _pattern,
    _port_range,
    _socket_path,
    _text,
    _value_node,
)
from gateway.config._dialplan import _DialPlanReader
from gateway.config._modems import _ModemReader
from gateway.config._phones import _PhoneReader
from gateway.config._reader import _Fields, _Seen
from gateway.config._service import _ServiceReader
from gateway.config._trunks import _TrunkReader
from gateway.config.line_features import with_features
from gateway.config.schema import (
    Config,
    GatewaySettings,
    HostPort,
    LineConfig,
    SecuritySettings,
    SipSettings,
    TlsFiles,
    TrunkConfig,
)


class _Reader(_TrunkReader, _ModemReader, _DialPlanReader, _PhoneReader, _ServiceReader):
    """Reads a whole config file into a `Config`, collecting every issue."""

    #: Every good line with its `number` node and path (for the emergency-number clashes).
    line_numbers: list[tuple[LineConfig, Node, str]]

    def config(self, root: Node | None, source: str) -> Config | None:
        """Build the whole Config, or None when any section failed."""
        top = self.mapping(root, "", s.TOP_KEYS)
        if top is None:
            return None
        gateway = self.gateway(top.values.get("gateway"))
        trunks, trunk_names = self.trunks(top.values.get("trunks"))
        sip = self.sip(top.values.get("sip"), trunks)
        line_seen = _Seen()
        lines = self.lines(top.values.get("lines"), trunk_names, line_seen)
        groups, group_names = self.gsm_groups(top.values.get("gsm_groups"))
        modems = self.modems(top.values.get("modems"), groups, group_names)
        # gsm:<group> targets are checked once a gsm_groups section is written
        known_groups = list(group_names) if top.has("gsm_groups") else None
        fxo_names = [ln.name for ln in lines or () if ln.type == "fxo"]
        for node, path, name in self.allow_fxo_lines:  # trunks[i].allow_fxo.lines
            if lines is not None and name not in fxo_names:
                self.issue(node, path, f"no line of type fxo named {name!r}",
                           f"an FXO line's name ({', '.join(fxo_names) or 'none are defined'})")
        for node, path, group in self.allow_gsm_groups:  # trunks[i].allow_gsm.groups
            if group not in group_names:
                known = ", ".join(group_names) or "none are defined"
                self.issue(node, path, f"no GSM group named {group!r}",
                           f"a name from gsm_groups ({known})")
        dialplan = self.dialplan(
            top.values.get("dialplan"), trunks, trunk_names, lines, known_groups
        )
        security = self.security(top.values.get("security"))
        registrar = self.registrar(top.values.get("registrar"))
        phones, extensions = self.sip_phones(top.values.get("sip_phones"), trunk_names,
                                             line_seen)
        country = gateway.country if gateway is not None else s.DEFAULT_COUNTRY
        emergency, written = self.emergency(
            top.values.get("emergency"), country, list(trunk_names), lines, list(group_names),
            known_groups)
        if emergency is not None:
            extensions[:0] = [(ln.number, node, path, f"line {ln.name!r}")
                              for ln, node, path in self.line_numbers]
            self.emergency_clashes(emergency, written, country, extensions)
        call_records = self.call_records(top.values.get("call_records"))
        push_ok, push = self.push(top.values.get("push"))
        metrics_ok, metrics = self.metrics(top.values.get("metrics"))
        reload = self.reload(top.values.get("reload"))
        if (
            self.issues
            or not push_ok
            or not metrics_ok
            or call_records is None
            or reload is None
            or gateway is None
            or sip is None
            or trunks is None
            or lines is None
            or dialplan is None
            or security is None
            or groups is None
            or modems is None
            or emergency is None
            or registrar is None
            or phones is None
        ):
            return None
        return Config(gateway, sip, tuple(trunks), tuple(lines), dialplan, source,
                      security=security, modems=tuple(modems), gsm_groups=tuple(groups),
                      emergency=emergency, registrar=registrar, sip_phones=tuple(phones),
                      call_records=call_records, push=push, metrics=metrics, reload=reload)

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
        rate_limit = self.trunk_rate_limit(f.values.get("rate_limit"), f.child("rate_limit"),
                                           SecuritySettings().rate_limit)
        if len(self.issues) > before or rate_limit is None:
            return None
        return SecuritySettings(algorithms, rate_limit)

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
        secrets_file = self.take(f, "secrets_file", _optional(_abs_path), None)
        log = self.take(f, "log", _choice(svc.LOG_TARGETS), svc.DEFAULT_LOG_TARGET)
        if len(self.issues) > before:
            return None
        return GatewaySettings(name, country, control, state_dir, level, secrets_file, log)

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
        media_timeout = self.take(f, "media_timeout", _media_timeout, sv.DEFAULT_MEDIA_TIMEOUT)
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
            trace, receive_buffer, media_timeout,
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

    def lines(
        self, node: Node | None, trunk_names: dict[str, Node], seen: _Seen
    ) -> list[LineConfig] | None:
        """The `lines:` list with unique names, numbers and accounts (recorded in `seen`,
        which the phones then share); `line_numbers` keeps where each good line's number is."""
        items = self.sequence(node, "lines")
        before = len(self.issues)
        lines: list[LineConfig] = []
        self.line_numbers = []
        for index, item in enumerate(items):
            line = self.line(item, f"lines[{index}]", trunk_names, seen)
            if line is not None:  # + timers and features (gateway.config.line_features)
                line = with_features(self, item, f"lines[{index}]", line)
                lines.append(line)
                number = _value_node(item, "number") or item
                self.line_numbers.append((line, number, f"lines[{index}].number"))
        if len(self.issues) > before:
            return None
        return lines

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
            self.backend(f, backend, options, kind)
        account = None
        if f.has("trunk"):
            account = self.line_trunk(f.node_of("trunk"), f.child("trunk"), trunk_names)
            if account is not None:
                where = _value_node(f.node_of("trunk"), "username") or f.node_of("trunk")
                label = f"account {account.username!r} on trunk {account.name!r}"
                key = (account.name, account.username)
                self.unique(seen.accounts, key, where, f.child("trunk.username"), label)
        mwi = None
        if f.has("mwi") and f.node_of("mwi").tag != "tag:yaml.org,2002:null":
            mwi = self.line_mwi(f.node_of("mwi"), f.child("mwi"), account)
        if len(self.issues) > before:
            return None
        return LineConfig(name, backend, number, kind, display, MappingProxyType(options), account,
                          mwi)

    def line_mwi(self, node: Node, path: str, account: s.LineTrunk | None) -> s.MwiConfig | None:
        """`mwi: {subscribe, server: trunk | sip:URI, expires}` (message waiting)."""
        f = self.mapping(node, path, s.MWI_KEYS)
        if f is None:
            return None
        subscribe = self.take(f, "subscribe", _bool, True)
        server = self.take(f, "server", _mwi_server, "trunk")
        expires = self.take(f, "expires", _int_range(*s.MWI_EXPIRES_RANGE), 3600)
        if subscribe and server == "trunk" and account is None:
            self.issue(f.node_of("server") if f.has("server") else node, f.child("server"),
                       "mwi.server 'trunk' needs the line's trunk account (lines[].trunk)",
                       "a sip: URI of the voicemail server, or a trunk account on the line")
        return s.MwiConfig(subscribe, server, expires)

    def backend(self, f: _Fields, backend: str, options: dict[str, Any],
                kind: str = "fxs") -> None:
        """The backend must be one hal knows, and its options the ones that backend reads."""
        from hal.fxo import FXO_BACKENDS, check_fxo_options
        from hal.registry import FXS_BACKENDS, check_fxs_options, did_you_mean

        backends, check = ((FXO_BACKENDS, check_fxo_options) if kind == "fxo"
                           else (FXS_BACKENDS, check_fxs_options))
        if backend not in backends:
            known = sorted(backends)
            self.issue(f.node_of("backend"), f.child("backend"),
                       f"unknown {kind.upper()} backend {backend!r}"
                       f"{did_you_mean(backend, known)}", _one_of(known))
            return
        node = f.node_of("options") if f.has("options") else f.node
        for problem in check(backend, options):
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


def _mwi_server(node: Node) -> str:
    """'trunk', or the voicemail server's sip: URI."""
    from gateway.config._convert import _Bad, _text
    from gateway.sip.uri import SipUri

    expected = "'trunk' or a SIP URI such as sip:*97@pbx.example.com"
    value = _text(nonempty=True)(node)
    if value == "trunk":
        return value
    try:
        uri = SipUri.parse(value)
    except Exception as exc:  # the URI parser's own error names the problem
        raise _Bad(f"invalid mwi.server {value!r}: {exc}", expected) from exc
    if uri.scheme not in ("sip", "sips"):
        raise _Bad(f"invalid mwi.server {value!r}: not a sip: URI", expected)
    return value


def _media_timeout(node: Node) -> float:
    """`sip.media_timeout`: 0 (off) or MEDIA_TIMEOUT_MIN..MEDIA_TIMEOUT_MAX seconds."""
    expected = (f"0 (off) or a number from {sv.MEDIA_TIMEOUT_MIN:g} to "
                f"{sv.MEDIA_TIMEOUT_MAX:g}")
    try:
        value = _float_range(0.0, sv.MEDIA_TIMEOUT_MAX)(node)
    except _Bad as bad:
        raise _Bad(bad.message, expected) from bad
    if 0 < value < sv.MEDIA_TIMEOUT_MIN:
        raise _Bad(f"{value:g} s would end calls on a short gap in the audio", expected)
    return value
