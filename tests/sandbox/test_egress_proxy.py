"""The proxy process on its own (no Docker): what it refuses on the wire, and that it never
outlives the process that started it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.egress import ProxyProcess
from tests.sandbox.egress_sites import SMALL, Site, serve


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with serve() as served:
        yield served


@pytest.fixture
def proxy(site: Site) -> Iterator[tuple[ProxyProcess, tuple[str, int]]]:
    process = ProxyProcess([f"allowed.test:{site.port}"], {"allowed.test": "127.0.0.1"})
    host, _, port = process.start(listen="127.0.0.1:0").rpartition(":")
    yield process, (host, int(port))
    process.stop()


def ask(address: tuple[str, int], request: bytes) -> bytes:
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_an_allowed_request_is_forwarded(
    proxy: tuple[ProxyProcess, tuple[str, int]], site: Site
) -> None:
    _, address = proxy
    url = f"http://allowed.test:{site.port}"
    answer = ask(
        address, f"GET {url}/small HTTP/1.1\r\nHost: allowed.test:{site.port}\r\n\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(SMALL)


@pytest.mark.parametrize(
    ("request_text", "status"),
    [
        # The Host header names another server than the checked URL.
        ("GET http://allowed.test:{port}/small HTTP/1.1\r\nHost: evil.test\r\n\r\n", b"403"),
        # A bare LF would make a second, unchecked Host header for the destination.
        ("GET http://allowed.test:{port}/small HTTP/1.1\r\nX: a\nHost: evil.test\r\n\r\n", b"400"),
        # Origin-form: a client treating the proxy as the server.
        ("GET /small HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n", b"400"),
        # https:// must go through CONNECT (where the SNI is checked).
        ("GET https://allowed.test:{port}/ HTTP/1.1\r\n\r\n", b"400"),
        # Not HTTP at all.
        ("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"400"),
    ],
)
def test_what_the_proxy_refuses_on_the_wire(
    proxy: tuple[ProxyProcess, tuple[str, int]], site: Site, request_text: str, status: bytes
) -> None:
    process, address = proxy
    before = len(site.paths)
    answer = ask(address, request_text.format(port=site.port).encode("latin-1"))
    assert answer.split(b" ")[1] == status, answer
    assert len(site.paths) == before
    (record,) = process.wait_records(1)
    assert not record.allowed and record.status == int(status)


PARENT = """
import sys, time
from sandbox.egress import ProxyProcess
proxy = ProxyProcess(["example.com"])
proxy.start(socket_path=sys.argv[1])
print(proxy.pid, flush=True)
time.sleep(600)
"""


def test_the_proxy_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    path = tmp_path / "proxy.sock"
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert path.exists()
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _alive(child):
            time.sleep(0.05)
        assert not _alive(child), f"proxy {child} outlived its parent"
        assert not path.exists()
    finally:
        parent.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not reaped by its dead parent's reaper yet) is gone for our purpose.
    return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
