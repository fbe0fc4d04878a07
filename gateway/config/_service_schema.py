"""JSON Schema of the service keys (see jsonschema.py for the rest): `gateway.secrets_file`,
`gateway.log`, `call_records`, `push`, `metrics` and `reload`.

Built from the constants in `service.py`, like the loader. A `!secret <name>` value is a
YAML tag the schema cannot see: editors show it as the plain string it stands for.
"""

from __future__ import annotations

from typing import Any

from gateway.config import service as sv
from gateway.config._modems_schema import _nullable, _obj, _range, _string

_IP_PORT = r"^(\[[0-9A-Fa-f:.]+\]|[0-9.]+):[0-9]{1,5}$"


def gateway_service_properties() -> dict[str, Any]:
    """`gateway.secrets_file` and `gateway.log`."""
    return {
        "secrets_file": _nullable(_string(
            "YAML mapping of the values written `!secret <name>`; mode 0600, owned by the "
            "service user.", pattern="^/")),
        "log": {"enum": list(sv.LOG_TARGETS), "default": sv.DEFAULT_LOG_TARGET,
                "description": "auto: journald when started by systemd, else stderr."},
    }


def service_schemas() -> dict[str, Any]:
    """The top-level `call_records`, `push`, `metrics` and `reload` sections."""
    call_records = _obj({
        "max_age_days": _range("integer", sv.MAX_AGE_DAYS_MIN, sv.MAX_AGE_DAYS_MAX,
                               "Records older than this many days are deleted.",
                               sv.DEFAULT_MAX_AGE_DAYS),
        "max_rows": _range("integer", sv.MAX_ROWS_MIN, sv.MAX_ROWS_MAX,
                           "At most this many records are kept (oldest deleted first).",
                           sv.DEFAULT_MAX_ROWS),
    }, sv.CALL_RECORD_KEYS, description="Retention of the call records database.")
    push = _obj({
        "url": _string("Where each finished call is POSTed as JSON.",
                       pattern="^https?://", format="uri"),
        "token": _nullable(_string("Bearer token sent with each POST (may be a !secret).")),
        "timeout": _range("number", sv.PUSH_TIMEOUT_MIN, sv.PUSH_TIMEOUT_MAX,
                          "Seconds before a POST counts as failed.", sv.DEFAULT_PUSH_TIMEOUT),
        "max_queue": _range("integer", sv.PUSH_QUEUE_MIN, sv.PUSH_QUEUE_MAX,
                            "Records waiting beyond this are dropped, oldest first.",
                            sv.DEFAULT_PUSH_QUEUE),
    }, sv.PUSH_KEYS, required=("url",), description="HTTP push of every finished call.")
    metrics = _obj({
        "listen": _nullable(_string("Prometheus endpoint as IP:port; none when unset.",
                                    pattern=_IP_PORT, examples=[sv.EXAMPLE_METRICS_LISTEN])),
    }, sv.METRICS_KEYS, description="Prometheus metrics endpoint.")
    reload = _obj({
        "confirm_within": _range("number", 0.0, sv.CONFIRM_WITHIN_MAX,
                                 "Seconds; 0 = off. No trunk registered within it after a "
                                 "reload: the previous config comes back.",
                                 sv.DEFAULT_CONFIRM_WITHIN),
    }, sv.RELOAD_KEYS, description="Reload confirmation.")
    return {
        "call_records": _nullable(call_records),
        "push": _nullable(push),
        "metrics": _nullable(metrics),
        "reload": _nullable(reload),
    }
