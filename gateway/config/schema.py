"""The configuration model: frozen dataclasses plus the constants that define what is valid.

The loader (`loader.py`) and the JSON Schema export (`jsonschema.py`) both read the constants
here, so the two can never disagree about a range, a choice or a key name.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from gateway.config.line_features import LineFeatures, LineTimers, line_features_dict
from gateway.config.modems import GsmGroup, ModemConfig, modems_dict
from gateway.config.service import DEFAULT_LOG_TARGET, scrub_secrets, service_dict
from gateway.config.service import CallRecordSettings as CallRecordSettings  # re-exported
from gateway.config.service import MetricsSettings as MetricsSettings  # re-exported
from gateway.config.service import PushSettings as PushSettings  # re-exported
from gateway.config.service import ReloadSettings as ReloadSettings  # re-exported
from gateway.config.survivable import DEFAULT_MEDIA_TIMEOUT, health_dict, survivable_dict
from gateway.config.survivable import EmergencySettings as EmergencySettings  # re-exported
from gateway.config.survivable import PhoneConfig as PhoneConfig  # re-exported
from gateway.config.survivable import RegistrarSettings as RegistrarSettings  # re-exported
from gateway.dsp.tones import countries as _tone_countries
from gateway.routing.health import HealthSettings as HealthSettings  # re-exported
from gateway.routing.targets import TARGET_PATTERN as _ROUTE_TARGET_PATTERN
from gateway.sip.auth import SERVER_ALGORITHMS

# --- choices, ranges and defaults -------------------------------------------------------

COUNTRIES: tuple[str, ...] = _tone_countries()  # the tone profile table is the list
LOG_LEVELS: tuple[str, ...] = ("debug", "info", "warning", "error")
CODECS: tuple[str, ...] = ("PCMU", "PCMA")
DTMF_MODES: tuple[str, ...] = ("rfc4733", "inband", "info")
TRANSPORTS: tuple[str, ...] = ("udp", "tcp", "tls")
SRTP_MODES: tuple[str, ...] = ("off", "offer", "require")
KEEPALIVE_MODES: tuple[str, ...] = ("options", "crlf", "none")
LINE_TYPES: tuple[str, ...] = ("fxs", "fxo")

DEFAULT_NAME = "branchline"
DEFAULT_COUNTRY = "US"
DEFAULT_CONTROL_SOCKET = "/run/branchline/control.sock"
DEFAULT_STATE_DIR = "/var/lib/branchline"
DEFAULT_LOG_LEVEL = "info"
DEFAULT_LISTEN = "0.0.0.0:5060"
DEFAULT_SIP_PORT = 5060
DEFAULT_SIPS_PORT = 5061
DEFAULT_DNS_PORT = 53
DEFAULT_SRTP = "off"
DEFAULT_KEEPALIVE_MODE = "options"
DEFAULT_RTP_PORTS = "10000-10999"
DEFAULT_CODECS: tuple[str, ...] = ("PCMU", "PCMA")
DEFAULT_DTMF = "rfc4733"
DEFAULT_TRANSPORT = "udp"
DEFAULT_LINE_TYPE = "fxs"
DEFAULT_DIGIT_MAP = "(1xx|[2-9]xxxxxx|1[2-9]xxxxxxxxx|0|00|*xx|x.T)"
DEFAULT_LOCAL_ROUTE = r"1\d\d"
CATCH_ALL_ROUTE = ".+"

EXPIRES_MIN, EXPIRES_MAX, DEFAULT_EXPIRES = 60, 86400, 600
KEEPALIVE_MIN, KEEPALIVE_MAX, DEFAULT_KEEPALIVE = 1.0, 300.0, 5.0
#: Seconds without any answer before a request moves to the next DNS target (RFC 3263).
FAILOVER_MIN, FAILOVER_MAX, DEFAULT_FAILOVER = 0.2, 32.0, 1.5
#: A trusted trunk's own rate limits (its UDP source address can be spoofed): requests and
#: INVITE/REGISTER per second and their bursts; five times what a stranger gets.
TRUNK_RATE_MIN, TRUNK_RATE_MAX = 0.1, 10000.0
TRUNK_BURST_MIN, TRUNK_BURST_MAX = 1.0, 100000.0
DEFAULT_TRUNK_REQUEST_RATE, DEFAULT_TRUNK_REQUEST_BURST = 100.0, 500.0
DEFAULT_TRUNK_CALL_RATE, DEFAULT_TRUNK_CALL_BURST = 10.0, 60.0
# Every other source (phones, strangers), per IP address: `security.rate_limit`.
DEFAULT_SOURCE_REQUEST_RATE, DEFAULT_SOURCE_REQUEST_BURST = 20.0, 100.0
DEFAULT_SOURCE_CALL_RATE, DEFAULT_SOURCE_CALL_BURST = 2.0, 30.0
MAX_DNS_SERVERS = 4
#: SO_RCVBUF asked for the SIP UDP socket: room for a burst of some 800 datagrams.
UDP_RECEIVE_BUFFER_MIN, UDP_RECEIVE_BUFFER_MAX = 4096, 64 * 1024 * 1024
DEFAULT_UDP_RECEIVE_BUFFER = 1024 * 1024
RTP_PORT_MIN, RTP_PORT_MAX = 1024, 65535
#: Digest algorithms the gateway can challenge with (gateway/sip/auth.py checks them).
DIGEST_ALGORITHMS: tuple[str, ...] = ("MD5", "SHA-256", "SHA-512-256")
#: The default offer, one challenge each in this order: the SIP edge's own default (see
#: `gateway.sip.auth.SERVER_ALGORITHMS` for why MD5 leads).
DEFAULT_DIGEST_ALGORITHMS: tuple[str, ...] = SERVER_ALGORITHMS

#: Trunk names appear in route targets ("trunk:<name>"), logs and metrics labels.
TRUNK_NAME_PATTERN = r"[a-z0-9_-]+"
#: Line names are typed on the command line (`branchline phone LINE ...`).
LINE_NAME_PATTERN = r"[A-Za-z0-9_.-]+"
#: Backend names are hal registry keys such as "sim", "ag1171", "quectel-ec25".
BACKEND_PATTERN = r"[a-z0-9_-]+"
NUMBER_PATTERN = r"[0-9]+"
PREPEND_PATTERN = r"[0-9*#+]*"
#: SIP user part without the characters that would need escaping or change the URI.
USERNAME_PATTERN = r"[^\s@:;?<>\"]+"
RTP_PORTS_PATTERN = r"([0-9]+)-([0-9]+)"
ROUTE_TARGET_PATTERN = _ROUTE_TARGET_PATTERN  # gateway.routing.targets spells them

#: Passwords refused outright: factory defaults that attackers try first.
WEAK_PASSWORDS: frozenset[str] = frozenset(
    {"password", "admin", "1234", "0000", "12345", "123456", "changeme", "secret", "default"}
)
#: Option keys (in `lines[].options`) whose values are secrets and are redacted like passwords.
SECRET_OPTION_KEYS: frozenset[str] = frozenset(
    {"password", "secret", "pin", "puk", "token", "passphrase"}
)
REDACTED = "***"

#: sun_path is 108 bytes on Linux, including the terminating NUL.
UNIX_SOCKET_PATH_MAX = 107

# --- keys allowed in each mapping (unknown keys are errors) ----------------------------

TOP_KEYS: tuple[str, ...] = (
    "gateway", "sip", "trunks", "lines", "dialplan", "security", "modems", "gsm_groups",
    "emergency", "registrar", "sip_phones", "call_records", "push", "metrics", "reload",
)
SECURITY_KEYS: tuple[str, ...] = ("digest_algorithms", "rate_limit")
GATEWAY_KEYS: tuple[str, ...] = (
    "name", "country", "control_socket", "state_dir", "log_level", "secrets_file", "log",
)
SIP_KEYS: tuple[str, ...] = (
    "listen",
    "public_host",
    "user_agent",
    "rtp_ports",
    "codecs",
    "dtmf",
    "tcp_listen",
    "tls_listen",
    "tls",
    "dns_servers",
    "trace",
    "udp_receive_buffer",
    "media_timeout",
)
SIP_TLS_KEYS: tuple[str, ...] = ("cert_file", "key_file", "ca_file", "verify_clients")
TRUNK_TLS_KEYS: tuple[str, ...] = ("ca_file", "cert_file", "key_file", "server_name", "verify")
TRUNK_KEYS: tuple[str, ...] = (
    "name",
    "registrar",
    "proxy",
    "domain",
    "transport",
    "expires",
    "keepalive_interval",
    "codecs",
    "tls",
    "srtp",
    "keepalive",
    "failover_timeout",
    "rate_limit",
    "allow_gsm",
    "health",
    "allow_fxo",
)
TRUNK_ALLOW_GSM_KEYS: tuple[str, ...] = ("groups", "prefixes")
TRUNK_ALLOW_FXO_KEYS: tuple[str, ...] = ("lines", "prefixes")
TRUNK_RATE_LIMIT_KEYS: tuple[str, ...] = (
    "requests_per_second",
    "request_burst",
    "calls_per_second",
    "call_burst",
)
LINE_KEYS: tuple[str, ...] = (
    "name",
    "type",
    "backend",
    "number",
    "display_name",
    "options",
    "trunk",
    "timers",
    "features",
    "mwi",
)
MWI_KEYS: tuple[str, ...] = ("subscribe", "server", "expires")
MWI_EXPIRES_RANGE = (60, 86400)
LINE_TRUNK_KEYS: tuple[str, ...] = ("name", "username", "password", "auth_username")
DIALPLAN_KEYS: tuple[str, ...] = ("digit_map", "routes")
ROUTE_KEYS: tuple[str, ...] = ("pattern", "to", "strip", "prepend")


def default_user_agent() -> str:
    """The User-Agent header value when none is configured, carrying the installed version."""
    try:
        from importlib.metadata import version

        return f"Branchline/{version('branchline')}"
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return "Branchline"


# --- value types -------------------------------------------------------------------------


@dataclass(frozen=True)
class HostPort:
    """A host and port as written in `listen`, `registrar` and `proxy`.

    `port_given` is False when the file named only a host: `port` then holds the default
    for the transport, and a trunk looks the host up by RFC 3263 (NAPTR/SRV) instead.
    """

    host: str
    port: int
    port_given: bool = field(default=True, compare=False)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port_given else host

    @property
    def lookup_port(self) -> int | None:
        """The port for an RFC 3263 lookup: None when the file gave none (SRV decides)."""
        return self.port if self.port_given else None


@dataclass(frozen=True)
class TlsFiles:
    """The gateway's own TLS certificate for `sip.tls_listen`; `ca_file` checks clients."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    verify_clients: bool = False


