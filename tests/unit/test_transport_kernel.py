"""Transports and the kernel: receive buffer, drop counter, bind errors, quiet closes."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from pathlib import Path

import pytest

from gateway.runtime.transports import ListenSettings, TransportManager
from gateway.runtime.transports.kernel import (
    SO_RCVBUFFORCE,
    ListenError,
    read_udp_table,
    set_receive_buffer,
    udp_socket_counters,
)
from gateway.sip.target import Outgoing


class Core:
    def __init__(self) -> None:
        self.received: list[tuple[bytes, tuple[str, int], str]] = []
        self.errors: list[tuple[tuple[str, int], str]] = []
        self.out: list[Outgoing] = []

    def receive_datagram(self, data: bytes, addr: tuple[str, int], now: float, *,
                         transport: str = "udp") -> None:
        self.received.append((data, addr, transport))

    def transport_error(self, addr: tuple[str, int], now: float, *,
                        transport: str = "udp") -> None:
        self.errors.append((addr, transport))

    def messages_out(self) -> list[Outgoing]:
        out, self.out = self.out, []
        return out


TABLE = """\
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  726: 0100007F:7530 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 23672 2 0000000055b6728a 0
 1726: 0100007F:13C4 00000000:0000 07 00000000:00000A40 00:00000000 00000000     0        0 99999 2 00000000421771bd 334
