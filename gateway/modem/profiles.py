"""Modem profiles as data: what to send a module at start, before each call and after it.

A profile is chosen by name in config and confirmed by probing (`match_profile` on the
ATI / AT+CGMM answer). The per-call audio commands matter most: a Quectel module forgets
AT+QPCMV between calls on some firmware, and a call placed without it has one-way or no
audio, so the GSM line asks `call_setup_commands` before every ATD and ATA.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "AudioSetup",
    "ModemProfile",
    "PROFILES",
    "PcmFormat",
    "EMULATOR",
    "UnknownProfile",
    "match_profile",
    "mismatch_message",
    "profile",
    "profile_for",
]


@dataclass(frozen=True)
class PcmFormat:
    """Raw voice samples the module exchanges with us (no header)."""

    sample_rate: int = 8000
    sample_width: int = 2
    byteorder: str = "little"
    channels: int = 1


@dataclass(frozen=True)
class AudioSetup:
    """One way of getting a module's call audio in and out."""

    path: str
    """``uac`` (USB audio class device), ``serial-pcm`` (raw PCM on a serial port) or
    ``usb-soundcard`` (the module's analog audio through a USB sound card); the names are the
    config's ``audio.type`` values."""
    description: str
    before_call: tuple[str, ...] = ()
    """Sent before every ATD and every ATA."""
    after_connect: tuple[str, ...] = ()
    """Sent once the call is connected (SIMCom starts its PCM stream only then)."""
    after_end: tuple[str, ...] = ()
    pcm: PcmFormat | None = None


@dataclass(frozen=True)
class ModemProfile:
    """Everything module-specific the pure GSM code needs; the rest is plain 27.007."""

    name: str
    vendor: str
    models: tuple[str, ...]
    """Model names as ATI / AT+CGMM print them; matched as case-insensitive substrings."""
    voice: bool
    audio: Mapping[str, AudioSetup]
    default_audio: str
    init_commands: tuple[str, ...]
    signal_command: str
    """The richest signal query the module has: AT+QCSQ, AT+CPSI? or AT+CSQ."""
    pin_retries_command: str | None
    iccid_command: str
    registration_commands: tuple[str, ...] = ("AT+CREG?",)

    def audio_setup(self, path: str | None = None) -> AudioSetup:
        """The named audio path (the profile's default when None)."""
        key = self.default_audio if path is None else path
        try:
            return self.audio[key]
        except KeyError:
            known = ", ".join(sorted(self.audio))
            raise UnknownProfile(
                f"profile {self.name!r} has no audio path {key!r} (it has: {known})"
            ) from None

    def call_setup_commands(self, path: str | None = None) -> tuple[str, ...]:
        """Voice setup to send before every call, dialled or answered."""
        return self.audio_setup(path).before_call

    def call_connected_commands(self, path: str | None = None) -> tuple[str, ...]:
        return self.audio_setup(path).after_connect

    def call_ended_commands(self, path: str | None = None) -> tuple[str, ...]:
        return self.audio_setup(path).after_end


class UnknownProfile(ValueError):
    """A profile or audio path name that does not exist."""


_COMMON_INIT = (
    "ATE0",
    "AT+CMEE=2",
    "AT+CLIP=1",
    "AT+CRC=0",
    "AT+CNMI=2,1,0,0,0",
    "AT+CMGF=0",
    "AT+CREG=2",
)
"""Echo off, verbose errors, caller ID on, plain RING, +CMTI for each stored SMS, PDU mode,
registration URCs with cell."""

_PCM_8K = PcmFormat()

_QUECTEL_AUDIO = {
    "uac": AudioSetup(
        "uac",
        "USB audio class device (AT+QPCMV=1,2), 8 kHz 16-bit mono",
        before_call=("AT+QPCMV=1,2",),
        pcm=_PCM_8K,
    ),
    "serial-pcm": AudioSetup(
        "serial-pcm",
        "raw PCM on the USB serial voice port (AT+QPCMV=1,0), 8 kHz 16-bit little-endian",
        before_call=("AT+QPCMV=1,0",),
        pcm=_PCM_8K,
    ),
}


