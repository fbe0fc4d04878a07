"""The service sections: `call_records`, `push`, `metrics` and `reload`."""

from __future__ import annotations

from urllib.parse import urlsplit

from yaml.nodes import Node, ScalarNode

from gateway.config import service as sv
from gateway.config._convert import (
    _NULL,
    _Bad,
    _float_range,
    _header_text,
    _host_port,
    _int_range,
    _optional,
    _text,
)
from gateway.config._reader import _NodeReader
from gateway.config.service import (
    CallRecordSettings,
    MetricsSettings,
    PushSettings,
    ReloadSettings,
)

_URL_EXPECTED = "an http:// or https:// URL, e.g. https://crm.example.net/hooks/calls"


def _push_url(node: Node) -> str:
    """`push.url`: http or https with a host."""
    value = _text(nonempty=True)(node).strip()
    try:
        parts = urlsplit(value)
        port_ok = parts.port is None or 0 < parts.port < 65536
    except ValueError as exc:
        raise _Bad(f"invalid URL: {exc}", _URL_EXPECTED) from exc
    if parts.scheme not in sv.PUSH_SCHEMES:
        raise _Bad(f"URL scheme {parts.scheme or '(none)'!r} is not http or https",
                   _URL_EXPECTED)
    if not parts.hostname or not port_ok:
        raise _Bad("URL has no host", _URL_EXPECTED)
    if any(ord(c) < 33 or ord(c) == 127 for c in value):
        raise _Bad("URL contains spaces or control characters", _URL_EXPECTED)
    return value


def _absent(node: Node | None) -> bool:
    return node is None or (isinstance(node, ScalarNode) and node.tag == _NULL)


class _ServiceReader(_NodeReader):
    """Section readers for the service settings (mixed into the full reader)."""

    def call_records(self, node: Node | None) -> CallRecordSettings | None:
        """`call_records:` retention bounds."""
        f = self.mapping(node, "call_records", sv.CALL_RECORD_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        age = self.take(f, "max_age_days",
                        _int_range(sv.MAX_AGE_DAYS_MIN, sv.MAX_AGE_DAYS_MAX),
                        sv.DEFAULT_MAX_AGE_DAYS)
        rows = self.take(f, "max_rows", _int_range(sv.MAX_ROWS_MIN, sv.MAX_ROWS_MAX),
                         sv.DEFAULT_MAX_ROWS)
        if len(self.issues) > before:
            return None
        return CallRecordSettings(age, rows)

    def push(self, node: Node | None) -> tuple[bool, PushSettings | None]:
        """`push:` (absent or null: no push). Returns (ok, settings)."""
        if _absent(node):
            return True, None
        f = self.mapping(node, "push", sv.PUSH_KEYS)
        if f is None:
            return False, None
        before = len(self.issues)
        url = self.require(f, "url", _push_url, "", _URL_EXPECTED)
        token = self.take(f, "token", _optional(_header_text), None)
        timeout = self.take(f, "timeout",
                            _float_range(sv.PUSH_TIMEOUT_MIN, sv.PUSH_TIMEOUT_MAX),
                            sv.DEFAULT_PUSH_TIMEOUT)
        queue = self.take(f, "max_queue", _int_range(sv.PUSH_QUEUE_MIN, sv.PUSH_QUEUE_MAX),
                          sv.DEFAULT_PUSH_QUEUE)
        if len(self.issues) > before:
            return False, None
        return True, PushSettings(url, token, timeout, queue)

    def metrics(self, node: Node | None) -> tuple[bool, MetricsSettings | None]:
        """`metrics:` (absent, null or without `listen`: no endpoint). Returns (ok, settings)."""
        if _absent(node):
            return True, None
        f = self.mapping(node, "metrics", sv.METRICS_KEYS)
        if f is None:
            return False, None
        before = len(self.issues)
        listen = self.take(f, "listen", _optional(_host_port(need_port=True, ip_only=True)),
                           None)
        if len(self.issues) > before:
            return False, None
        return True, None if listen is None else MetricsSettings(listen)

    def reload(self, node: Node | None) -> ReloadSettings | None:
        """`reload:` confirm/rollback window."""
        f = self.mapping(node, "reload", sv.RELOAD_KEYS)
        if f is None:
            return None
        before = len(self.issues)
        within = self.take(f, "confirm_within", _float_range(0.0, sv.CONFIRM_WITHIN_MAX),
                           sv.DEFAULT_CONFIRM_WITHIN)
        if len(self.issues) > before:
            return None
        return ReloadSettings(within)
