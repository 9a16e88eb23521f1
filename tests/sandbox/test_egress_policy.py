"""The allowlist's rules, address checks and the ClientHello's server name (no Docker needed)."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl

import pytest

from sandbox.egress import EgressPolicy, PolicyInvalid, Refused
from sandbox.egress.sni import NotTls, read_client_hello


def test_names_wildcards_and_ports() -> None:
    policy = EgressPolicy.build(["pypi.org", "*.pythonhosted.org", "allowed.test:8443"])
    assert policy.allowed("pypi.org", 443) and policy.allowed("pypi.org", 80)
    assert not policy.allowed("pypi.org", 8080)
    assert not policy.allowed("evil-pypi.org", 443) and not policy.allowed("pypi.org.evil", 443)
    assert policy.allowed("files.pythonhosted.org", 443)
    assert not policy.allowed("pythonhosted.org", 443)
    assert policy.allowed("allowed.test", 8443) and not policy.allowed("allowed.test", 443)


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1", "[::1]", "::1", "2130706433", "0x7f.0.0.1", "127.1", "10.0.0.5"],
)
def test_every_spelling_of_an_address_is_refused(host: str) -> None:
    policy = EgressPolicy.build(["pypi.org"])
    with pytest.raises(Refused):
        policy.check_name(host, 443)


@pytest.mark.parametrize("entry", ["127.0.0.1", "::1", "example.com:0", "exa mple.com", "*.com:x"])
def test_bad_entries_are_refused_with_the_fix(entry: str) -> None:
    with pytest.raises(PolicyInvalid):
        EgressPolicy.build([entry])


@pytest.mark.parametrize(
    "address", ["127.0.0.1", "10.1.2.3", "192.168.1.1", "169.254.169.254", "::1", "fe80::1",
                "::ffff:127.0.0.1", "100.64.0.1", "0.0.0.0", "224.0.0.1", "fd00::2"],
)  # fmt: skip
def test_private_and_local_addresses_are_forbidden(address: str) -> None:
    assert EgressPolicy.build([]).forbidden(ipaddress.ip_address(address))


def test_a_public_address_is_not_forbidden() -> None:
    assert EgressPolicy.build([]).forbidden(ipaddress.ip_address("151.101.0.223")) == ""


def test_a_mapped_name_reaches_its_address_and_localhost_does_not() -> None:
    policy = EgressPolicy.build(["allowed.test", "localhost"], {"allowed.test": "127.0.0.1"})
    assert policy.addresses("allowed.test", 443) == [ipaddress.ip_address("127.0.0.1")]
    with pytest.raises(Refused, match="loopback"):
        policy.addresses("localhost", 443)


def _client_hello(server_name: str | None) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return outgoing.read()


def _read(data: bytes) -> tuple[bytes, str | None]:
    async def run() -> tuple[bytes, str | None]:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_client_hello(reader)

    return asyncio.run(run())


def test_the_server_name_is_read_from_a_real_client_hello() -> None:
    hello = _client_hello("allowed.test")
    raw, name = _read(hello + b"after")
    assert name == "allowed.test" and raw == hello


def test_a_hello_without_a_name_and_plain_bytes() -> None:
    assert _read(_client_hello(None))[1] is None
    with pytest.raises(NotTls):
        _read(b"GET / HTTP/1.1\r\n\r\n")
