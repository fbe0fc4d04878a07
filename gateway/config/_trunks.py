"""The `trunks:` section: addresses, transport, TLS, SRTP, keep-alive and failover."""

from __future__ import annotations

from yaml.nodes import Node

from gateway.config import schema as s
from gateway.config._convert import (
    _float_range,
    _host,
    _host_port,
    _int_range,
    _optional,
    _pattern,
    _transport,
)
from gateway.config._reader import _NodeReader
from gateway.config.schema import HostPort, TrunkConfig


class _TrunkReader(_NodeReader):
    """Section readers for trunks (mixed into the full reader)."""

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
