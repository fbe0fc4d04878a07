"""SIP transports for the daemon: UDP, TCP and TLS behind one `TransportManager`."""

from gateway.runtime.transports.manager import (
    KEEPALIVE_MODES,
    ListenSettings,
    SipCore,
    TransportManager,
)
from gateway.runtime.transports.stream import StreamConnection
from gateway.runtime.transports.tls import (
    TlsClientSettings,
    TlsServerSettings,
    client_context,
    server_context,
)

__all__ = [
    "KEEPALIVE_MODES",
    "ListenSettings",
    "SipCore",
    "StreamConnection",
    "TlsClientSettings",
    "TlsServerSettings",
    "TransportManager",
    "client_context",
    "server_context",
]
