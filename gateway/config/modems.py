"""The `modems:` and `gsm_groups:` config model: GSM/LTE modules and the route groups they serve.

Constants here are read by the loader (`_modems.py`) and by the JSON Schema export, so the
two agree on profiles, audio paths and ranges. Nothing here imports the rest of the config
package: `schema.Config` imports this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Modem profiles: the AT dialect and voice path of a module family; "sim" is the emulator
#: in hal/sim. The driver confirms the profile by probing (ATI, AT+GMR, AT+CGSN).
MODEM_PROFILES: tuple[str, ...] = (
    "quectel-ec25",
    "quectel-eg25-g",
    "simcom-sim7600",
    "simcom-sim800",
    "sim",
)
#: How voice reaches the gateway: USB audio class (the module's own sound card), PCM frames on
#: a second serial port, an analog module wired to a USB sound card, or the emulator's pty.
AUDIO_TYPES: tuple[str, ...] = ("uac", "serial-pcm", "usb-soundcard", "sim")
#: The audio paths each profile can carry. The SIM800 has only analog audio; the EC25/EG25-G
#: switch between UAC and serial PCM with AT+QPCMV; the SIM7600 sends PCM on its USB audio
#: serial port after AT+CPCMREG=1; the emulator speaks serial PCM on a pty. (gateway/modem/
#: profiles.py calls the SIM800's path "analog": here it is named after what is plugged in.)
PROFILE_AUDIO: Mapping[str, tuple[str, ...]] = {
    "quectel-ec25": ("uac", "serial-pcm"),
    "quectel-eg25-g": ("uac", "serial-pcm"),
    "simcom-sim7600": ("serial-pcm",),
    "simcom-sim800": ("usb-soundcard",),
    "sim": ("sim", "serial-pcm"),
}
#: Audio types that name an ALSA device, and those that name a second serial port.
AUDIO_NEEDS_DEVICE: tuple[str, ...] = ("uac", "usb-soundcard")
AUDIO_NEEDS_PCM_PORT: tuple[str, ...] = ("serial-pcm",)
#: pyserial URL schemes (serial_for_url) accepted besides a device path.
SERIAL_URL_SCHEMES: tuple[str, ...] = ("socket", "rfc2217", "loop", "spy", "alt", "hwgrep")
GSM_STRATEGIES: tuple[str, ...] = ("round-robin", "least-used", "prefix")
DEFAULT_GSM_STRATEGY = "round-robin"

#: Modem and group names appear in route targets ("gsm:<group>"), logs and metric labels.
MODEM_NAME_PATTERN = r"[a-z0-9_-]+"
#: A SIM PIN is 4 to 8 digits (3GPP TS 31.101).
SIM_PIN_PATTERN = r"[0-9]{4,8}"
#: The SIM's own number: digits, optionally with a leading '+'.
MSISDN_PATTERN = r"\+?[0-9]{3,15}"
IMEI_PATTERN = r"[0-9]{15}"
USB_ID_PATTERN = r"[0-9a-fA-F]{4}:[0-9a-fA-F]{4}"
PREFIX_PATTERN = r"\+?[0-9*#]+"
SERIAL_URL_PATTERN = r"(" + "|".join(SERIAL_URL_SCHEMES) + r")://.*"
ALSA_DEVICE_PATTERN = r"[A-Za-z0-9_:=,.-]+"

MINUTE_CAP_MIN, MINUTE_CAP_MAX = 1, 100_000
GPIO_PIN_MIN, GPIO_PIN_MAX = 0, 53
OFF_SECONDS_MIN, OFF_SECONDS_MAX, DEFAULT_OFF_SECONDS = 0.5, 60.0, 3.0
PROBE_MIN, PROBE_MAX, DEFAULT_PROBE_INTERVAL = 0.5, 3600.0, 5.0
UNRESPONSIVE_MIN, UNRESPONSIVE_MAX, DEFAULT_UNRESPONSIVE_AFTER = 1.0, 3600.0, 15.0
#: gpiozero pin names: "GPIO17", "BCM17", "BOARD11", "J8:11", "WPI0".
GPIO_NAME_PATTERN = r"(GPIO|BCM|BOARD|WPI)[0-9]{1,2}|J8:[0-9]{1,2}"

MODEM_KEYS: tuple[str, ...] = (
    "name",
    "profile",
    "port",
    "match",
    "audio",
    "pin",
    "group",
    "number",
    "sms",
    "minute_cap",
    "power_gpio",
    "probe_interval",
    "unresponsive_after",
    "inbound",
    "inbound_number",
)
#: Where a call coming in on a modem goes: ring an FXS line, or INVITE a trunk.
INBOUND_PATTERN = r"(line|trunk):[A-Za-z0-9_.-]+"
MODEM_MATCH_KEYS: tuple[str, ...] = ("imei", "usb")
MODEM_AUDIO_KEYS: tuple[str, ...] = ("type", "device", "pcm_port")
MODEM_SMS_KEYS: tuple[str, ...] = ("to_sip", "webhook", "queue")
POWER_GPIO_KEYS: tuple[str, ...] = ("pin", "off_seconds")
GSM_GROUP_KEYS: tuple[str, ...] = ("name", "strategy", "prefixes")


@dataclass(frozen=True)
class ModemMatch:
    """How to find the modem again after it re-enumerates: by IMEI and/or USB vendor:product."""

    imei: str | None = None
    usb: str | None = None


@dataclass(frozen=True)
class ModemAudio:
    """The voice path: `device` is an ALSA device, `pcm_port` a serial device or URL."""

    type: str
    device: str | None = None
    pcm_port: str | None = None


@dataclass(frozen=True)
class ModemSms:
    """Where received SMS go (SIP MESSAGE and/or webhook) and the queue that holds them."""

    to_sip: str | None = None
    webhook: str | None = None
    queue: str | None = None


@dataclass(frozen=True)
class PowerGpio:
    """A GPIO pin that cuts the modem's power for `off_seconds` when it stays dead."""

    pin: int | str
    off_seconds: float = DEFAULT_OFF_SECONDS