@dataclass(frozen=True)
class TrunkTls:
    """How a trunk's TLS server is checked (CA file, name) and how we prove who we are."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class TrunkRateLimit:
    """A trunk's own budgets: trusted by address, but an address can be spoofed."""

    requests_per_second: float = DEFAULT_TRUNK_REQUEST_RATE
    request_burst: float = DEFAULT_TRUNK_REQUEST_BURST
    calls_per_second: float = DEFAULT_TRUNK_CALL_RATE
    call_burst: float = DEFAULT_TRUNK_CALL_BURST


@dataclass(frozen=True)
class TrunkAllowGsm:
    """Calls arriving on a trunk that may leave through the box's modems (opt-in, narrow).

    Only to `groups` (gsm_groups names) and only numbers starting with one of `prefixes`;
    international and premium-rate prefixes stay closed unless one of them is listed.
    """

    groups: tuple[str, ...]
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class TrunkAllowFxo:
    """Calls arriving on a trunk that may leave on the box's exchange lines (opt-in, narrow).

    Only on `lines` (names of `type: fxo` lines) and only numbers starting with one of
    `prefixes`; international and premium-rate prefixes stay closed unless one is listed.
    """

    lines: tuple[str, ...]
    prefixes: tuple[str, ...]


@dataclass(frozen=True)
class PortRange:
    """An inclusive UDP port range for RTP; `first` is even so RTP/RTCP pairs line up."""

    first: int
    last: int

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"

    def __contains__(self, port: object) -> bool:
        return isinstance(port, int) and self.first <= port <= self.last

    @property
    def count(self) -> int:
        """How many ports the range holds (each call needs an even/odd pair)."""
        return self.last - self.first + 1


