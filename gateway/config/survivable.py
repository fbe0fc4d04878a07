"""The survivability part of the config model: trunk health, emergency calls, the local
registrar and the local SIP phones it serves.

Constants here are read by the loader (`_dialplan.py`, `_phones.py`, `_trunks.py`) and by the
JSON Schema export, so the two agree on keys and ranges. `schema.py` re-exports the classes;
this module imports nothing from the rest of the config package (schema imports it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.routing.emergency import DEFAULT_NUMBERS
from gateway.routing.health import HealthSettings

if TYPE_CHECKING:
    from gateway.config.schema import LineTrunk

# --- trunks[].health ----------------------------------------------------------------------

HEALTH_KEYS: tuple[str, ...] = (
    "probe_interval", "probe_timeout", "misses", "failback_after", "degraded_loss", "window"
)
#: (low, high) of each health key; HealthSettings checks the same bounds on construction.
HEALTH_RANGES: dict[str, tuple[float, float]] = {
    "probe_interval": (0.05, 3600.0),
    "probe_timeout": (0.05, 60.0),
    "misses": (1, 100),
    "failback_after": (0.0, 3600.0),
    "degraded_loss": (0.01, 1.0),
    "window": (1.0, 600.0),
}
HEALTH_INTEGER_KEYS: frozenset[str] = frozenset({"misses"})
HEALTH_DESCRIPTIONS: dict[str, str] = {
    "probe_interval": "Seconds between OPTIONS probes to the trunk; sub-second allowed.",
    "probe_timeout": "Seconds before an unanswered probe counts as missed.",
    "misses": "Missed probes in a row that make the trunk down.",
    "failback_after": "Seconds of answered probes before a down/degraded trunk is up again.",
    "degraded_loss": "Probe loss fraction over `window` that makes the trunk degraded.",
    "window": "Seconds over which probe loss is measured.",
}

# --- sip.media_timeout --------------------------------------------------------------------

#: Seconds without RTP (while expecting it) before a call is ended; 0 turns it off.
MEDIA_TIMEOUT_MIN, MEDIA_TIMEOUT_MAX, DEFAULT_MEDIA_TIMEOUT = 0.5, 3600.0, 30.0

# --- emergency ----------------------------------------------------------------------------

EMERGENCY_KEYS: tuple[str, ...] = ("numbers", "targets")
EMERGENCY_NUMBER_PATTERN = r"[0-9]{1,15}"

# --- registrar ----------------------------------------------------------------------------

REGISTRAR_KEYS: tuple[str, ...] = (
    "min_expires", "max_expires", "default_expires", "max_contacts"
)
REGISTRAR_EXPIRES_MIN, REGISTRAR_EXPIRES_MAX = 1, 86400
DEFAULT_MIN_EXPIRES, DEFAULT_MAX_EXPIRES, DEFAULT_DEFAULT_EXPIRES = 60, 3600, 600
MAX_CONTACTS_MIN, MAX_CONTACTS_MAX, DEFAULT_MAX_CONTACTS = 1, 100, 3

# --- sip_phones ---------------------------------------------------------------------------

PHONE_KEYS: tuple[str, ...] = ("user", "password", "number", "display_name", "trunk")
#: Digest user names of local phones: also their SIP URI user part and the default number.
PHONE_USER_PATTERN = r"[A-Za-z0-9_.-]+"
#: A local phone's digest password guards calls out through the trunk and GSM: 8 at least.
PHONE_PASSWORD_MIN = 8


@dataclass(frozen=True)
class EmergencySettings:
    """Numbers dialled at once and routed to the best target available, whatever the routes.

    The loader always fills both: `numbers` from `gateway.country` and `targets` from every
    trunk, GSM group and FXO line, unless the file says otherwise.
    """

    numbers: tuple[str, ...] = DEFAULT_NUMBERS
    targets: tuple[str, ...] = ()


@dataclass(frozen=True)
class RegistrarSettings:
    """The survivable registrar for local SIP phones (RFC 3261 section 10.3 limits)."""

    min_expires: int = DEFAULT_MIN_EXPIRES
    max_expires: int = DEFAULT_MAX_EXPIRES
    default_expires: int = DEFAULT_DEFAULT_EXPIRES
    max_contacts: int = DEFAULT_MAX_CONTACTS


@dataclass(frozen=True)
class PhoneConfig:
    """A local SIP phone at the branch: its digest account, its extension and, optionally,
    the upstream account the box relays it to while the trunk is up."""

    user: str
    password: str = field(repr=False)
    number: str = ""
    display_name: str | None = None
    trunk: LineTrunk | None = None

    def __post_init__(self) -> None:
        if not self.number:
            object.__setattr__(self, "number", self.user)


def health_dict(health: HealthSettings) -> dict[str, Any]:
    """A trunk's `health:` mapping as the file writes it."""
    return {key: getattr(health, key) for key in HEALTH_KEYS}


def survivable_dict(
    emergency: EmergencySettings,
    registrar: RegistrarSettings,
    phones: Sequence[PhoneConfig],
    *,
    redact: bool,
    redacted: str,
) -> dict[str, Any]:
    """The top-level `emergency`, `registrar` and `sip_phones` sections as plain data."""
    return {
        "emergency": {
            "numbers": list(emergency.numbers),
            # null = "every way out" again, so a dump with no trunk or group still loads
            "targets": list(emergency.targets) or None,
        },
        "registrar": {key: getattr(registrar, key) for key in REGISTRAR_KEYS},
        "sip_phones": [
            {
                "user": phone.user,
                "password": redacted if redact else phone.password,
                "number": phone.number,
                "display_name": phone.display_name,
                "trunk": None if phone.trunk is None else {
                    "name": phone.trunk.name,
                    "username": phone.trunk.username,
                    "password": redacted if redact else phone.trunk.password,
                    "auth_username": phone.trunk.auth_username,
                },
            }
            for phone in phones
        ],
    }
