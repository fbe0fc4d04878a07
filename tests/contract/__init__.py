"""Behaviour suites that every backend of an interface must pass.

Each suite is written once against the hal interface and subclassed per backend: here for
the simulated backends, in ``hardware-tests/`` for real boards.
"""