def _quectel(name: str, model: str) -> ModemProfile:
    return ModemProfile(
        name=name,
        vendor="Quectel",
        models=(model,),
        voice=True,
        audio=_QUECTEL_AUDIO,
        default_audio="uac",
        init_commands=(*_COMMON_INIT, "AT+CGREG=2", "AT+CEREG=2"),
        signal_command="AT+QCSQ",
        pin_retries_command='AT+QPINC="SC"',
        iccid_command="AT+QCCID",
        registration_commands=("AT+CREG?", "AT+CEREG?"),
    )


PROFILES: Mapping[str, ModemProfile] = {
    p.name: p
    for p in (
        _quectel("quectel-ec25", "EC25"),
        _quectel("quectel-eg25-g", "EG25"),
        ModemProfile(
            name="simcom-sim7600",
            vendor="SIMCom",
            models=("SIM7600",),
            voice=True,
            audio={
                "serial-pcm": AudioSetup(
                    "serial-pcm",
                    "PCM over the USB audio serial port, started by AT+CPCMREG=1 once the call"
                    " connects; 8 kHz 16-bit little-endian",
                    after_connect=("AT+CPCMREG=1",),
                    after_end=("AT+CPCMREG=0",),
                    pcm=_PCM_8K,
                ),
            },
            default_audio="serial-pcm",
            init_commands=(*_COMMON_INIT, "AT+CGREG=2", "AT+CEREG=2"),
            signal_command="AT+CPSI?",
            pin_retries_command="AT+SPIC",
            iccid_command="AT+CICCID",
            registration_commands=("AT+CREG?", "AT+CEREG?"),
        ),
        ModemProfile(
            name="simcom-sim800",
            vendor="SIMCom",
            models=("SIM800",),
            voice=True,
            audio={
                "usb-soundcard": AudioSetup(
                    "usb-soundcard",
                    "the module's analog speaker/microphone pins through a USB sound card",
                ),
            },
            default_audio="usb-soundcard",
            init_commands=(*_COMMON_INIT, "AT+CGREG=2"),
            signal_command="AT+CSQ",
            pin_retries_command="AT+SPIC",
            iccid_command="AT+CCID",
        ),
    )
}


def profile(name: str) -> ModemProfile:
    """The profile called `name`; a clear error listing the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(sorted(PROFILES))
        raise UnknownProfile(f"unknown modem profile {name!r} (known: {known})") from None


def match_profile(identity: str | Iterable[str]) -> ModemProfile | None:
    """The profile whose model name appears in the probe answer (ATI lines or AT+CGMM).

    None when nothing matches; the longest model name wins so that a future ``SIM7600G``
    profile would beat ``SIM7600``."""
    text = identity if isinstance(identity, str) else "\n".join(identity)
    upper = text.upper()
    best: tuple[int, ModemProfile] | None = None
    for p in PROFILES.values():
        for model in p.models:
            if model.upper() in upper and (best is None or len(model) > best[0]):
                best = (len(model), p)
    return None if best is None else best[1]


EMULATOR = "sim"
"""The config's profile name for the hal/sim emulator, which speaks one of the real dialects."""


def profile_for(configured: str, identity: str | Iterable[str]) -> ModemProfile:
    """The profile to run: the configured one, or for the emulator (``sim``) whichever real
    profile its probe answer matches."""
    if configured != EMULATOR:
        return profile(configured)
    found = match_profile(identity)
    if found is None:
        text = identity if isinstance(identity, str) else " ".join(identity)
        raise UnknownProfile(f"the emulator answered {text!r}, which matches no known profile")
    return found


def mismatch_message(configured: str, identity: str | Iterable[str], port: str) -> str | None:
    """What to log when config names one profile and the probe finds another (None if they
    agree). An unrecognised module is reported too: the configured profile is then a guess."""
    text = identity if isinstance(identity, str) else " ".join(s.strip() for s in identity)
    text = " ".join(text.split())
    found = match_profile(text)
    if found is not None and (found.name == configured or configured == EMULATOR):
        return None
    if found is None:
        return (
            f"modem at {port} answered {text!r}, which matches no known profile; "
            f"using the configured profile {configured!r} as is"
        )
    return (
        f"config names modem profile {configured!r} for {port}, but the modem there "
        f"identifies as {text!r}, which is profile {found.name!r}; fix modems: in the config"
    )
