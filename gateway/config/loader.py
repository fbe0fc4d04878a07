"""Build a `Config` from YAML, reporting every problem with its line and column.

The loader walks the node tree from `yaml.compose` (SafeLoader) rather than plain Python
data, so each value still knows where it was written. It collects all issues before
raising, so an installer fixes a file in one pass instead of one error per restart.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import replace
from importlib import resources

import yaml

from gateway.config._reader import RouteProbe
from gateway.config._sections import _Reader
from gateway.config.issues import ConfigError, ConfigIssue
from gateway.config.schema import Config
from gateway.config.secrets import mask, resolve_secrets

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "RouteProbe",
    "default_route_address",
    "load_config",
    "load_config_text",
    "load_default",
]

def default_route_address(toward: str | None = None) -> str | None:
    """The local IPv4 address the kernel would use toward `toward` (or the default route).

    `connect()` on a UDP socket only selects a route; no packet is sent. Only IP literals are
    used as targets, so loading a config never triggers a DNS lookup.
    """
    target = "192.0.2.1"  # TEST-NET-1: any address that follows the default route
    if toward is not None:
        try:
            if ipaddress.ip_address(toward).version == 4:
                target = toward
        except ValueError:
            pass
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((target, 9))
            address = str(sock.getsockname()[0])
    except OSError:
        return None
    return None if address in ("0.0.0.0", "") else address


def load_config(path: str | os.PathLike[str], *, route_probe: RouteProbe | None = None) -> Config:
    """Load and validate a config file; raises ConfigError (also for an unreadable file)."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(source, [ConfigIssue(0, 0, "", f"cannot read file: {reason}")]) from exc
    return load_config_text(text, source, route_probe=route_probe)


def load_config_text(
    text: str, source_name: str = "<string>", *, route_probe: RouteProbe | None = None
) -> Config:
    """Validate YAML text; `source_name` is what error lines start with."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (0, 0)
        message = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ConfigError(
            source_name, [ConfigIssue(line, column, "", f"YAML syntax error: {message}")]
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            source_name, [ConfigIssue(0, 0, "", f"YAML syntax error: {exc}")]
        ) from exc
    secrets, secret_issues, unresolved = resolve_secrets(root)
    reader = _Reader(route_probe or default_route_address)
    config = reader.config(root, source_name)
    if secret_issues or reader.issues or config is None:
        reader.issues = [i for i in reader.issues if (i.line, i.column) not in unresolved]
        reader.issues.extend(secret_issues)
        issues = [
            replace(i, message=mask(i.message, secrets), expected=mask(i.expected, secrets))
            for i in reader.sorted_issues()
        ]
        raise ConfigError(source_name, issues)
    return replace(config, secret_values=secrets) if secrets else config


def load_default() -> Config:
    """The embedded default: two simulated phones (101, 102), no trunk, loopback only."""
    text = resources.files("gateway.config").joinpath("default.yaml").read_text("utf-8")
    return load_config_text(text, "<default>")
