"""JSON Schema of the `modems:` and `gsm_groups:` sections (see jsonschema.py for the rest).

Built from the constants in `modems.py`, like the loader. The audio path allowed for each
profile is an if/then rule; cross-references (a modem's group, a prefix's modem, unique
names and IMEIs) are checked only by the loader.
"""

from __future__ import annotations

from typing import Any

from gateway.config import modems as m


def _obj(properties: dict[str, Any], keys: tuple[str, ...], required: tuple[str, ...] = (),
         description: str = "") -> dict[str, Any]:
    assert set(properties) == set(keys), sorted(set(properties) ^ set(keys))
    out: dict[str, Any] = {"type": "object", "properties": properties,
                           "additionalProperties": False}
    if required:
        out["required"] = list(required)
    if description:
        out["description"] = description
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _string(description: str, **extra: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **extra}


def _digits(description: str, pattern: str) -> dict[str, Any]:
    """Digits the loader reads from the YAML text, so an unquoted `pin: 1234` is accepted."""
    return {"type": ["string", "integer"], "pattern": f"^{pattern}$", "description": description}


def _range(kind: str, low: float, high: float, description: str,
           default: float | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": kind, "minimum": low, "maximum": high,
                           "description": description}
    if default is not None:
        out["default"] = default
    return out


_SERIAL = _string(
    "A device path (/dev/serial/by-id/...) or a pyserial URL (socket://host:port).",
    pattern=r"^(/|(" + "|".join(m.SERIAL_URL_SCHEMES) + r")://)",
)


def _audio_rules() -> list[dict[str, Any]]:
    """Per profile, the audio types it can carry; per type, the device or port it needs."""
    rules: list[dict[str, Any]] = []
    for profile, allowed in m.PROFILE_AUDIO.items():
        audio: dict[str, Any] = {"properties": {"type": {"enum": list(allowed)}}}
        if profile != "sim":
            audio["type"] = "object"  # required, and not null
        then: dict[str, Any] = {"properties": {"audio": audio}}
        if profile != "sim":
            then["required"] = ["audio"]
        rules.append({
            "if": {"properties": {"profile": {"const": profile}}, "required": ["profile"]},
            "then": then,
        })
    return rules


def _audio() -> dict[str, Any]:
    audio = _obj(
        {
            "type": {"enum": list(m.AUDIO_TYPES),
                     "description": "uac (the module's USB audio), serial-pcm (8 kHz 16-bit "
                     "PCM on a second serial port), usb-soundcard (analog audio into a USB "
                     "sound card), sim (the emulator)."},
            "device": _nullable(_string("ALSA device for uac and usb-soundcard.",
                                        pattern=f"^{m.ALSA_DEVICE_PATTERN}$")),
            "pcm_port": _nullable(_SERIAL),
        },
        m.MODEM_AUDIO_KEYS,
        required=("type",),
        description="The voice path; the profile decides which types are possible.",
    )
    needs: list[dict[str, Any]] = []
    for kind in m.AUDIO_TYPES:
        required = [k for k, kinds in (("device", m.AUDIO_NEEDS_DEVICE),
                                       ("pcm_port", m.AUDIO_NEEDS_PCM_PORT)) if kind in kinds]
        absent = [k for k in ("device", "pcm_port") if k not in required]
        then: dict[str, Any] = {"properties": {k: {"type": "null"} for k in absent}}
        if required:
            then["required"] = required
            then["properties"].update({k: {"type": "string"} for k in required})
        needs.append({"if": {"properties": {"type": {"const": kind}}, "required": ["type"]},
                      "then": then})
    audio["allOf"] = needs
    return audio


