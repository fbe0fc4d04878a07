"""What each emulated module says about itself: the identity lines of real firmware.

Kept as data so the AT side (:mod:`hal.sim.modem_at`) stays one table of commands;
a dialect only changes wording and which vendor commands exist.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dialect:
    """The identity and vendor extras of one module family."""

    name: str
    ati: tuple[str, ...]
    cgmi: str
    cgmm: str
    cgmr: str
    gmr: str
    ccid_prefix: str
    """How AT+CCID prefixes the ICCID ("" for a bare number)."""
    vendor: frozenset[str]
    """Vendor commands this module answers (without "AT")."""
    has_lte: bool
    pcm: str | None
    """The vendor command that routes voice to the second (PCM) port, if any."""
    act: int
    """Radio technology reported in +COPS/+CREG (7 LTE, 0 GSM)."""


DIALECTS: dict[str, Dialect] = {
    "ec25": Dialect(
        name="ec25",
        ati=("Quectel", "EC25", "Revision: EC25EFAR06A03M4G"),
        cgmi="Quectel",
        cgmm="EC25",
        cgmr="EC25EFAR06A03M4G",
        gmr="EC25EFAR06A03M4G",
        ccid_prefix="+CCID: ",
        vendor=frozenset({"+QCSQ", "+QCCID", "+QPINC", "+QPCMV", "+QINISTAT", "+QNWINFO",
                          "+QTONEDET"}),
        has_lte=True,
        pcm="+QPCMV",
        act=7,
    ),
    "sim7600": Dialect(
        name="sim7600",
        ati=(
            "Manufacturer: SIMCOM INCORPORATED",
            "Model: SIMCOM_SIM7600E-H",
            "Revision: SIM7600M22_V2.0",
            "IMEI: {imei}",
            "+GCAP: +CGSM",
        ),
        cgmi="SIMCOM INCORPORATED",
        cgmm="SIMCOM_SIM7600E-H",
        cgmr="+CGMR: LE20B04SIM7600M22",
        gmr="+GMR: LE20B04SIM7600M22",
        ccid_prefix="+ICCID: ",
        vendor=frozenset({"+CPSI", "+CICCID", "+SPIC", "+CPCMREG", "+CNSMOD"}),
        has_lte=True,
        pcm="+CPCMREG",
        act=7,
    ),
    "sim800": Dialect(
        name="sim800",
        ati=("SIM800 R14.18",),
        cgmi="SIMCOM_Ltd",
        cgmm="SIMCOM_SIM800L",
        cgmr="Revision:1418B04SIM800L24",
        gmr="Revision:1418B04SIM800L24",
        ccid_prefix="",
        vendor=frozenset({"+SPIC", "+DDET"}),
        has_lte=False,
        pcm=None,
        act=0,
    ),
}


def get_dialect(name: str) -> Dialect:
    """The dialect called `name`; a clear error for anything else."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise ValueError(
            f"unknown modem dialect {name!r} (expected one of {', '.join(DIALECTS)})"
        ) from None
