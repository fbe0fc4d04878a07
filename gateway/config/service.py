"""The service part of the config model: call records, the HTTP push of finished calls,
the metrics endpoint, reload confirmation, and the secrets file.

Constants here are read by the loader (`_service.py`) and the JSON Schema export
(`_service_schema.py`), so the two agree on keys and ranges. `schema.py` re-exports the
classes; this module imports nothing from the rest of the config package except `HostPort`'s
module at type-check time.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.config.schema import HostPort

# --- gateway.log / gateway.secrets_file ---------------------------------------------------

LOG_TARGETS: tuple[str, ...] = ("auto", "journal", "stderr")
DEFAULT_LOG_TARGET = "auto"
#: The YAML tag that takes a string from the secrets file: `password: !secret trunk_pw`.
SECRET_TAG = "!secret"
#: Secret names: what may be a key in the secrets file.
SECRET_NAME_PATTERN = r"[A-Za-z0-9_.-]+"

# --- call_records -------------------------------------------------------------------------

CALL_RECORD_KEYS: tuple[str, ...] = ("max_age_days", "max_rows")
MAX_AGE_DAYS_MIN, MAX_AGE_DAYS_MAX, DEFAULT_MAX_AGE_DAYS = 1, 3650, 90
MAX_ROWS_MIN, MAX_ROWS_MAX, DEFAULT_MAX_ROWS = 100, 10_000_000, 100_000

# --- push ---------------------------------------------------------------------------------

PUSH_KEYS: tuple[str, ...] = ("url", "token", "timeout", "max_queue")
PUSH_SCHEMES: tuple[str, ...] = ("http", "https")
PUSH_TIMEOUT_MIN, PUSH_TIMEOUT_MAX, DEFAULT_PUSH_TIMEOUT = 0.5, 120.0, 5.0
PUSH_QUEUE_MIN, PUSH_QUEUE_MAX, DEFAULT_PUSH_QUEUE = 1, 10_000_000, 10_000

# --- metrics ------------------------------------------------------------------------------

METRICS_KEYS: tuple[str, ...] = ("listen",)
EXAMPLE_METRICS_LISTEN = "127.0.0.1:9467"

# --- reload -------------------------------------------------------------------------------

RELOAD_KEYS: tuple[str, ...] = ("confirm_within",)
CONFIRM_WITHIN_MAX, DEFAULT_CONFIRM_WITHIN = 3600.0, 0.0

SERVICE_TOP_KEYS: tuple[str, ...] = ("call_records", "push", "metrics", "reload")


@dataclass(frozen=True)
class CallRecordSettings:
    """Retention of the call records database: whichever bound is reached first."""

    max_age_days: int = DEFAULT_MAX_AGE_DAYS
    max_rows: int = DEFAULT_MAX_ROWS


@dataclass(frozen=True)
class PushSettings:
    """Every finished call POSTed as JSON to `url`; the token never shows in repr()."""

    url: str
    token: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_PUSH_TIMEOUT
    max_queue: int = DEFAULT_PUSH_QUEUE


@dataclass(frozen=True)
class MetricsSettings:
    """The Prometheus text endpoint's listen address (no section: no endpoint)."""

    listen: HostPort


@dataclass(frozen=True)
class ReloadSettings:
    """`confirm_within` > 0: a reload after which no trunk registers within that many
    seconds is rolled back to the previous config."""

    confirm_within: float = DEFAULT_CONFIRM_WITHIN


def service_dict(
    call_records: CallRecordSettings,
    push: PushSettings | None,
    metrics: MetricsSettings | None,
    reload: ReloadSettings,
    *,
    redact: bool,
    redacted: str,
) -> dict[str, Any]:
    """The service sections in the YAML file's shape (token as `redacted` when asked)."""
    push_out: dict[str, Any] | None = None
    if push is not None:
        token = push.token if push.token is None or not redact else redacted
        push_out = {"url": push.url, "token": token, "timeout": push.timeout,
                    "max_queue": push.max_queue}
    return {
        "call_records": {"max_age_days": call_records.max_age_days,
                         "max_rows": call_records.max_rows},
        "push": push_out,
        "metrics": None if metrics is None else {"listen": str(metrics.listen)},
        "reload": {"confirm_within": reload.confirm_within},
    }


#: Secrets this long are also masked inside other strings (shorter ones would mask digits).
SUBSTRING_MIN = 6


def scrub_secrets(value: Any, secrets: Iterable[str], redacted: str) -> Any:
    """`value` (plain data) with every string equal to a secret replaced by `redacted`, and
    every secret of SUBSTRING_MIN characters or more masked inside longer strings too (a URL
    with a token in it); shorter ones only when they are the whole string."""
    known = sorted((s for s in secrets if s), key=len, reverse=True)
    if not known:
        return value

    def scrub(item: Any) -> Any:
        if isinstance(item, dict):
            return {k: scrub(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [scrub(v) for v in item]
        if isinstance(item, str):
            if item in known:
                return redacted
            for secret in known:
                if len(secret) >= SUBSTRING_MIN and secret in item:
                    item = item.replace(secret, redacted)
        return item

    return scrub(value)
