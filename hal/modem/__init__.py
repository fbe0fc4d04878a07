"""Modem drivers: :mod:`hal.modem.serial_port` runs the pure AT engine over a serial port."""
