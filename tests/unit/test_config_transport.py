"""Config for transports: TCP/TLS trunks and listeners, TLS files, SRTP, keep-alive, DNS."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import Config, ConfigError, ConfigIssue, load_config_text
from gateway.config.jsonschema import export_json_schema


def load(text: str) -> Config:
    return load_config_text(textwrap.dedent(text), "t.yaml", route_probe=lambda toward: None)


def issues(text: str) -> list[ConfigIssue]:
    with pytest.raises(ConfigError) as err:
        load(text)
    return err.value.errors


def only(text: str) -> ConfigIssue:
    found = issues(text)
    assert len(found) == 1, found
    return found[0]


def pos(text: str, line: int, token: str) -> tuple[int, int]:
    return line, textwrap.dedent(text).splitlines()[line - 1].index(token) + 1


@pytest.fixture
def pem(tmp_path: Path) -> dict[str, str]:
    files = {}
    for name in ("ca", "cert", "key", "server", "server_key"):
        path = tmp_path / f"{name}.pem"
        path.write_text("-----BEGIN PLACEHOLDER-----\n")
        files[name] = str(path)
    return files


def test_defaults_keep_udp_without_tls_or_srtp() -> None:
    trunk = load("trunks:\n  - {name: t, registrar: 192.0.2.1}\n").trunks[0]
    assert (trunk.transport, trunk.srtp, trunk.keepalive, trunk.failover_timeout) == (
        "udp", "off", "options", 1.5)
    assert trunk.tls.verify and trunk.tls.ca_file is None
    cfg = load("{}")
    assert cfg.sip.tcp_listen is None and cfg.sip.tls_listen is None
    assert cfg.sip.tls is None and cfg.sip.dns_servers == ()


def test_domain_without_port_is_an_rfc3263_lookup() -> None:
    cfg = load("""\
        trunks:
          - {name: a, registrar: carrier.test}
          - {name: b, registrar: carrier.test:5080}
          - {name: c, registrar: carrier.test, transport: tls}
        """)
    a, b, c = cfg.trunks
    assert a.registrar.lookup_port is None and a.registrar.port == 5060
    assert b.registrar.lookup_port == 5080
    assert c.registrar.lookup_port is None and c.registrar.port == 5061
    assert c.proxy.port == 5061 and c.domain == "carrier.test"
    assert str(a.registrar) == "carrier.test" and str(b.registrar) == "carrier.test:5080"


def test_tls_trunk_with_files(pem: dict[str, str]) -> None:
    trunk = load(f"""\
        trunks:
          - name: secure
            registrar: carrier.test
            transport: tls
            srtp: require
            keepalive: crlf
            failover_timeout: 0.8
            tls:
              ca_file: {pem["ca"]}
              cert_file: {pem["cert"]}
              key_file: {pem["key"]}
              server_name: sip.carrier.test
        """).trunks[0]
    assert trunk.transport == "tls" and trunk.srtp == "require" and trunk.keepalive == "crlf"
    assert trunk.failover_timeout == 0.8
    assert trunk.tls.ca_file == pem["ca"] and trunk.tls.cert_file == pem["cert"]
    assert trunk.tls.key_file == pem["key"] and trunk.tls.server_name == "sip.carrier.test"


def test_srtp_require_needs_tls() -> None:
    text = "trunks:\n  - {name: t, registrar: pbx, srtp: require}\n"
    issue = only(text)
    assert (issue.line, issue.column) == pos(text, 2, "require")
    assert issue.path == "trunks[0].srtp" and "TLS" in issue.message


def test_srtp_offer_is_fine_on_udp() -> None:
    assert load("trunks:\n  - {name: t, registrar: pbx, srtp: offer}\n").trunks[0].srtp == "offer"


def test_missing_tls_file_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    text = f"trunks:\n  - name: t\n    registrar: pbx\n    tls: {{ca_file: {missing}}}\n"
    issue = only(text)
    assert issue.path == "trunks[0].tls.ca_file" and str(missing) in issue.message
    assert (issue.line, issue.column) == pos(text, 4, str(missing))


def test_client_cert_without_key(pem: dict[str, str]) -> None:
    issue = only(f"trunks:\n  - name: t\n    registrar: pbx\n    tls: {{cert_file: {pem['cert']}}}\n")
    assert issue.path == "trunks[0].tls.cert_file" and "without key_file" in issue.message


def test_relative_tls_path_and_bad_verify_and_unknown_key() -> None:
    text = """\
        trunks:
          - name: t
            registrar: pbx
            tls: {ca_file: ca.pem, verify: maybe, cafile: x}
        """
    found = issues(text)
    assert sorted(i.path for i in found) == [
        "trunks[0].tls.ca_file", "trunks[0].tls.cafile", "trunks[0].tls.verify"]
    unknown = next(i for i in found if i.path.endswith("cafile"))
    assert "did you mean 'ca_file'?" in unknown.message


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("keepalive", "stun", "one of 'options', 'crlf', 'none'"),
    ("failover_timeout", "0", "a number from 0.2 to 32"),
    ("transport", "UDP", "one of 'udp', 'tcp', 'tls'"),
])
def test_bad_trunk_values(key: str, value: str, expected: str) -> None:
    issue = only(f"trunks:\n  - {{name: t, registrar: pbx, {key}: {value}}}\n")
    assert issue.path == f"trunks[0].{key}" and issue.expected == expected


def test_listeners_and_server_tls(pem: dict[str, str]) -> None:
    cfg = load(f"""\
        sip:
          listen: 127.0.0.1:5060
          tcp_listen: 127.0.0.1:5060
          tls_listen: 127.0.0.1:5061
          tls: {{cert_file: {pem["server"]}, key_file: {pem["server_key"]}, ca_file: {pem["ca"]},
                 verify_clients: true}}
          dns_servers: ["127.0.0.1:5353", 192.0.2.53]
        """)
    sip = cfg.sip
    assert sip.tcp_listen is not None and (sip.tcp_listen.host, sip.tcp_listen.port) == (
        "127.0.0.1", 5060)
    assert sip.tls_listen is not None and sip.tls_listen.port == 5061
    assert sip.tls is not None and sip.tls.verify_clients and sip.tls.ca_file == pem["ca"]
    assert [(d.host, d.port) for d in sip.dns_servers] == [("127.0.0.1", 5353), ("192.0.2.53", 53)]


def test_tls_listener_needs_a_certificate() -> None:
    text = "sip:\n  tls_listen: 0.0.0.0:5061\n"
    issue = only(text)
    assert issue.path == "sip.tls_listen" and (issue.line, issue.column) == pos(text, 2, "0.0")


def test_tcp_and_tls_on_the_same_port(pem: dict[str, str]) -> None:
    issue = only(f"""\
        sip:
          tcp_listen: 0.0.0.0:5070
          tls_listen: 0.0.0.0:5070
          tls: {{cert_file: {pem["server"]}, key_file: {pem["server_key"]}}}
        """)
    assert issue.path == "sip.tls_listen" and "already the TCP listener" in issue.message


def test_verify_clients_needs_a_ca(pem: dict[str, str]) -> None:
    issue = only(f"""\
        sip:
          tls: {{cert_file: {pem["server"]}, key_file: {pem["server_key"]}, verify_clients: true}}
        """)
    assert issue.path == "sip.tls.verify_clients"


def test_server_tls_needs_cert_and_key() -> None:
    found = issues("sip:\n  tls: {}\n")
    assert sorted(i.path for i in found) == ["sip.tls.cert_file", "sip.tls.key_file"]


@pytest.mark.parametrize(("servers", "path"), [
    ('["ns.example.com"]', "sip.dns_servers[0]"),
    ('["127.0.0.1:99999"]', "sip.dns_servers[0]"),
    ("[1.1.1.1, 1.0.0.1, 8.8.8.8, 8.8.4.4, 9.9.9.9]", "sip.dns_servers"),
    ("127.0.0.1", "sip.dns_servers"),
])
def test_bad_dns_servers(servers: str, path: str) -> None:
    assert only(f"sip:\n  dns_servers: {servers}\n").path == path


def test_round_trip_and_json_schema(pem: dict[str, str]) -> None:
    text = f"""\
        sip:
          tcp_listen: 127.0.0.1:5070
          tls_listen: 127.0.0.1:5071
          tls: {{cert_file: {pem["server"]}, key_file: {pem["server_key"]}}}
          dns_servers: ["127.0.0.1:5353"]
        trunks:
          - name: secure
            registrar: carrier.test
            transport: tls
            srtp: offer
            keepalive: crlf
            tls: {{ca_file: {pem["ca"]}}}
        """
    cfg = load(text)
    data: dict[str, Any] = cfg.to_dict()
    again = load(yaml.safe_dump(data))
    assert again == cfg
    assert again.trunks[0].registrar.lookup_port is None
    import jsonschema  # a test dependency (pyproject [test]): missing means a broken install
    validator = jsonschema.Draft202012Validator(export_json_schema())
    validator.validate(data)
    validator.validate(yaml.safe_load(textwrap.dedent(text)))
    bad = dict(data, trunks=[dict(data["trunks"][0], srtp="always")])
    assert list(validator.iter_errors(bad))
