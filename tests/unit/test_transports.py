"""SIP over TCP and TLS on loopback: framing, reuse, aliasing, SNI, client certificates."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gateway.runtime.transports import (
    ListenSettings,
    TlsClientSettings,
    TlsServerSettings,
    TransportManager,
)
from gateway.sip.target import Outgoing, Target

LOOP = "127.0.0.1"


def _request(n: int, transport: str = "TCP", extra: str = "") -> bytes:
    return (
        f"OPTIONS sip:gw@{LOOP} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {LOOP}:5999;branch=z9hG4bK{n}{extra}\r\n"
        f"Call-ID: call-{n}\r\nCSeq: {n} OPTIONS\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def _response(n: int) -> bytes:
    return f"SIP/2.0 200 OK\r\nCall-ID: call-{n}\r\nContent-Length: 2\r\n\r\nok".encode()


class FakeCore:
    """Records what arrives; answers requests when `answer` is set; queues what to send."""

    def __init__(self, answer: bool = False) -> None:
        self.answer = answer
        self.received: list[tuple[bytes, tuple[str, int], str]] = []
        self.errors: list[tuple[tuple[str, int], str]] = []
        self.out: list[Outgoing] = []
        self.got = asyncio.Event()
        self.failed = asyncio.Event()

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float, *,
                         transport: str = "udp") -> None:
        self.received.append((data, addr, transport))
        if self.answer and data.startswith(b"OPTIONS"):
            n = int(data.split(b"CSeq: ")[1].split(b" ")[0])
            self.out.append(Outgoing(_response(n), addr, transport))
        self.got.set()

    def transport_error(self, addr: tuple[str, int], now: float, *,
                        transport: str = "udp") -> None:
        self.errors.append((addr, transport))
        self.failed.set()

    def messages_out(self) -> list[Outgoing]:
        out, self.out = self.out, []
        return out


async def _wait(event: asyncio.Event, timeout: float = 5.0) -> None:
    await asyncio.wait_for(event.wait(), timeout)
    event.clear()


async def _until(check: Callable[[], bool], event: asyncio.Event) -> None:
    while not check():
        await _wait(event)


def _run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro(), 20))


# -- certificates -----------------------------------------------------------------------


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool,
           sans: list[x509.GeneralName] | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False), critical=True)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue("Test SIP CA", ca_key, "Test SIP CA", ca_key, ca=True)
    _write(d / "ca.pem", ca, None)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue("sip.test", server_key, "Test SIP CA", ca_key, ca=False, sans=[
        x509.DNSName("sip.test"), x509.IPAddress(ipaddress.ip_address(LOOP))])
    _write(d / "server.pem", server, server_key)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue("gateway.test", client_key, "Test SIP CA", ca_key, ca=False,
                    sans=[x509.DNSName("gateway.test")])
    _write(d / "client.pem", client, client_key)
    other_key = ec.generate_private_key(ec.SECP256R1())
    _write(d / "other.pem", _issue("Other CA", other_key, "Other CA", other_key, ca=True), None)
    return Pki(d / "ca.pem", d / "server.pem", d / "server.key", d / "client.pem",
               d / "client.key", d / "other.pem")


async def _pair(server_core: FakeCore, client_core: FakeCore, listen: ListenSettings,
                **kw: Any) -> tuple[TransportManager, TransportManager]:
    loop = asyncio.get_running_loop()
    server = TransportManager(server_core, loop, **kw)
    server.after_input = server.flush
    await server.start(listen)
    client = TransportManager(client_core, loop)
    client.after_input = client.flush
    await client.start(ListenSettings(udp=None))
    return server, client


# -- TCP ---------------------------------------------------------------------------------


def test_tcp_round_trip_reuses_one_connection_both_ways() -> None:
    async def main() -> None:
        s_core, c_core = FakeCore(answer=True), FakeCore()
        server, client = await _pair(s_core, c_core, ListenSettings(udp=None, tcp=(LOOP, 0)))
        dest = (LOOP, server.ports["tcp"])
        client.send(Outgoing(_request(1), dest, "tcp"))
        client.send(Outgoing(_request(2), dest, "tcp"))
        await _until(lambda: len(c_core.received) == 2, c_core.got)
        assert [r[0] for r in c_core.received] == [_response(1), _response(2)]
        assert {r[1] for r in c_core.received} == {dest}
        assert all(r[2] == "tcp" for r in c_core.received)
        assert [r[0] for r in s_core.received] == [_request(1), _request(2)]
        assert server.stats["accepted"] == 1 and client.stats["connects"] == 1
        assert server.connection_count() == 1
        await client.close()
        await server.close()

    _run(main)


def test_tcp_refused_connection_is_a_transport_error() -> None:
    async def main() -> None:
        core = FakeCore()
        mgr = TransportManager(core, asyncio.get_running_loop())
        await mgr.start(ListenSettings(udp=None))
        probe = await asyncio.start_server(lambda r, w: None, LOOP, 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        mgr.send(Outgoing(_request(1), (LOOP, port), "tcp"))
        await _wait(core.failed)
        assert core.errors == [((LOOP, port), "tcp")]
        assert mgr.stats["connect_failures"] == 1 and mgr.connection_count() == 0
        await mgr.close()

    _run(main)


def test_inbound_request_response_goes_back_on_its_connection_and_via_alias() -> None:
    async def main() -> None:
        core = FakeCore()
        mgr = TransportManager(core, asyncio.get_running_loop())
        await mgr.start(ListenSettings(udp=None, tcp=(LOOP, 0)))
        reader, writer = await asyncio.open_connection(LOOP, mgr.ports["tcp"])
        writer.write(_request(7, extra=";alias"))
        await _wait(core.got)
        data, addr, transport = core.received[0]
        assert transport == "tcp" and addr == writer.get_extra_info("sockname")[:2]
        mgr.send(Outgoing(_response(7), addr, "tcp"))  # back on the same flow
        mgr.send(Outgoing(_request(8), (LOOP, 5999), "tcp"))  # to the Via alias
        expected = _response(7) + _request(8)
        got = await asyncio.wait_for(reader.readexactly(len(expected)), 5)
        assert got == expected
        assert mgr.stats["connects"] == 0
        writer.close()
        await mgr.close()

    _run(main)


def test_ping_gets_pong_and_framing_violation_cuts_off() -> None:
    async def main() -> None:
        core = FakeCore()
        mgr = TransportManager(core, asyncio.get_running_loop())
        await mgr.start(ListenSettings(udp=None, tcp=(LOOP, 0)))
        reader, writer = await asyncio.open_connection(LOOP, mgr.ports["tcp"])
        writer.write(b"\r\n\r\n")
        assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
        writer.write(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\n")  # no Content-Length
        assert await asyncio.wait_for(reader.read(100), 5) == b""  # closed by the gateway
        assert mgr.stats["framing_errors"] == 1 and core.received == []
        writer.close()
        await mgr.close()

    _run(main)


def test_crlf_keepalive_pings_an_open_flow() -> None:
    async def main() -> None:
        core = FakeCore()
        mgr = TransportManager(core, asyncio.get_running_loop())
        await mgr.start(ListenSettings(udp=None))
        got_ping = asyncio.Event()
        seen = bytearray()

        async def peer(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            seen.extend(await r.readexactly(len(_request(1)) + 4))
            got_ping.set()

        srv = await asyncio.start_server(peer, LOOP, 0)
        target = Target("tcp", LOOP, srv.sockets[0].getsockname()[1])
        mgr.send(Outgoing(_request(1), target.addr, "tcp"))
        mgr.set_keepalive("trunk", [target], "crlf", 0.05)
        await asyncio.wait_for(got_ping.wait(), 5)
        assert bytes(seen).endswith(b"\r\n\r\n") and bytes(seen).startswith(b"OPTIONS")
        assert mgr.stats["pings_sent"] >= 1
        with pytest.raises(ValueError):
            mgr.set_keepalive("trunk", [target], "stun", 1.0)
        await mgr.close()
        srv.close()

    _run(main)


def test_idle_connections_are_closed() -> None:
    async def main() -> None:
        core = FakeCore()
        mgr = TransportManager(core, asyncio.get_running_loop(), idle_timeout=30.0)
        await mgr.start(ListenSettings(udp=None, tcp=(LOOP, 0)))
        reader, writer = await asyncio.open_connection(LOOP, mgr.ports["tcp"])
        writer.write(_request(1))
        await _wait(core.got)
        loop = asyncio.get_running_loop()
        assert mgr.close_idle(loop.time() + 10) == 0
        assert mgr.close_idle(loop.time() + 31) == 1
        assert await asyncio.wait_for(reader.read(10), 5) == b""
        assert mgr.connection_count() == 0
        writer.close()
        await mgr.close()

    _run(main)


def test_inbound_connections_are_bounded() -> None:
    async def main() -> None:
        core = FakeCore()
        mgr = TransportManager(core, asyncio.get_running_loop(), max_connections=1)
        await mgr.start(ListenSettings(udp=None, tcp=(LOOP, 0)))
        _r1, w1 = await asyncio.open_connection(LOOP, mgr.ports["tcp"])
        w1.write(_request(1))
        await _wait(core.got)
        r2, w2 = await asyncio.open_connection(LOOP, mgr.ports["tcp"])
        assert await asyncio.wait_for(r2.read(10), 5) == b""
        assert mgr.stats["refused"] == 1 and mgr.connection_count() == 1
        w1.close()
        w2.close()
        await mgr.close()

    _run(main)


# -- TLS ---------------------------------------------------------------------------------


def _tls_listen(pki: Pki, *, demand_client: bool = False) -> ListenSettings:
    return ListenSettings(udp=None, tls=(LOOP, 0), tls_server=TlsServerSettings(
        str(pki.server_cert), str(pki.server_key),
        ca_file=str(pki.ca) if demand_client else None, require_client_cert=demand_client))


def test_tls_round_trip_with_sni_and_trunk_ca(pki: Pki) -> None:
    async def main() -> None:
        s_core, c_core = FakeCore(answer=True), FakeCore()
        server, client = await _pair(s_core, c_core, _tls_listen(pki))
        client.set_tls_client(["sip.test"], TlsClientSettings(ca_file=str(pki.ca)))
        dest = (LOOP, server.ports["tls"])
        client.send(Outgoing(_request(1, "TLS"), dest, "tls", "sip.test"))
        await _wait(c_core.got)
        assert c_core.received == [(_response(1), dest, "tls")]
        assert s_core.received[0][0] == _request(1, "TLS") and s_core.received[0][2] == "tls"
        assert c_core.errors == []
        await client.close()
        await server.close()

    _run(main)


def test_tls_wrong_server_name_fails_verification(pki: Pki) -> None:
    async def main() -> None:
        s_core, c_core = FakeCore(answer=True), FakeCore()
        server, client = await _pair(s_core, c_core, _tls_listen(pki))
        client.set_tls_client(["evil.test"], TlsClientSettings(ca_file=str(pki.ca)))
        dest = (LOOP, server.ports["tls"])
        client.send(Outgoing(_request(1, "TLS"), dest, "tls", "evil.test"))
        await _wait(c_core.failed)
        assert c_core.errors == [(dest, "tls")]
        assert client.stats["connect_failures"] == 1
        assert s_core.received == []
        await client.close()
        await server.close()

    _run(main)


def test_tls_untrusted_ca_fails_verification(pki: Pki) -> None:
    async def main() -> None:
        s_core, c_core = FakeCore(answer=True), FakeCore()
        server, client = await _pair(s_core, c_core, _tls_listen(pki))
        client.set_tls_client(["sip.test"], TlsClientSettings(ca_file=str(pki.other_ca)))
        client.send(Outgoing(_request(1, "TLS"), (LOOP, server.ports["tls"]), "tls", "sip.test"))
        await _wait(c_core.failed)
        assert s_core.received == [] and client.stats["connect_failures"] == 1
        await client.close()
        await server.close()

    _run(main)


def test_trunk_server_name_overrides_sni(pki: Pki) -> None:
    async def main() -> None:
        s_core, c_core = FakeCore(answer=True), FakeCore()
        server, client = await _pair(s_core, c_core, _tls_listen(pki))
        # Target carries the domain "carrier.test"; the trunk says the cert is for sip.test.
        client.set_tls_client(["carrier.test"], TlsClientSettings(
            ca_file=str(pki.ca), server_name="sip.test"))
        dest = (LOOP, server.ports["tls"])
        client.send(Outgoing(_request(1, "TLS"), dest, "tls", "carrier.test"))
        await _wait(c_core.got)
        assert c_core.received[0][0] == _response(1)
        await client.close()
        await server.close()

    _run(main)


def test_server_demanding_client_certificate(pki: Pki) -> None:
    async def main() -> None:
        s_core, c_core = FakeCore(answer=True), FakeCore()
        server, client = await _pair(s_core, c_core, _tls_listen(pki, demand_client=True))
        dest = (LOOP, server.ports["tls"])
        client.set_tls_client(["sip.test"], TlsClientSettings(ca_file=str(pki.ca)))
        client.send(Outgoing(_request(1, "TLS"), dest, "tls", "sip.test"))
        await _wait(c_core.failed)  # no certificate: the server refuses the flow
        assert s_core.received == []

        with_cert = FakeCore()
        client2 = TransportManager(with_cert, asyncio.get_running_loop())
        client2.after_input = client2.flush
        await client2.start(ListenSettings(udp=None))
        client2.set_tls_client(["sip.test"], TlsClientSettings(
            ca_file=str(pki.ca), cert_file=str(pki.client_cert), key_file=str(pki.client_key)))
        client2.send(Outgoing(_request(2, "TLS"), dest, "tls", "sip.test"))
        await _wait(with_cert.got)
        assert with_cert.received[0][0] == _response(2)
        assert [r[0] for r in s_core.received] == [_request(2, "TLS")]
        for mgr in (client, client2, server):
            await mgr.close()

    _run(main)


def test_tls_listener_without_certificate_is_refused() -> None:
    async def main() -> None:
        mgr = TransportManager(FakeCore(), asyncio.get_running_loop())
        with pytest.raises(ValueError):
            await mgr.start(ListenSettings(udp=None, tls=(LOOP, 0)))
        await mgr.close()

    _run(main)


# -- UDP ---------------------------------------------------------------------------------


def test_udp_send_and_receive() -> None:
    async def main() -> None:
        a_core, b_core = FakeCore(answer=True), FakeCore()
        loop = asyncio.get_running_loop()
        a = TransportManager(a_core, loop)
        a.after_input = a.flush
        b = TransportManager(b_core, loop)
        await a.start(ListenSettings(udp=(LOOP, 0)))
        await b.start(ListenSettings(udp=(LOOP, 0)))
        b_core.out.append(Outgoing(_request(3, "UDP"), (LOOP, a.ports["udp"]), "udp"))
        b.flush()
        await _wait(b_core.got)
        assert b_core.received == [(_response(3), (LOOP, a.ports["udp"]), "udp")]
        assert a_core.received[0][1] == (LOOP, b.ports["udp"])
        await a.close()
        await b.close()

    _run(main)


def test_real_user_agent_answers_options_over_tcp() -> None:
    from gateway.sip.ua import UserAgent

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ua = UserAgent(local_host=LOOP, local_port=0, user_agent="t", instance_id="x")
        mgr = TransportManager(ua, loop)
        mgr.after_input = mgr.flush
        await mgr.start(ListenSettings(udp=None, tcp=(LOOP, 0)))
        reader, writer = await asyncio.open_connection(LOOP, mgr.ports["tcp"])
        port = writer.get_extra_info("sockname")[1]
        writer.write((
            f"OPTIONS sip:gw@{LOOP} SIP/2.0\r\nVia: SIP/2.0/TCP {LOOP}:{port};branch=z9hG4bKq1\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@{LOOP}>;tag=1\r\nTo: <sip:gw@{LOOP}>\r\n"
            "Call-ID: real-ua\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"SIP/2.0 200 ")
        assert b"Call-ID: real-ua" in head and b"SIP/2.0/TCP" in head
        writer.close()
        await mgr.close()

    _run(main)
