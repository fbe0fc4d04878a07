"""The modem contract on a real Quectel EC25/EG25-G (BRANCHLINE_MODEM_PORT etc., see README)."""

from __future__ import annotations

from modem_rig import HardwareModemContract, skip_unless_port

pytestmark = skip_unless_port(("quectel-ec25", "quectel-eg25-g"))


class TestEc25(HardwareModemContract):
    profile = "quectel-ec25"
    default_audio = "uac"
