"""Emergency numbers per country, as data, and the default targets for emergency calls.

An emergency call must never depend on a dial-plan route, a toll-fraud rule or a healthy
trunk, so the gateway recognises the numbers itself. The numbers below are the ones the
country's numbering plan reserves for emergency services (national numbering plans as
published under ITU-T E.129 and notified to the ITU Operational Bulletin); each entry names
the national rule or plan it comes from. Only numbers that reach a public emergency service are listed, not help
lines. `emergency.numbers` in the config replaces a country's list when the branch needs
something else (an internal security desk, a PBX prefix such as 9-911).

Country codes are spelled as `gateway.country` spells them ("UK", also "GB"). A country not
in the table gets 112, the number the GSM standard (3GPP TS 22.101) makes every mobile
network route to emergency services.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

__all__ = [
    "DEFAULT_NUMBERS",
    "EMERGENCY_PLANS",
    "CountryEmergency",
    "default_targets",
    "emergency_numbers",
]

#: The fallback for a country not in the table: 112 (3GPP TS 22.101 section 10: every GSM/UMTS/
#: LTE network routes it to emergency services; also the single European emergency number).
DEFAULT_NUMBERS: Final[tuple[str, ...]] = ("112",)


@dataclass(frozen=True)
class CountryEmergency:
    """One country's emergency numbers (first = the main one) and where they come from."""

    country: str
    numbers: tuple[str, ...]
    source: str


_PLANS: tuple[CountryEmergency, ...] = (
    CountryEmergency(
        "US", ("911",),
        "47 CFR Part 9 (FCC 911 rules); North American Numbering Plan N11 code 911",
    ),
    CountryEmergency(
        "UK", ("999", "112"),
        "Ofcom General Conditions of Entitlement (access to emergency organisations): 999 and 112",
    ),
    CountryEmergency(
        "DE", ("112", "110"),
        "Telekommunikationsgesetz (TKG) section 164 and the Notrufverordnung: 112 fire and "
        "rescue, 110 police",
    ),
    CountryEmergency(
        "FR", ("112", "15", "17", "18", "114"),
        "ARCEP national numbering plan, numeros d'urgence: 15 SAMU (medical), 17 police/"
        "gendarmerie, 18 sapeurs-pompiers, 114 for deaf and hard-of-hearing callers, 112",
    ),
    CountryEmergency(
        "NL", ("112",),
        "Telecommunicatiewet and the Nummerplan (ACM): 112 is the single emergency number",
    ),
    CountryEmergency(
        "IT", ("112", "113", "115", "118", "1530"),
        "Piano nazionale di numerazione (AGCOM): 112 NUE, 113 police, 115 fire brigade, "
        "118 medical emergency, 1530 coast guard (sea rescue)",
    ),
    CountryEmergency(
        "ES", ("112", "091", "092", "062", "061", "080", "085", "088"),
        "Plan nacional de numeracion telefonica (Real Decreto 2296/2004) short numbers: 112, "
        "091 Policia Nacional, 092 local "
        "police, 062 Guardia Civil, 061 medical emergency, 080/085 fire brigades, 088 "
        "regional police",
    ),
    CountryEmergency(
        "AE", ("999", "998", "997", "112"),
        "TDRA (Telecommunications and Digital Government Regulatory Authority) emergency "
        "numbers: 999 police, 998 ambulance, 997 civil defence (fire); 112 from mobiles",
    ),
    CountryEmergency(
        "SA", ("911", "999", "998", "997", "112"),
        "National Center for Security Operations: 911 unified emergency number; 999 police, "
        "998 civil defence, 997 Saudi Red Crescent ambulance; 112 from mobiles",
    ),
    CountryEmergency(
        "IN", ("112", "100", "101", "102", "108"),
        "DoT National Numbering Plan 2003 and the Emergency Response Support System (TRAI, "
        "2015): 112 single emergency number, 100 police, 101 fire, 102 and 108 ambulance",
    ),
    CountryEmergency(
        "AU", ("000", "112", "106"),
        "Telecommunications (Emergency Call Service) Determination 2019 (ACMA): 000, 112, and "
        "106 for text-phone (TTY) callers",
    ),
)

#: Country code -> its emergency plan.
EMERGENCY_PLANS: Final[Mapping[str, CountryEmergency]] = MappingProxyType(
    {plan.country: plan for plan in _PLANS}
)
#: Other spellings of the same countries, as gateway.dsp.tones accepts them.
_ALIASES: Final[Mapping[str, str]] = MappingProxyType({"GB": "UK", "USA": "US"})


def emergency_numbers(country: str) -> tuple[str, ...]:
    """The default emergency numbers for `country` (case-insensitive), else `DEFAULT_NUMBERS`."""
    key = country.strip().upper()
    plan = EMERGENCY_PLANS.get(_ALIASES.get(key, key))
    return plan.numbers if plan is not None else DEFAULT_NUMBERS


def default_targets(
    trunks: Iterable[str], gsm_groups: Iterable[str], fxo_lines: Iterable[str] = ()
) -> tuple[str, ...]:
    """Every way out of the box, in the order an emergency call should try them.

    Trunks first (in configured order: the PSAP routing of the operator is the best), then
    GSM groups (3GPP guarantees 112 even without a usable SIM), then FXO lines.
    """
    return (
        *(f"trunk:{name}" for name in trunks),
        *(f"gsm:{name}" for name in gsm_groups),
        *(f"fxo:{name}" for name in fxo_lines),
    )