@dataclass(frozen=True)
class ModemConfig:
    """One GSM/LTE module; the PIN is kept out of repr() and logs."""

    name: str
    profile: str
    audio: ModemAudio
    port: str | None = None
    match: ModemMatch | None = None
    pin: str | None = field(default=None, repr=False)
    group: str | None = None
    number: str | None = None
    sms: ModemSms | None = None
    minute_cap: int | None = None
    power_gpio: PowerGpio | None = None
    probe_interval: float = DEFAULT_PROBE_INTERVAL
    unresponsive_after: float = DEFAULT_UNRESPONSIVE_AFTER
    inbound: str | None = None
    """``line:<name>`` or ``trunk:<name>``: where incoming GSM calls go (None: refused)."""
    inbound_number: str | None = None
    """The number an incoming call is sent to at a trunk (default: the SIM's `number`)."""


@dataclass(frozen=True)
class GsmGroup:
    """A route group of modems (`gsm:<name>` in routes) and how it picks one per call.

    `prefixes` maps a member modem's name to the number prefixes it carries (strategy prefix).
    """

    name: str
    strategy: str = DEFAULT_GSM_STRATEGY
    prefixes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def members(self, modems: tuple[ModemConfig, ...]) -> tuple[str, ...]:
        """The names of the modems in this group, in config order."""
        return tuple(m.name for m in modems if m.group == self.name)


def modems_dict(
    modems: tuple[ModemConfig, ...], groups: tuple[GsmGroup, ...], *, redact: bool
) -> dict[str, Any]:
    """The `modems:` and `gsm_groups:` sections as plain data in the YAML file's shape."""
    out: list[dict[str, Any]] = []
    for m in modems:
        out.append(
            {
                "name": m.name,
                "profile": m.profile,
                "port": m.port,
                "match": (
                    {"imei": m.match.imei, "usb": m.match.usb} if m.match is not None else None
                ),
                "audio": {
                    "type": m.audio.type,
                    "device": m.audio.device,
                    "pcm_port": m.audio.pcm_port,
                },
                "pin": "***" if redact and m.pin is not None else m.pin,
                "group": m.group,
                "number": m.number,
                "sms": (
                    {"to_sip": m.sms.to_sip, "webhook": m.sms.webhook, "queue": m.sms.queue}
                    if m.sms is not None
                    else None
                ),
                "minute_cap": m.minute_cap,
                "power_gpio": (
                    {"pin": m.power_gpio.pin, "off_seconds": m.power_gpio.off_seconds}
                    if m.power_gpio is not None
                    else None
                ),
                "probe_interval": m.probe_interval,
                "unresponsive_after": m.unresponsive_after,
                "inbound": m.inbound,
                "inbound_number": m.inbound_number,
            }
        )
    return {
        "modems": out,
        "gsm_groups": [
            {
                "name": g.name,
                "strategy": g.strategy,
                "prefixes": {k: list(v) for k, v in g.prefixes.items()} or None,
            }
            for g in groups
        ],
    }