# --- sections ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GatewaySettings:
    """Identity and process-level settings of the daemon."""

    name: str = DEFAULT_NAME
    country: str = DEFAULT_COUNTRY
    control_socket: str = DEFAULT_CONTROL_SOCKET
    state_dir: str = DEFAULT_STATE_DIR
    log_level: str = DEFAULT_LOG_LEVEL
    #: Where `!secret <name>` values come from (mode 0600, owned by the service user).
    secrets_file: str | None = None
    #: auto (journald when run by systemd and systemd-python imports), journal or stderr.
    log: str = DEFAULT_LOG_TARGET


@dataclass(frozen=True)
class SipSettings:
    """The SIP user agent's local side; `public_host` is already resolved by the loader."""

    listen: HostPort
    public_host: str
    user_agent: str
    rtp_ports: PortRange
    codecs: tuple[str, ...] = DEFAULT_CODECS
    dtmf: str = DEFAULT_DTMF
    tcp_listen: HostPort | None = None
    tls_listen: HostPort | None = None
    tls: TlsFiles | None = None
    dns_servers: tuple[HostPort, ...] = ()
    trace: bool = False
    udp_receive_buffer: int = DEFAULT_UDP_RECEIVE_BUFFER
    #: Seconds without RTP on a leg that expects it before the call is ended; 0 = never.
    media_timeout: float = DEFAULT_MEDIA_TIMEOUT