"""


def test_drop_counter_is_read_for_our_socket_only(tmp_path: Path) -> None:
    table = tmp_path / "udp"
    table.write_text(TABLE)
    assert read_udp_table(str(table), 99999) == {"kernel_drops": 334, "udp_rx_queue": 0xA40}
    assert read_udp_table(str(table), 23672) == {"kernel_drops": 0, "udp_rx_queue": 0}
    assert read_udp_table(str(table), 1) == {}
    assert read_udp_table(str(tmp_path / "missing"), 1) == {}


def test_drop_counter_of_a_real_socket() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        counters = udp_socket_counters(sock)
        assert counters == {"kernel_drops": 0, "udp_rx_queue": 0}


class FakeSock:
    """Refuses SO_RCVBUFFORCE like an unprivileged process, caps like net.core.rmem_max."""

    def __init__(self, rmem_max: int) -> None:
        self.rmem_max = rmem_max
        self.value = 212992

    def setsockopt(self, level: int, name: int, value: int) -> None:
        if name == SO_RCVBUFFORCE:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        self.value = 2 * min(value, self.rmem_max)

    def getsockopt(self, level: int, name: int) -> int:
        return self.value


def test_receive_buffer_falls_back_and_reports_the_cap(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        assert set_receive_buffer(FakeSock(rmem_max=4 << 20), 1 << 20) == 2 << 20
        assert "SIP UDP receive buffer: 2097152 bytes" in caplog.text
        caplog.clear()
        assert set_receive_buffer(FakeSock(rmem_max=212992), 1 << 20) == 425984
    assert "net.core.rmem_max" in caplog.text and "sip.udp_receive_buffer" in caplog.text


def test_listen_error_names_address_and_key() -> None:
    exc = ListenError("udp", ("0.0.0.0", 5060), "sip.listen",
                      OSError(errno.EADDRINUSE, "Address already in use"))
    assert str(exc).startswith("cannot listen on udp 0.0.0.0:5060 (sip.listen): "
                               "address already in use")
    assert exc.errno == errno.EADDRINUSE
    v6 = ListenError("tcp", ("::1", 5060), "sip.tcp_listen", OSError(errno.EACCES, "x"))
    assert "tcp [::1]:5060 (sip.tcp_listen): permission denied" in str(v6)


def test_busy_port_raises_listen_error_and_closes_what_opened() -> None:
    async def run() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            port = squatter.getsockname()[1]
            manager = TransportManager(Core(), asyncio.get_running_loop())
            with pytest.raises(ListenError, match=rf"tcp 127.0.0.1:{port} \(sip.tcp_listen\)"):
                await manager.start(ListenSettings(udp=("127.0.0.1", 0),
                                                   tcp=("127.0.0.1", port)))
            assert manager._udp is not None and manager._udp.transport is not None
            assert manager._udp.transport.is_closing()

    asyncio.run(run())


def test_no_dial_back_for_replies_to_a_client_that_closed() -> None:
    async def run() -> None:
        core = Core()
        loop = asyncio.get_running_loop()
        manager = TransportManager(core, loop)
        await manager.start(ListenSettings(udp=None, tcp=("127.0.0.1", 0)))
        reader, writer = await asyncio.open_connection("127.0.0.1", manager.ports["tcp"])
        writer.write(b"OPTIONS sip:x SIP/2.0\r\nCall-ID: c\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        for _ in range(100):
            if core.received:
                break
            await asyncio.sleep(0.01)
        peer = core.received[0][1]
        writer.close()
        for _ in range(100):
            if manager.connection_count() == 0:
                break
            await asyncio.sleep(0.01)
        core.out.append(Outgoing(b"SIP/2.0 200 OK\r\nCall-ID: c\r\n\r\n", peer, "tcp"))
        manager.flush()
        await asyncio.sleep(0.05)
        assert manager.stats["connects"] == 0
        assert manager.stats["replies_after_close"] == 1
        # a request to that address still connects (it may be a listening port)
        core.out.append(Outgoing(b"OPTIONS sip:x SIP/2.0\r\n\r\n", peer, "tcp"))
        manager.flush()
        await asyncio.sleep(0.05)
        assert manager.stats["connects"] == 1
        await manager.close()

    asyncio.run(run())


def test_receive_buffer_is_set_on_the_udp_socket() -> None:
    async def run() -> None:
        manager = TransportManager(Core(), asyncio.get_running_loop())
        await manager.start(ListenSettings(udp=("127.0.0.1", 0), udp_receive_buffer=65536))
        stats = manager.kernel_stats()
        assert stats["udp_receive_buffer"] >= 65536
        assert stats["kernel_drops"] == 0
        await manager.close()

    asyncio.run(run())


def test_config_keys(tmp_path: Path) -> None:
    from gateway.config import ConfigError, load_config
    from gateway.config.jsonschema import export_json_schema

    good = tmp_path / "good.yaml"
    good.write_text("sip:\n  listen: 127.0.0.1:5060\n  trace: on\n  udp_receive_buffer: 4194304\n")
    config = load_config(str(good))
    assert config.sip.trace is True and config.sip.udp_receive_buffer == 4194304
    assert load_config(str(good)).to_dict()["sip"]["trace"] is True
    default = tmp_path / "default.yaml"
    default.write_text("sip:\n  listen: 127.0.0.1:5060\n")
    config = load_config(str(default))
    assert config.sip.trace is False and config.sip.udp_receive_buffer == 1024 * 1024
    bad = tmp_path / "bad.yaml"
    bad.write_text("sip:\n  listen: 127.0.0.1:5060\n  udp_receive_buffer: 10\n")
    with pytest.raises(ConfigError, match="udp_receive_buffer"):
        load_config(str(bad))
    props = export_json_schema()["properties"]["sip"]["properties"]
    assert props["trace"]["type"] == "boolean"
    assert props["udp_receive_buffer"]["default"] == 1024 * 1024


def test_status_shows_kernel_drops_and_trace() -> None:
    from gateway import cli

    text = cli.format_status({"transport": {"sent": 3, "udp_receive_buffer": 2097152,
                                            "kernel_drops": 334, "udp_rx_queue": 0},
                              "sip_trace": {"log": True, "watchers": 1}})
    assert text.splitlines()[-2:] == [
        "SIP transport",
        "  UDP receive buffer 2097152 bytes, kernel drops 334, queued 0 bytes; "
        "trace in log on, 1 watcher(s)",
    ]
    assert "SIP transport" not in cli.format_status({"transport": {"sent": 3}})
