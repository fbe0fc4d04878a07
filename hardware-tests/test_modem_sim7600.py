"""The modem contract on a real SIMCom SIM7600 (BRANCHLINE_MODEM_PORT etc., see README)."""

from __future__ import annotations

from modem_rig import HardwareModemContract, skip_unless_port

pytestmark = skip_unless_port(("simcom-sim7600",))


class TestSim7600(HardwareModemContract):
    profile = "simcom-sim7600"
    default_audio = "serial-pcm"
