"""JSON Schema (draft 2020-12) of the config file, so editors can complete and check it.

Built from the same constants as the loader. The loader stays the authority: cross-field rules
(trunk references, unique numbers, weak passwords, strip lengths) are beyond JSON Schema.
"""

from __future__ import annotations

from typing import Any

from gateway.config import schema as s
from gateway.config._modems_schema import modem_schemas
from gateway.config._service_schema import gateway_service_properties, service_schemas
from gateway.config._survivable_schema import (
    health_schema,
    media_timeout_schema,
    route_to_schema,
    survivable_schemas,
)
from gateway.config.line_features import json_schema as line_features_schema
from hal.fxo import FXO_BACKENDS, FXO_OPTIONS
from hal.registry import FXS_BACKENDS, FXS_OPTIONS, OptionSpec

_JSON_TYPES = {"int": "integer", "number": "number", "str": "string", "null": "null",
               "bool": "boolean"}


def _option_schema(spec: OptionSpec) -> dict[str, Any]:
    types = [_JSON_TYPES[k] for k in spec.kinds]
    out: dict[str, Any] = {"type": types[0] if len(types) == 1 else types,
                           "description": spec.expected}
    if spec.choices:
        out["enum"] = [*spec.choices, *([None] if "null" in spec.kinds else [])]
    if spec.minimum is not None:
        out["minimum"] = spec.minimum
    return out


def _backend_options() -> list[dict[str, Any]]:
    """Per backend, the options it takes (from hal/registry.py, like the loader's check)."""
    rules: list[dict[str, Any]] = []
    kinds = [("fxs", b, FXS_OPTIONS[b]) for b in sorted(FXS_OPTIONS)]
    kinds += [("fxo", b, FXO_OPTIONS[b]) for b in sorted(FXO_OPTIONS)]
    for kind, backend, specs in kinds:
        required = [k for k, spec in specs.items() if spec.required]
        options: dict[str, Any] = {
            "type": "object",
            "properties": {k: _option_schema(spec) for k, spec in specs.items()},
            "additionalProperties": False,
        }
        then: dict[str, Any] = {"properties": {"options": options}}
        if required:
            options["required"] = required
            then["required"] = ["options"]
        else:
            then["properties"]["options"] = {"anyOf": [{"type": "null"}, options]}
        rules.append({
            # `type` absent means fxs (its default); an fxo line says so
            "if": {"properties": {"backend": {"const": backend}, "type": {"const": kind}},
                   "required": ["backend"] if kind == "fxs" else ["backend", "type"]},
            "then": then,
        })
    return rules


def _obj(
    properties: dict[str, Any],
    keys: tuple[str, ...],
    required: tuple[str, ...] = (),
    description: str = "",
) -> dict[str, Any]:
    """An object with exactly `keys` (the loader refuses unknown keys too)."""
    assert set(properties) == set(keys), sorted(set(properties) ^ set(keys))
    out: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _word(description: str, **extra: Any) -> dict[str, Any]:
    """A string the loader also accepts as a bare YAML number (`name: 1`, `username: 1001`)."""
    return {"type": ["string", "integer"], "description": description, **extra}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _number(description: str, low: float, high: float, default: float) -> dict[str, Any]:
    return {"type": "number", "minimum": low, "maximum": high, "default": default,
            "description": description}


def _enum(choices: tuple[str, ...], default: str, description: str) -> dict[str, Any]:
    return {"enum": list(choices), "default": default, "description": description}


_HOST_PORT = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:[0-9]{1,5})?$"
_IP_PORT = r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$"
_IP_OPT_PORT = r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+)(:[0-9]{1,5})?$"
_CODECS: dict[str, Any] = {
    "type": "array",
    "items": {"enum": list(s.CODECS)},
    "minItems": 1,
    "uniqueItems": True,
    "description": "Codecs offered, in order of preference.",
}


