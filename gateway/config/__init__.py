"""Configuration: the YAML model, its loader (errors with line and column) and JSON Schema."""

from gateway.config.loader import (
    ConfigError,
    ConfigIssue,
    default_route_address,
    load_config,
    load_config_text,
    load_default,
)
from gateway.config.schema import (
    Config,
    DialPlan,
    EmergencySettings,
    GatewaySettings,
    HealthSettings,
    HostPort,
    LineConfig,
    LineTrunk,
    PhoneConfig,
    PortRange,
    RegistrarSettings,
    Route,
    SipSettings,
    TrunkConfig,
)

__all__ = [
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DialPlan",
    "EmergencySettings",
    "GatewaySettings",
    "HealthSettings",
    "HostPort",
    "LineConfig",
    "LineTrunk",
    "PhoneConfig",
    "PortRange",
    "RegistrarSettings",
    "Route",
    "SipSettings",
    "TrunkConfig",
    "default_route_address",
    "load_config",
    "load_config_text",
    "load_default",
]