@dataclass(frozen=True)
class TrunkConfig:
    """A SIP trunk or PBX the lines register on; `proxy` and `domain` have defaults applied."""

    name: str
    registrar: HostPort
    proxy: HostPort
    domain: str
    transport: str = DEFAULT_TRANSPORT
    expires: int = DEFAULT_EXPIRES
    keepalive_interval: float = DEFAULT_KEEPALIVE
    codecs: tuple[str, ...] | None = None
    tls: TrunkTls = field(default_factory=TrunkTls)
    srtp: str = DEFAULT_SRTP
    keepalive: str = DEFAULT_KEEPALIVE_MODE
    failover_timeout: float = DEFAULT_FAILOVER
    rate_limit: TrunkRateLimit = field(default_factory=TrunkRateLimit)
    allow_gsm: TrunkAllowGsm | None = None
    health: HealthSettings = field(default_factory=HealthSettings)
    allow_fxo: TrunkAllowFxo | None = None

    def effective_codecs(self, sip: SipSettings) -> tuple[str, ...]:
        """Codecs offered on this trunk: its own override, else the global list."""
        return self.codecs if self.codecs is not None else sip.codecs


@dataclass(frozen=True)
class MwiConfig:
    """Message waiting for a line (RFC 3842): SUBSCRIBE to message-summary at `server`
    ("trunk": the line's account at its trunk, or a sip: URI), refreshed every `expires` s.
    NOTIFYs the trunk sends unasked are taken whatever this says."""

    subscribe: bool = True
    server: str = "trunk"
    expires: int = 3600


@dataclass(frozen=True)
class LineTrunk:
    """The account a line registers with; the password is kept out of repr() and logs."""

    name: str
    username: str
    password: str = field(repr=False)
    auth_username: str | None = None

    @property
    def auth_user(self) -> str:
        """The user name for digest authentication (often equal to `username`)."""
        return self.auth_username if self.auth_username is not None else self.username


@dataclass(frozen=True)
class LineConfig:
    """One telephone port; `options` are passed to the hal backend untouched."""

    name: str
    backend: str
    number: str
    type: str = DEFAULT_LINE_TYPE
    display_name: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    trunk: LineTrunk | None = None
    mwi: MwiConfig | None = None
    timers: LineTimers = field(default_factory=LineTimers)
    """Digit timers, howler, ringing time, hook-flash window (gateway.config.line_features)."""
    features: LineFeatures = field(default_factory=LineFeatures)
    """Call forward, DND and star codes as configured (gateway.config.line_features)."""


@dataclass(frozen=True)
class Route:
    """One dial-plan route: a full-match regex on the dialled digits and where it goes.

    `targets` are tried in order (failover); `to` is the first of them, as before lists
    existed. Build with `Route(pattern, "trunk:a")` or `Route(pattern, "", targets=(...))`.
    """

    pattern: str
    to: str
    strip: int = 0
    prepend: str = ""
    targets: tuple[str, ...] = ()
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_regex", re.compile(self.pattern))
        if not self.targets:
            if not self.to:
                raise ValueError(f"route {self.pattern!r} has no target")
            object.__setattr__(self, "targets", (self.to,))
        elif not self.to:
            object.__setattr__(self, "to", self.targets[0])
        elif self.to != self.targets[0]:
            raise ValueError(f"route {self.pattern!r}: to {self.to!r} is not the first target")

    @property
    def trunk(self) -> str | None:
        """The trunk name when the first target is "trunk:<name>", else None."""
        return self.to.split(":", 1)[1] if self.to.startswith("trunk:") else None

    def matches(self, digits: str) -> bool:
        """True when the whole dialled string matches the pattern."""
        return self._regex.fullmatch(digits) is not None

    def rewrite(self, digits: str) -> str:
        """The number sent on: `strip` leading digits removed, then `prepend` added."""
        return self.prepend + digits[self.strip :]