def modem_schemas() -> dict[str, Any]:
    """The `modems` and `gsm_groups` properties of the top-level object."""
    name = _string("Modem name, in logs, status and metrics.",
                   pattern=f"^{m.MODEM_NAME_PATTERN}$")
    modem = _obj(
        {
            "name": name,
            "profile": {"enum": list(m.MODEM_PROFILES),
                        "description": "AT dialect and voice path; sim is the emulator."},
            "port": _nullable(_SERIAL),
            "match": _nullable(_obj(
                {
                    "imei": _nullable(_digits("The modem's IMEI (AT+CGSN).", m.IMEI_PATTERN)),
                    "usb": _nullable(_string("USB vendor:product in hex.",
                                             pattern=f"^{m.USB_ID_PATTERN}$")),
                },
                m.MODEM_MATCH_KEYS,
                description="Finds the modem again under a new /dev name.",
                ) | {"anyOf": [{"required": ["imei"]}, {"required": ["usb"]}]}),
            "audio": _nullable(_audio()),
            "pin": _nullable(_digits("SIM PIN (never logged; never retried after a refusal).",
                                     m.SIM_PIN_PATTERN) | {"writeOnly": True}),
            "group": _nullable(_string("Name of a group from gsm_groups.", minLength=1)),
            "number": _nullable(_digits("The SIM's own number.", m.MSISDN_PATTERN)),
            "inbound": _nullable(_string("Where incoming calls go: line:<name> or trunk:<name>.",
                                         pattern=f"^{m.INBOUND_PATTERN}$")),
            "inbound_number": _nullable(_digits("Number an incoming call is sent to at a trunk.",
                                                m.PREFIX_PATTERN)),
            "sms": _nullable(_obj(
                {
                    "to_sip": _nullable(_string("SIP URI that receives each SMS as a MESSAGE.",
                                                pattern="^sips?:")),
                    "webhook": _nullable(_string("HTTP(S) URL that receives each SMS.",
                                                 pattern=r"^https?://[^\s/?#]+")),
                    "queue": _nullable(_string("SQLite file of the SMS queue.", pattern="^/")),
                },
                m.MODEM_SMS_KEYS,
                description="Where received SMS go.",
            )),
            "minute_cap": _nullable(_range("integer", m.MINUTE_CAP_MIN, m.MINUTE_CAP_MAX,
                                           "Outgoing minutes per calendar month.")),
            "power_gpio": _nullable(_obj(
                {
                    "pin": {"anyOf": [
                        {"type": "integer", "minimum": m.GPIO_PIN_MIN,
                         "maximum": m.GPIO_PIN_MAX},
                        {"type": "string", "pattern": f"^({m.GPIO_NAME_PATTERN})$"},
                    ], "description": "BCM number or gpiozero pin name."},
                    "off_seconds": _range("number", m.OFF_SECONDS_MIN, m.OFF_SECONDS_MAX,
                                          "Seconds the power stays off.",
                                          m.DEFAULT_OFF_SECONDS),
                },
                m.POWER_GPIO_KEYS,
                required=("pin",),
                description="Power-cycles a modem that stays dead.",
            )),
            "probe_interval": _range("number", m.PROBE_MIN, m.PROBE_MAX,
                                     "Seconds between AT probes.", m.DEFAULT_PROBE_INTERVAL),
            "unresponsive_after": _range("number", m.UNRESPONSIVE_MIN, m.UNRESPONSIVE_MAX,
                                         "Seconds without an answer before the port counts "
                                         "as unresponsive.", m.DEFAULT_UNRESPONSIVE_AFTER),
        },
        m.MODEM_KEYS,
        required=("name", "profile"),
    )
    modem["allOf"] = [*_audio_rules(),
                      {"anyOf": [
                          {"required": ["port"], "properties": {"port": {"type": "string"}}},
                          {"required": ["match"], "properties": {"match": {"type": "object"}}},
                      ]}]
    group = _obj(
        {
            "name": _string("Group name, used in routes as gsm:<name>.",
                            pattern=f"^{m.MODEM_NAME_PATTERN}$"),
            "strategy": {"enum": list(m.GSM_STRATEGIES), "default": m.DEFAULT_GSM_STRATEGY,
                         "description": "How a modem is chosen for each call."},
            "prefixes": _nullable({
                "type": "object",
                "additionalProperties": {
                    "type": "array",
                    "items": {"type": ["string", "integer"],
                              "pattern": f"^{m.PREFIX_PATTERN}$"},
                },
                "description": "Modem name -> number prefixes it carries (strategy prefix).",
            }),
        },
        m.GSM_GROUP_KEYS,
        required=("name",),
    )
    group["allOf"] = [{
        "if": {"properties": {"strategy": {"const": "prefix"}}, "required": ["strategy"]},
        "then": {"required": ["prefixes"],
                 "properties": {"prefixes": {"type": "object", "minProperties": 1}}},
        "else": {"properties": {"prefixes": {"type": "null"}}},
    }]
    return {
        "modems": _nullable({"type": "array", "items": modem}),
        "gsm_groups": _nullable({"type": "array", "items": group}),
    }
