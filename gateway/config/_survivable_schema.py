"""JSON Schema of the survivability keys (see jsonschema.py for the rest): `trunks[].health`,
`dialplan.routes[].to` as a list, `sip.media_timeout`, `emergency`, `registrar`, `sip_phones`.

Built from the constants in `survivable.py`, like the loader. Cross-checks (unique users and
numbers, clashes with line numbers, trunk and group names, min <= default <= max) are the
loader's alone.
"""

from __future__ import annotations

from typing import Any

from gateway.config import schema as s
from gateway.config import survivable as sv
from gateway.config._modems_schema import _nullable, _obj, _range, _string
from gateway.routing.health import HealthSettings

_TARGET: dict[str, Any] = _string(
    "local, line:<name>, trunk:<name>, gsm:<group> or fxo:<name>.",
    pattern=f"^({s.ROUTE_TARGET_PATTERN})$",
)
_TARGETS: dict[str, Any] = {
    "type": "array", "items": _TARGET, "minItems": 1, "uniqueItems": True,
    "description": "Targets tried in this order: the next one when a call to the previous "
    "times out, gets 408/5xx, or its trunk is down.",
}


def route_to_schema() -> dict[str, Any]:
    """`dialplan.routes[].to`: one target, or an ordered failover list."""
    return {"anyOf": [_TARGET, _TARGETS],
            "description": "Where the call goes; a list is tried in order (failover)."}


def media_timeout_schema() -> dict[str, Any]:
    """`sip.media_timeout`: 0 (off) or a number of seconds."""
    return {
        "anyOf": [{"const": 0},
                  {"type": "number", "minimum": sv.MEDIA_TIMEOUT_MIN,
                   "maximum": sv.MEDIA_TIMEOUT_MAX}],
        "default": sv.DEFAULT_MEDIA_TIMEOUT,
        "description": "Seconds without RTP on a call that expects it before the call is "
        "ended (BYE and a tone); 0 = never.",
    }


def health_schema() -> dict[str, Any]:
    """`trunks[].health`: how the trunk is probed and judged up, degraded or down."""
    defaults = HealthSettings()
    properties = {
        key: _range("integer" if key in sv.HEALTH_INTEGER_KEYS else "number",
                    *sv.HEALTH_RANGES[key], sv.HEALTH_DESCRIPTIONS[key],
                    getattr(defaults, key))
        for key in sv.HEALTH_KEYS
    }
    return _nullable(_obj(properties, sv.HEALTH_KEYS,
                          description="Trunk health: OPTIONS probes and hysteresis."))


def survivable_schemas(account: dict[str, Any]) -> dict[str, Any]:
    """The top-level `emergency`, `registrar` and `sip_phones` schemas; `account` is the
    trunk account schema the lines use (a phone's `trunk:` has the same shape)."""
    emergency = _obj(
        {
            "numbers": _nullable({
                "type": "array", "minItems": 1, "uniqueItems": True,
                "items": {"type": ["string", "integer"],
                          "pattern": f"^{sv.EMERGENCY_NUMBER_PATTERN}$"},
                "description": "Emergency numbers (digits); default: gateway.country's.",
            }),
            "targets": _nullable({
                **_TARGETS,
                "description": "Where emergency calls go, best available first; default: "
                "every trunk, then every GSM group, then FXO lines.",
            }),
        },
        sv.EMERGENCY_KEYS,
        description="Emergency numbers: always dialled, never refused by toll-fraud rules, "
        "sent to the best target available now.",
    )
    expires = (sv.REGISTRAR_EXPIRES_MIN, sv.REGISTRAR_EXPIRES_MAX)
    registrar = _obj(
        {
            "min_expires": _range("integer", *expires, "Shortest registration accepted "
                                  "(shorter gets 423 Interval Too Brief).",
                                  sv.DEFAULT_MIN_EXPIRES),
            "max_expires": _range("integer", *expires, "Longest registration granted.",
                                  sv.DEFAULT_MAX_EXPIRES),
            "default_expires": _range("integer", *expires, "Granted when the phone asks "
                                      "for none.", sv.DEFAULT_DEFAULT_EXPIRES),
            "max_contacts": _range("integer", sv.MAX_CONTACTS_MIN, sv.MAX_CONTACTS_MAX,
                                   "Contacts (devices) one phone account may register.",
                                   sv.DEFAULT_MAX_CONTACTS),
        },
        sv.REGISTRAR_KEYS,
        description="The survivable registrar for local SIP phones.",
    )
    phone = _obj(
        {
            "user": {"type": ["string", "integer"], "pattern": f"^{sv.PHONE_USER_PATTERN}$",
                     "description": "Digest user name; also the extension unless `number`."},
            "password": {"type": ["string", "integer"], "minLength": sv.PHONE_PASSWORD_MIN,
                         "writeOnly": True,
                         "description": f"Digest password, {sv.PHONE_PASSWORD_MIN}+ characters, "
                         "not the user name."},
            "number": _nullable({"type": ["string", "integer"],
                                 "pattern": f"^{s.NUMBER_PATTERN}$",
                                 "description": "Extension (digits); default: the user."}),
            "display_name": _nullable(_string("Caller name shown for calls from the phone.")),
            "trunk": _nullable({**account, "description": "Upstream account the box relays "
                                "this phone to while the trunk is up."}),
        },
        sv.PHONE_KEYS,
        required=("user", "password"),
    )
    return {
        "emergency": _nullable(emergency),
        "registrar": _nullable(registrar),
        "sip_phones": _nullable({"type": "array", "items": phone,
                                 "description": "Local SIP phones registering to the box."}),
    }
