"""What a modem driver knows about its module, SIM and network, as shown by `branchline status`.

Pure: the driver feeds it command replies and URCs; `as_dict()` is the status JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.modem.fields import ResponseError
from gateway.modem.responses import (
    Registration,
    Signal,
    parse_cops,
    parse_cpsi,
    parse_csq,
    parse_qcsq,
    parse_registration,
)

__all__ = ["ModemState", "REGISTRATION_URCS"]

REGISTRATION_URCS = ("+CREG", "+CGREG", "+CEREG")
"""URCs that say the registration changed: the driver re-polls the network on them."""

_SIGNAL_PARSERS = {"+QCSQ": parse_qcsq, "+CPSI": parse_cpsi, "+CSQ": parse_csq}

_REG_NAMES = {
    0: "not-searching",
    1: "home",
    2: "searching",
    3: "denied",
    4: "unknown",
    5: "roaming",
    6: "home-sms-only",
    7: "roaming-sms-only",
    8: "emergency-only",
    9: "home",
    10: "roaming",
}


@dataclass
class ModemState:
    """Everything status shows for one modem; None where not (yet) known."""

    name: str
    profile: str
    state: str = "starting"
    device: str | None = None
    imei: str | None = None
    manufacturer: str | None = None
    model: str | None = None
    revision: str | None = None
    iccid: str | None = None
    sim_state: str | None = None
    sim_detail: str | None = None
    registrations: dict[str, Registration] = field(default_factory=dict)
    """By URC/command name (+CREG, +CEREG ...): the circuit and packet domains differ."""
    operator: str | None = None
    operator_technology: str | None = None
    signal: Signal | None = None
    last_error: str | None = None
    reattached: int = 0
    audio: str | None = None
    fallback_technology: str | None = None
    """Shown when nothing names the radio: "GSM" for a 2G-only module (SIM800), whose +CREG
    and +COPS carry no access technology."""

    # -- updates ------------------------------------------------------------------------

    def registration_line(self, line: str, *, solicited: bool | None) -> bool:
        """Take a +CREG/+CGREG/+CEREG line; False if it did not parse."""
        name = line.split(":", 1)[0].strip().upper()
        if name not in REGISTRATION_URCS:
            return False
        try:
            self.registrations[name] = parse_registration(line, solicited=solicited)
        except (ResponseError, ValueError):
            return False
        return True

    def operator_line(self, line: str) -> bool:
        try:
            op = parse_cops(line)
        except (ResponseError, ValueError):
            return False
        self.operator = op.name
        self.operator_technology = op.technology
        return True

    def signal_line(self, line: str) -> bool:
        name = line.split(":", 1)[0].strip().upper()
        parse = _SIGNAL_PARSERS.get(name)
        if parse is None:
            return False
        try:
            self.signal = parse(line)
        except (ResponseError, ValueError):
            return False
        return True

    def forget_network(self) -> None:
        """The modem is gone: what it said about the network no longer holds."""
        self.registrations.clear()
        self.operator = self.operator_technology = None
        self.signal = None

    # -- views --------------------------------------------------------------------------

    @property
    def registration(self) -> Registration | None:
        """The best registration of any domain (LTE's +CEREG before +CGREG before +CREG)."""
        regs = [self.registrations.get(n) for n in ("+CEREG", "+CGREG", "+CREG")]
        known = [r for r in regs if r is not None]
        for r in known:
            if r.stat.registered:
                return r
        return known[-1] if known else None

    @property
    def registered(self) -> bool:
        reg = self.registration
        return reg is not None and reg.stat.registered

    @property
    def technology(self) -> str | None:
        reg = self.registration
        if reg is not None and reg.stat.registered and reg.technology not in (None, "unknown"):
            return reg.technology
        if self.operator_technology not in (None, "unknown"):
            return self.operator_technology
        if self.signal is not None and self.signal.technology is not None:
            return self.signal.technology
        return self.fallback_technology

    def as_dict(self) -> dict[str, Any]:
        reg = self.registration
        sig = self.signal
        return {
            "name": self.name,
            "profile": self.profile,
            "state": self.state,
            "device": self.device,
            "imei": self.imei,
            "manufacturer": self.manufacturer,
            "model": self.model,
            "revision": self.revision,
            "audio": self.audio,
            "sim": {"state": self.sim_state, "detail": self.sim_detail, "iccid": self.iccid},
            "network": {
                "registration": None if reg is None else _REG_NAMES.get(reg.stat.value),
                "registered": self.registered,
                "operator": self.operator if self.registered else None,
                "technology": self.technology if self.registered else None,
                "lac": None if reg is None else reg.lac,
                "cell": None if reg is None else reg.ci,
            },
            "signal": {
                "rssi_dbm": None if sig is None else sig.rssi_dbm,
                "rsrp_dbm": None if sig is None else sig.rsrp_dbm,
                "rsrq_db": None if sig is None else sig.rsrq_db,
                "sinr_db": None if sig is None else sig.sinr_db,
                "ber": None if sig is None else sig.ber,
            },
            "reattached": self.reattached,
            "last_error": self.last_error,
        }
