"""The `trunks:` section: addresses, transport, TLS, SRTP, keep-alive and failover."""

from __future__ import annotations

from yaml.nodes import Node, ScalarNode, SequenceNode

from gateway.config import schema as s
from gateway.config import survivable as sv
from gateway.config._convert import (
    _NULL,
    _bool,
    _choice,
    _existing_file,
    _float_range,
    _host,
    _host_port,
    _int_range,
    _optional,
    _pattern,
    _transport,
)
from gateway.config._reader import RouteProbe, _NodeReader
from gateway.config.modems import MODEM_NAME_PATTERN, PREFIX_PATTERN
from gateway.config.schema import (
    HostPort,
    TrunkAllowFxo,
    TrunkAllowGsm,
    TrunkConfig,
    TrunkRateLimit,
    TrunkTls,
)
from gateway.routing.health import HealthSettings


class _TrunkReader(_NodeReader):
    """Section readers for trunks (mixed into the full reader)."""

    def __init__(self, route_probe: RouteProbe) -> None:
        super().__init__(route_probe)
        #: (node, path, group) of every `trunks[i].allow_gsm.groups` item, checked against
        #: gsm_groups once that section is read.
        self.allow_gsm_groups: list[tuple[Node, str, str]] = []
        #: (node, path, line) of every `trunks[i].allow_fxo.lines` item, checked against
        #: the lines of type fxo once lines are read.
        self.allow_fxo_lines: list[tuple[Node, str, str]] = []

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
        tls = self.trunk_tls(f.values.get("tls"), f.child("tls"))
        rate_limit = self.trunk_rate_limit(f.values.get("rate_limit"), f.child("rate_limit"))
        allow_gsm = self.trunk_allow_gsm(f.values.get("allow_gsm"), f.child("allow_gsm"))
        allow_fxo = self.trunk_allow_fxo(f.values.get("allow_fxo"), f.child("allow_fxo"))
        health = self.trunk_health(f.values.get("health"), f.child("health"))
        srtp = self.take(f, "srtp", _choice(s.SRTP_MODES), s.DEFAULT_SRTP)
        mode = self.take(f, "keepalive", _choice(s.KEEPALIVE_MODES), s.DEFAULT_KEEPALIVE_MODE)
        failover = self.take(
            f,
            "failover_timeout",
            _float_range(s.FAILOVER_MIN, s.FAILOVER_MAX),
            s.DEFAULT_FAILOVER,
        )
        if srtp == "require" and transport != "tls" and f.has("srtp"):
            self.issue(
                f.node_of("srtp"),
                f.child("srtp"),
                "srtp: require sends SDES keys in the clear unless the trunk uses TLS",
                "transport: tls, or srtp: off/offer",
            )
        if len(self.issues) > before or tls is None or rate_limit is None or health is None:
            return None
        if transport == "tls":
            registrar = _tls_default_port(registrar)
            proxy = _tls_default_port(proxy) if proxy is not None else None
        return TrunkConfig(
            name,
            registrar,
            proxy or registrar,
            domain or registrar.host,
            transport,
            expires,
            keepalive,
            codecs,
            tls,
            srtp,
            mode,
            failover,
            rate_limit,
            allow_gsm,
            health,
            allow_fxo,
        )

    def trunk_tls(self, node: Node | None, path: str) -> TrunkTls | None:
        """A trunk's `tls:` mapping (absent or null means system CAs, no client cert)."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return TrunkTls()
        f = self.mapping(node, path, s.TRUNK_TLS_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        ca_file = self.take(f, "ca_file", _optional(_existing_file), None)
        cert_file = self.take(f, "cert_file", _optional(_existing_file), None)
        key_file = self.take(f, "key_file", _optional(_existing_file), None)
        server_name = self.take(f, "server_name", _optional(_host), None)
        verify = self.take(f, "verify", _bool, True)
        if len(self.issues) == before and (cert_file is None) != (key_file is None):
            given = "cert_file" if cert_file is not None else "key_file"
            missing = "key_file" if cert_file is not None else "cert_file"
            self.issue(
                f.node_of(given),
                f.child(given),
                f"{given} without {missing}",
                "both cert_file and key_file for a client certificate, or neither",
            )
        if len(self.issues) > before:
            return None
        return TrunkTls(ca_file, cert_file, key_file, server_name, verify)

    def trunk_allow_gsm(self, node: Node | None, path: str) -> TrunkAllowGsm | None:
        """A trunk's `allow_gsm:` (absent or null: calls from this trunk never use a modem)."""
        lists = self._trunk_allow(node, path, "groups", MODEM_NAME_PATTERN, "a gsm_groups name",
                                  self.allow_gsm_groups)
        return None if lists is None else TrunkAllowGsm(lists["groups"], lists["prefixes"])

    def trunk_allow_fxo(self, node: Node | None, path: str) -> TrunkAllowFxo | None:
        """A trunk's `allow_fxo:` (absent or null: calls from this trunk never use an
        exchange line)."""
        lists = self._trunk_allow(node, path, "lines", s.LINE_NAME_PATTERN,
                                  "the name of a line of type fxo", self.allow_fxo_lines)
        return None if lists is None else TrunkAllowFxo(lists["lines"], lists["prefixes"])

    def _trunk_allow(self, node: Node | None, path: str, names: str, name_pattern: str,
                     name_expected: str, seen: list[tuple[Node, str, str]]
                     ) -> dict[str, tuple[str, ...]] | None:
        """`{<names>: [...], prefixes: [...]}` of an allow_gsm / allow_fxo mapping."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return None
        keys = (names, "prefixes")
        f = self.mapping(node, path, keys)
        if f is None:
            return None
        lists: dict[str, tuple[str, ...]] = {}
        for key, pattern, expected in (
            (names, name_pattern, name_expected),
            ("prefixes", PREFIX_PATTERN, "digits, optionally after '+' (e.g. '+447', '07')"),
        ):
            where = f.child(key)
            if key not in f.values:
                self.issue(f.node, where, f"missing required key {key!r}",
                           f"a non-empty list, each {expected}")
                continue
            value = f.values[key]
            items = tuple(self.list_of(value, where, _pattern(pattern, expected))) \
                if isinstance(value, SequenceNode) else ()
            if not isinstance(value, SequenceNode) or not value.value:
                self.issue(value, where, f"{key} must be a non-empty list",
                           f"a non-empty list, each {expected}")
                continue
            lists[key] = items
            if key == names:
                seen.extend(
                    (item, f"{where}[{i}]", name)
                    for i, (item, name) in enumerate(zip(value.value, items, strict=False)))
        if set(lists) != set(keys):
            return None
        return lists

    def trunk_health(self, node: Node | None, path: str) -> HealthSettings | None:
        """A trunk's `health:` mapping: how it is probed and judged (absent/null: defaults)."""
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return HealthSettings()
        f = self.mapping(node, path, sv.HEALTH_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        defaults = HealthSettings()
        values: dict[str, float] = {}
        for key in sv.HEALTH_KEYS:
            low, high = sv.HEALTH_RANGES[key]
            convert = (_int_range(int(low), int(high)) if key in sv.HEALTH_INTEGER_KEYS
                       else _float_range(low, high))
            values[key] = self.take(f, key, convert, getattr(defaults, key))
        if len(self.issues) == before and values["probe_timeout"] > values["window"]:
            key = "probe_timeout" if f.has("probe_timeout") else "window"
            self.issue(f.node_of(key), f.child(key),
                       f"probe_timeout {values['probe_timeout']:g} s is longer than the loss "
                       f"window {values['window']:g} s", "probe_timeout <= window")
        if len(self.issues) > before:
            return None
        try:
            return HealthSettings(
                probe_interval=values["probe_interval"], probe_timeout=values["probe_timeout"],
                misses=int(values["misses"]), failback_after=values["failback_after"],
                degraded_loss=values["degraded_loss"], window=values["window"],
            )
        except ValueError as exc:  # a rule of HealthSettings' own the checks above lack
            self.issue(f.node, path, str(exc), "settings trunk health accepts")
            return None

    def trunk_rate_limit(self, node: Node | None, path: str,
                         defaults: TrunkRateLimit | None = None) -> TrunkRateLimit | None:
        """A `rate_limit:` mapping (absent or null means `defaults`, a trunk's by default;
        `security.rate_limit` passes the other sources' defaults)."""
        d = defaults if defaults is not None else TrunkRateLimit()
        if node is None or (isinstance(node, ScalarNode) and node.tag == _NULL):
            return d
        f = self.mapping(node, path, s.TRUNK_RATE_LIMIT_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        rate = _float_range(s.TRUNK_RATE_MIN, s.TRUNK_RATE_MAX)
        burst = _float_range(s.TRUNK_BURST_MIN, s.TRUNK_BURST_MAX)
        limits = TrunkRateLimit(
            self.take(f, "requests_per_second", rate, d.requests_per_second),
            self.take(f, "request_burst", burst, d.request_burst),
            self.take(f, "calls_per_second", rate, d.calls_per_second),
            self.take(f, "call_burst", burst, d.call_burst),
        )
        return None if len(self.issues) > before else limits


def _tls_default_port(hp: HostPort) -> HostPort:
    """SIP over TLS defaults to 5061 (RFC 3261 19.1.2) when the file gave no port."""
    return hp if hp.port_given else HostPort(hp.host, s.DEFAULT_SIPS_PORT, port_given=False)
