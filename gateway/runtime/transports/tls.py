"""TLS contexts for SIP over TLS: verification on by default, TLS 1.2 or newer.

A trunk brings its own CA file (many carriers use a private CA), and a client
certificate when the carrier authenticates the gateway by certificate. The listening side
presents the gateway's certificate and may demand one from its clients.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

from gateway.config.schema import TrunkTls

TlsClientSettings = TrunkTls
"""How the gateway checks a trunk: CA file (None = system store), optional client cert.

The trunk's `tls:` section of the config is used as it is.
"""


@dataclass(frozen=True)
class TlsServerSettings:
    """The gateway's own certificate for inbound TLS; `ca_file` checks client certificates."""

    cert_file: str
    key_file: str
    ca_file: str | None = None
    require_client_cert: bool = False


def client_context(settings: TlsClientSettings) -> ssl.SSLContext:
    """A client context: hostname (SNI) check and chain check unless `verify` is off."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=settings.ca_file)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not settings.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if settings.cert_file:
        ctx.load_cert_chain(settings.cert_file, settings.key_file)
    return ctx


def server_context(settings: TlsServerSettings) -> ssl.SSLContext:
    """A server context; with a CA file, client certificates are checked (or demanded)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.cert_file, settings.key_file)
    if settings.ca_file:
        ctx.load_verify_locations(settings.ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED if settings.require_client_cert else ssl.CERT_OPTIONAL
    elif settings.require_client_cert:
        raise ValueError("demanding client certificates needs a CA file to check them")
    return ctx