@dataclass(frozen=True)
class DialPlan:
    """When a dialled string is complete (digit map) and where it goes (routes, in order)."""

    digit_map: str = DEFAULT_DIGIT_MAP
    routes: tuple[Route, ...] = ()

    def route_for(self, digits: str) -> Route | None:
        """The first route whose pattern matches, or None."""
        for route in self.routes:
            if route.matches(digits):
                return route
        return None


@dataclass(frozen=True)
class SecuritySettings:
    """How the SIP edge challenges clients that are not trusted trunks."""

    #: The digest challenge offer, one WWW-Authenticate each, in this order.
    digest_algorithms: tuple[str, ...] = DEFAULT_DIGEST_ALGORITHMS
    #: Budgets of each source address that is not a trunk (many phones behind one NAT
    #: share one); same keys as a trunk's.
    rate_limit: TrunkRateLimit = TrunkRateLimit(
        DEFAULT_SOURCE_REQUEST_RATE, DEFAULT_SOURCE_REQUEST_BURST,
        DEFAULT_SOURCE_CALL_RATE, DEFAULT_SOURCE_CALL_BURST)


@dataclass(frozen=True)
class Config:
    """The whole validated configuration; build it with the loader, never by hand from YAML."""

    gateway: GatewaySettings
    sip: SipSettings
    trunks: tuple[TrunkConfig, ...] = ()
    lines: tuple[LineConfig, ...] = ()
    dialplan: DialPlan = field(default_factory=DialPlan)
    source: str = field(default="<default>", compare=False)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    modems: tuple[ModemConfig, ...] = ()
    gsm_groups: tuple[GsmGroup, ...] = ()
    #: Always filled by the loader (country defaults and every way out when not written).
    emergency: EmergencySettings = field(default_factory=EmergencySettings)
    registrar: RegistrarSettings = field(default_factory=RegistrarSettings)
    sip_phones: tuple[PhoneConfig, ...] = ()
    call_records: CallRecordSettings = field(default_factory=CallRecordSettings)
    push: PushSettings | None = None
    metrics: MetricsSettings | None = None
    reload: ReloadSettings = field(default_factory=ReloadSettings)
    #: The values `!secret` took from the secrets file: masked wherever they appear in
    #: redacted(), whatever key holds them.
    secret_values: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    def trunk(self, name: str) -> TrunkConfig:
        """The trunk called `name` (KeyError if there is none)."""
        for trunk in self.trunks:
            if trunk.name == name:
                return trunk
        raise KeyError(name)

    def line(self, name: str) -> LineConfig:
        """The line called `name` (KeyError if there is none)."""
        for line in self.lines:
            if line.name == name:
                return line
        raise KeyError(name)

    def line_by_number(self, number: str) -> LineConfig | None:
        """The line whose local extension is `number`, for local routing."""
        for line in self.lines:
            if line.number == number:
                return line
        return None

    def phone(self, user: str) -> PhoneConfig:
        """The local SIP phone whose digest user is `user` (KeyError if there is none)."""
        for phone in self.sip_phones:
            if phone.user == user:
                return phone
        raise KeyError(user)

    def phone_by_number(self, number: str) -> PhoneConfig | None:
        """The local SIP phone whose extension is `number`, for local routing."""
        for phone in self.sip_phones:
            if phone.number == number:
                return phone
        return None

    def aor(self, line: LineConfig) -> str | None:
        """The address-of-record "sip:user@domain" a line registers, None if it has no trunk."""
        if line.trunk is None:
            return None
        return f"sip:{line.trunk.username}@{self.trunk(line.trunk.name).domain}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data in the YAML file's shape (secrets included): loading it gives this Config."""
        return _config_dict(self, redact=False)

    def redacted(self) -> dict[str, Any]:
        """Plain data for status output and logs, with every password and secret as "***"."""
        shown: dict[str, Any] = scrub_secrets(
            _config_dict(self, redact=True), self.secret_values, REDACTED)
        return shown


