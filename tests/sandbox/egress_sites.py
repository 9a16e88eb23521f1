"""Local HTTP and HTTPS servers on 127.0.0.1 that stand in for the internet in egress tests.

Each serves a few bytes, a redirect, and a one-package index for `pip download`, and remembers
every path it was asked for (so a test can show a refused request never arrived).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import ssl
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

SMALL = b"hello from allowed.test\n"
SECRET = b"the host's secret\n"
PACKAGE = "demo_pkg"
WHEEL_NAME = f"{PACKAGE}-1.0-py3-none-any.whl"


def make_wheel() -> bytes:
    """A minimal valid wheel, enough for `pip download --no-deps`."""
    buffer = io.BytesIO()
    info = f"{PACKAGE}-1.0.dist-info"
    files = {
        f"{PACKAGE}/__init__.py": b"",
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", record)
    return buffer.getvalue()


@dataclass
class Site:
    """One running server and what it saw."""

    server: ThreadingHTTPServer
    paths: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


def _handler(site_paths: list[str], wheel: bytes, blobs: dict[str, bytes]) -> type:
    digest = hashlib.sha256(wheel).hexdigest()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            site_paths.append(url.path)
            if url.path == "/redirect":
                target = parse_qs(url.query)["to"][0]
                self._send(302, b"moved\n", location=target)
            elif url.path == "/small":
                self._send(200, SMALL)
            elif url.path == "/secret":
                self._send(200, SECRET)
            elif url.path in blobs:
                self._send(200, blobs[url.path], kind="application/octet-stream")
            elif url.path.rstrip("/") == "/simple/demo-pkg":
                page = f'<html><body><a href="/files/{WHEEL_NAME}#sha256={digest}">{WHEEL_NAME}</a>'
                self._send(200, page.encode(), kind="text/html")
            elif url.path == f"/files/{WHEEL_NAME}":
                self._send(200, wheel, kind="application/octet-stream")
            else:
                self._send(404, b"not found\n")

        def _send(
            self, status: int, body: bytes, *, kind: str = "text/plain", location: str = ""
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(body)))
            if location:
                self.send_header("Location", location)
            self.end_headers()
            self.wfile.write(body)

    return Handler


@contextlib.contextmanager
def serve(
    tls: tuple[Path, Path] | None = None, blobs: dict[str, bytes] | None = None
) -> Iterator[Site]:
    """Serve on an ephemeral port of 127.0.0.1 (HTTPS with `tls` = (cert, key))."""
    paths: list[str] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(paths, make_wheel(), blobs or {}))
    server.daemon_threads = True
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(server, paths)
    finally:
        server.shutdown()
        server.server_close()


def make_cert(folder: Path, name: str) -> tuple[Path, Path]:
    """A self-signed certificate for `name` (cert, key), made with the openssl command."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={name}",
            "-addext", f"subjectAltName=DNS:{name}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
