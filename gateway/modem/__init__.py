"""GSM/LTE modules: pure AT protocol code (no I/O, no clock).

``at`` turns bytes from a modem's AT port into command results and unsolicited result
codes; the asyncio adapter that drives it over a serial port is :mod:`hal.modem.serial_port`.
"""