def export_json_schema() -> dict[str, Any]:
    """The config file's JSON Schema, for editor completion and quick checks."""
    gateway = _obj(
        {
            "name": _string(
                "Gateway name shown in status and logs.", default=s.DEFAULT_NAME, minLength=1
            ),
            "country": _enum(s.COUNTRIES, s.DEFAULT_COUNTRY, "Tone and ring-cadence profile."),
            "control_socket": _string(
                "Unix socket for the `branchline` admin commands.",
                default=s.DEFAULT_CONTROL_SOCKET,
                pattern="^/",
                maxLength=s.UNIX_SOCKET_PATH_MAX,
            ),
            "state_dir": _string(
                "Directory for call records and the SIP instance id.",
                default=s.DEFAULT_STATE_DIR,
                pattern="^/",
            ),
            "log_level": _enum(s.LOG_LEVELS, s.DEFAULT_LOG_LEVEL, "Lowest level logged."),
            **gateway_service_properties(),
        },
        s.GATEWAY_KEYS,
    )
    sip = _obj(
        {
            "listen": _string(
                "Local SIP address as IP:port.",
                default=s.DEFAULT_LISTEN,
                pattern=r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$",
            ),
            "public_host": _nullable(
                _string("Address put in Contact, Via and SDP; derived from `listen` when unset.")
            ),
            "user_agent": _string("User-Agent header value.", minLength=1),
            "rtp_ports": _string(
                "RTP port range first-last; first must be even.",
                default=s.DEFAULT_RTP_PORTS,
                pattern=r"^[0-9]+-[0-9]+$",
            ),
            "codecs": {**_CODECS, "default": list(s.DEFAULT_CODECS)},
            "dtmf": _enum(s.DTMF_MODES, s.DEFAULT_DTMF, "How digits are sent to the trunk."),
            "tcp_listen": _nullable(
                _string("SIP over TCP listener as IP:port; off when unset.", pattern=_IP_PORT)
            ),
            "tls_listen": _nullable(
                _string("SIP over TLS listener as IP:port; needs sip.tls.", pattern=_IP_PORT)
            ),
            "tls": _nullable(
                _obj(
                    {
                        "cert_file": _string("PEM certificate chain the TLS listener presents.",
                                             pattern="^/"),
                        "key_file": _string("PEM private key of that certificate.",
                                            pattern="^/"),
                        "ca_file": _nullable(
                            _string("CA bundle that checks client certificates.", pattern="^/")
                        ),
                        "verify_clients": {
                            "type": "boolean",
                            "default": False,
                            "description": "Refuse TLS clients without a certificate from ca_file.",
                        },
                    },
                    s.SIP_TLS_KEYS,
                    required=("cert_file", "key_file"),
                    description="The gateway's own certificate for inbound TLS.",
                )
            ),
            "dns_servers": {
                "type": "array",
                "items": _string("Name server IP[:port].", pattern=_IP_OPT_PORT),
                "maxItems": s.MAX_DNS_SERVERS,
                "default": [],
                "description": "Name servers for trunk lookups (NAPTR/SRV/A); the system's when empty.",
            },
            "trace": {
                "type": "boolean",
                "default": False,
                "description": "Log every SIP message (redacted) at debug level from the start; "
                "`branchline trace on|off` switches it at run time.",
            },
            "udp_receive_buffer": {
                "type": "integer",
                "minimum": s.UDP_RECEIVE_BUFFER_MIN,
                "maximum": s.UDP_RECEIVE_BUFFER_MAX,
                "default": s.DEFAULT_UDP_RECEIVE_BUFFER,
                "description": "SO_RCVBUF in bytes for the SIP UDP socket (bursts queue here).",
            },
            "media_timeout": media_timeout_schema(),
        },
        s.SIP_KEYS,
    )
    trunk = _obj(
        {
            "name": _string(
                "Trunk name, used in routes as trunk:<name>.", pattern=f"^{s.TRUNK_NAME_PATTERN}$"
            ),
            "registrar": _string(
                "Registrar host[:port]; a name without port is looked up by NAPTR/SRV.",
                pattern=_HOST_PORT,
            ),
            "proxy": _nullable(
                _string(
                    "Outbound proxy host[:port]; defaults to the registrar.", pattern=_HOST_PORT
                )
            ),
            "domain": _nullable(
                _string("SIP domain of the accounts; defaults to the registrar host.")
            ),
            "transport": _enum(s.TRANSPORTS, s.DEFAULT_TRANSPORT, "Signalling transport."),
            "expires": {
                "type": "integer",
                "minimum": s.EXPIRES_MIN,
                "maximum": s.EXPIRES_MAX,
                "default": s.DEFAULT_EXPIRES,
                "description": "Registration lifetime, s.",
            },
            "keepalive_interval": {
                "type": "number",
                "minimum": s.KEEPALIVE_MIN,
                "maximum": s.KEEPALIVE_MAX,
                "default": s.DEFAULT_KEEPALIVE,
                "description": "Seconds between keep-alives (NAT bindings).",
            },
            "codecs": _nullable(_CODECS),
            "tls": _nullable(
                _obj(
                    {
                        "ca_file": _nullable(
                            _string("CA bundle for the trunk; system CAs when unset.",
                                    pattern="^/")
                        ),
                        "cert_file": _nullable(
                            _string("Client certificate, when the trunk demands one.",
                                    pattern="^/")
                        ),
                        "key_file": _nullable(
                            _string("Private key of the client certificate.", pattern="^/")
                        ),
                        "server_name": _nullable(
                            _string("Name the trunk's certificate must carry (and SNI); "
                                    "defaults to the domain.")
                        ),
                        "verify": {
                            "type": "boolean",
                            "default": True,
                            "description": "Check the trunk's certificate (leave on).",
                        },
                    },
                    s.TRUNK_TLS_KEYS,
                    description="TLS settings used when transport is tls.",
                )
            ),
            "srtp": _enum(
                s.SRTP_MODES, s.DEFAULT_SRTP, "SRTP (SDES) on this trunk; require needs TLS."
            ),
            "keepalive": _enum(
                s.KEEPALIVE_MODES,
                s.DEFAULT_KEEPALIVE_MODE,
                "NAT keep-alive: OPTIONS probes, CRLF pings, or none.",
            ),
            "failover_timeout": {
                "type": "number",
                "minimum": s.FAILOVER_MIN,
                "maximum": s.FAILOVER_MAX,
                "default": s.DEFAULT_FAILOVER,
                "description": "Seconds without an answer before trying the next DNS target.",
            },
            "rate_limit": _nullable(
                _obj(
                    {
                        "requests_per_second": _number(
                            "Requests per second from this trunk's addresses.",
                            s.TRUNK_RATE_MIN, s.TRUNK_RATE_MAX, s.DEFAULT_TRUNK_REQUEST_RATE),
                        "request_burst": _number(
                            "Requests let through at once before the rate applies.",
                            s.TRUNK_BURST_MIN, s.TRUNK_BURST_MAX,
                            s.DEFAULT_TRUNK_REQUEST_BURST),
                        "calls_per_second": _number(
                            "INVITE and REGISTER per second from this trunk's addresses.",
                            s.TRUNK_RATE_MIN, s.TRUNK_RATE_MAX, s.DEFAULT_TRUNK_CALL_RATE),
                        "call_burst": _number(
                            "INVITE and REGISTER let through at once.",
                            s.TRUNK_BURST_MIN, s.TRUNK_BURST_MAX, s.DEFAULT_TRUNK_CALL_BURST),
                    },
                    s.TRUNK_RATE_LIMIT_KEYS,
                    description="The trunk's own rate limits: its source address is trusted, "
                    "but a UDP source address can be spoofed.",
                )
            ),
            "allow_gsm": _nullable(
                _obj(
                    {
                        "groups": {"type": "array", "minItems": 1,
                                   "items": {"type": "string", "pattern": "^[a-z0-9_-]+$"},
                                   "description": "gsm_groups this trunk's calls may use."},
                        "prefixes": {"type": "array", "minItems": 1,
                                     "items": {"type": "string", "pattern": r"^\+?[0-9*#]+$"},
                                     "description": "Numbers they may call (longest prefix "
                                     "wins; international and premium stay closed unless "
                                     "listed)."},
                    },
                    s.TRUNK_ALLOW_GSM_KEYS,
                    required=("groups", "prefixes"),
                    description="Off by default: calls arriving on this trunk may leave "
                    "through the modems only to these groups and number prefixes.",
                )
            ),
            "health": health_schema(),
            "allow_fxo": _nullable(
                _obj(
                    {
                        "lines": {"type": "array", "minItems": 1,
                                  "items": {"type": "string",
                                            "pattern": f"^{s.LINE_NAME_PATTERN}$"},
                                  "description": "Lines of type fxo this trunk's calls may "
                                  "use."},
                        "prefixes": {"type": "array", "minItems": 1,
                                     "items": {"type": "string", "pattern": r"^\+?[0-9*#]+$"},
                                     "description": "Numbers they may call (longest prefix "
                                     "wins; international and premium stay closed unless "
                                     "listed)."},
                    },
                    s.TRUNK_ALLOW_FXO_KEYS,
                    required=("lines", "prefixes"),
                    description="Off by default: calls arriving on this trunk (a DID routed "
                    "fxo:<name>, a PBX using the box as its PSTN gateway) may leave on the "
                    "exchange lines only on these lines and to these number prefixes.",
                )
            ),
        },
        s.TRUNK_KEYS,
        required=("name", "registrar"),
    )
    account = _obj(
        {
            "name": _string("Name of a trunk from `trunks`.", minLength=1),
            "username": _word(
                "SIP user; the line registers username@domain.", pattern=f"^{s.USERNAME_PATTERN}$"
            ),
            "password": _word(
                "Digest password; empty and factory defaults are refused.",
                minLength=1,
                writeOnly=True,
            ),
            "auth_username": _nullable(
                _word(
                    "Digest user when it differs from username.", pattern=f"^{s.USERNAME_PATTERN}$"
                )
            ),
        },
        s.LINE_TRUNK_KEYS,
        required=("name", "username", "password"),
    )
    line = _obj(
        {
            "name": _word(
                "Line name, as typed in `branchline phone LINE`.",
                pattern=f"^{s.LINE_NAME_PATTERN}$",
            ),
            "type": _enum(s.LINE_TYPES, s.DEFAULT_LINE_TYPE, "Port type."),
            "backend": {
                "type": "string",
                "enum": sorted(set(FXS_BACKENDS) | set(FXO_BACKENDS)),
                "description": "hal backend name (hal/registry.py).",
            },
            "number": _word(
                "Local extension (digits; quote it to keep leading 0s).",
                pattern=f"^{s.NUMBER_PATTERN}$",
            ),
            "display_name": _nullable(_string("Caller name sent with calls.")),
            "options": _nullable(
                {"type": "object", "description": "The backend's own options (e.g. pins)."}
            ),
            "trunk": _nullable(account),
            **line_features_schema(),  # timers, features
            "mwi": _nullable(_obj(
                {
                    "subscribe": {"type": "boolean", "default": True,
                                  "description": "SUBSCRIBE to message-summary (RFC 3842)."},
                    "server": _string("'trunk' (the line's account) or the voicemail "
                                      "server's sip: URI.", default="trunk",
                                      pattern="^(trunk|sips?:.+)$"),
                    "expires": {"type": "integer", "minimum": s.MWI_EXPIRES_RANGE[0],
                                "maximum": s.MWI_EXPIRES_RANGE[1], "default": 3600,
                                "description": "Subscription length asked for, seconds."},
                },
                s.MWI_KEYS,
            )),
        },
        s.LINE_KEYS,
        required=("name", "backend", "number"),
    )
    line["allOf"] = _backend_options()
    route = _obj(
        {
            "pattern": _string(
                "Regular expression, full match on the dialled digits.", minLength=1
            ),
            "to": route_to_schema(),
            "strip": {
                "type": "integer",
                "minimum": 0,
                "default": 0,
                "description": "Leading digits removed before sending.",
            },
            "prepend": _string(
                "Digits added in front after stripping.",
                default="",
                pattern=f"^{s.PREPEND_PATTERN}$",
            ),
        },
        s.ROUTE_KEYS,
        required=("pattern", "to"),
    )
    dialplan = _obj(
        {
            "digit_map": _string(
                "When dialling is complete.", default=s.DEFAULT_DIGIT_MAP, minLength=1
            ),
            "routes": _nullable(
                {
                    "type": "array",
                    "items": route,
                    "description": "Tried in order; the first match wins.",
                }
            ),
        },
        s.DIALPLAN_KEYS,
    )
    security = _obj(
        {
            "digest_algorithms": {
                "type": "array",
                "items": {"enum": list(s.DIGEST_ALGORITHMS)},
                "minItems": 1,
                "uniqueItems": True,
                "default": list(s.DEFAULT_DIGEST_ALGORITHMS),
                "description": "Digest challenges offered to clients that are not trusted "
                "trunks, one each, in this order (many phones answer only the first).",
            },
            "rate_limit": _nullable(
                _obj(
                    {
                        "requests_per_second": _number(
                            "Requests per second from one source address.",
                            s.TRUNK_RATE_MIN, s.TRUNK_RATE_MAX, s.DEFAULT_SOURCE_REQUEST_RATE),
                        "request_burst": _number(
                            "Requests let through at once before the rate applies.",
                            s.TRUNK_BURST_MIN, s.TRUNK_BURST_MAX,
                            s.DEFAULT_SOURCE_REQUEST_BURST),
                        "calls_per_second": _number(
                            "INVITE and REGISTER per second from one source address.",
                            s.TRUNK_RATE_MIN, s.TRUNK_RATE_MAX, s.DEFAULT_SOURCE_CALL_RATE),
                        "call_burst": _number(
                            "INVITE and REGISTER let through at once.",
                            s.TRUNK_BURST_MIN, s.TRUNK_BURST_MAX, s.DEFAULT_SOURCE_CALL_BURST),
                    },
                    s.TRUNK_RATE_LIMIT_KEYS,
                    description="Budgets of each source address that is not a trunk "
                    "(phones behind one NAT share one).",
                )
            ),
        },
        s.SECURITY_KEYS,
    )
    top = _obj(
        {
            "gateway": gateway,
            "sip": sip,
            "trunks": _nullable({"type": "array", "items": trunk}),
            "lines": _nullable({"type": "array", "items": line}),
            "dialplan": dialplan,
            "security": security,
            **modem_schemas(),
            **survivable_schemas(account),
            **service_schemas(),
        },
        s.TOP_KEYS,
        description="Branchline gateway configuration.",
    )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Branchline configuration",
        **top,
    }