def _redact_options(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if _is_secret_key(str(k)) else _redact_options(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact_options(v) for v in value]
    return value


def _is_secret_key(key: str) -> bool:
    key = key.lower()
    return key in SECRET_OPTION_KEYS or key.endswith(("_password", "_secret", "_token"))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _config_dict(config: Config, *, redact: bool) -> dict[str, Any]:
    g, s = config.gateway, config.sip
    lines: list[dict[str, Any]] = []
    for line in config.lines:
        account: dict[str, Any] | None = None
        if line.trunk is not None:
            account = {
                "name": line.trunk.name,
                "username": line.trunk.username,
                "password": REDACTED if redact else line.trunk.password,
                "auth_username": line.trunk.auth_username,
            }
        lines.append(
            {
                "name": line.name,
                "type": line.type,
                "backend": line.backend,
                "number": line.number,
                "display_name": line.display_name,
                "options": _redact_options(line.options) if redact else _plain(line.options),
                "trunk": account,
                **line_features_dict(line.timers, line.features),
                "mwi": (None if line.mwi is None else
                        {"subscribe": line.mwi.subscribe, "server": line.mwi.server,
                         "expires": line.mwi.expires}),
            }
        )
    return {
        "gateway": {
            "name": g.name,
            "country": g.country,
            "control_socket": g.control_socket,
            "state_dir": g.state_dir,
            "log_level": g.log_level,
            "secrets_file": g.secrets_file,
            "log": g.log,
        },
        "sip": {
            "listen": str(s.listen),
            "public_host": s.public_host,
            "user_agent": s.user_agent,
            "rtp_ports": str(s.rtp_ports),
            "codecs": list(s.codecs),
            "dtmf": s.dtmf,
            "tcp_listen": str(s.tcp_listen) if s.tcp_listen else None,
            "tls_listen": str(s.tls_listen) if s.tls_listen else None,
            "tls": (
                {
                    "cert_file": s.tls.cert_file,
                    "key_file": s.tls.key_file,
                    "ca_file": s.tls.ca_file,
                    "verify_clients": s.tls.verify_clients,
                }
                if s.tls
                else None
            ),
            "dns_servers": [str(d) for d in s.dns_servers],
            "trace": s.trace,
            "udp_receive_buffer": s.udp_receive_buffer,
            "media_timeout": s.media_timeout,
        },
        "trunks": [
            {
                "name": t.name,
                "registrar": str(t.registrar),
                "proxy": str(t.proxy),
                "domain": t.domain,
                "transport": t.transport,
                "expires": t.expires,
                "keepalive_interval": t.keepalive_interval,
                "codecs": list(t.codecs) if t.codecs is not None else None,
                "tls": {
                    "ca_file": t.tls.ca_file,
                    "cert_file": t.tls.cert_file,
                    "key_file": t.tls.key_file,
                    "server_name": t.tls.server_name,
                    "verify": t.tls.verify,
                },
                "srtp": t.srtp,
                "keepalive": t.keepalive,
                "failover_timeout": t.failover_timeout,
                "rate_limit": {
                    "requests_per_second": t.rate_limit.requests_per_second,
                    "request_burst": t.rate_limit.request_burst,
                    "calls_per_second": t.rate_limit.calls_per_second,
                    "call_burst": t.rate_limit.call_burst,
                },
                "allow_gsm": None if t.allow_gsm is None else {
                    "groups": list(t.allow_gsm.groups),
                    "prefixes": list(t.allow_gsm.prefixes),
                },
                "health": health_dict(t.health),
                "allow_fxo": None if t.allow_fxo is None else {
                    "lines": list(t.allow_fxo.lines),
                    "prefixes": list(t.allow_fxo.prefixes),
                },
            }
            for t in config.trunks
        ],
        "lines": lines,
        "dialplan": {
            "digit_map": config.dialplan.digit_map,
            "routes": [
                {"pattern": r.pattern, "to": r.to if len(r.targets) == 1 else list(r.targets),
                 "strip": r.strip, "prepend": r.prepend}
                for r in config.dialplan.routes
            ],
        },
        "security": {
            "digest_algorithms": list(config.security.digest_algorithms),
            "rate_limit": {
                "requests_per_second": config.security.rate_limit.requests_per_second,
                "request_burst": config.security.rate_limit.request_burst,
                "calls_per_second": config.security.rate_limit.calls_per_second,
                "call_burst": config.security.rate_limit.call_burst,
            },
        },
        **modems_dict(config.modems, config.gsm_groups, redact=redact),
        **survivable_dict(config.emergency, config.registrar, config.sip_phones,
                          redact=redact, redacted=REDACTED),
        **service_dict(config.call_records, config.push, config.metrics, config.reload,
                       redact=redact, redacted=REDACTED),
    }
