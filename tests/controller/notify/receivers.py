"""Real HTTP servers on loopback that stand in for a push service, ntfy and a webhook receiver.

`PushService` behaves as a browser's push service and the browser together: it hands out
subscriptions with a P-256 key pair and an auth secret made as a browser makes them, checks
each message's VAPID signature, and decrypts its payload (RFC 8291, with `http_ece`) with the
subscription's private key, keeping what it read.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import http_ece
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def wait_until(predicate: Callable[[], Any], timeout_s: float = 10.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.01)


@dataclass
class Request:
    """A POST received; header names in lower case."""

    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body)


class _Server:
    """A ThreadingHTTPServer on 127.0.0.1 whose POSTs go to `handle(path, headers, body)`."""

    def __init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, extra = owner.handle(self.path, headers, body)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        raise NotImplementedError

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Receiver(_Server):
    """Records every POST; answers `statuses` in turn first (e.g. 503s), then 200."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.refused: list[Request] = []
        self.statuses: list[int] = []
        self._lock = threading.Lock()
        super().__init__()

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        with self._lock:
            request = Request(path, headers, body)
            if self.statuses:
                self.refused.append(request)
                return self.statuses.pop(0), {}
            self.requests.append(request)
            return 200, {}


@dataclass
class Browser:
    """One subscription as a browser makes it: a P-256 key pair and a 16-byte auth secret."""

    name: str
    endpoint: str
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    def subscription(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives."""
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": self.endpoint,
            "expirationTime": None,
            "keys": {"p256dh": b64url(point), "auth": b64url(self.auth)},
        }


@dataclass
class Push:
    """A message the push service accepted, decrypted."""

    browser: str
    headers: dict[str, str]
    payload: dict[str, Any]
    vapid_key: str
    claims: dict[str, Any]
    at: float


def verify_vapid(header: str, endpoint: str) -> tuple[str, dict[str, Any]]:
    """Check `Authorization: vapid t=JWT,k=KEY` (RFC 8292); the key and the JWT's claims."""
    assert header.startswith("vapid "), header
    parts = dict(item.strip().split("=", 1) for item in header[len("vapid ") :].split(","))
    token, key = parts["t"], parts["k"]
    head, claims, signature = token.split(".")
    assert json.loads(unb64url(head)) == {"typ": "JWT", "alg": "ES256"}
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(key))
    raw = unb64url(signature)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    public.verify(der, f"{head}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    decoded: dict[str, Any] = json.loads(unb64url(claims))
    origin = urlsplit(endpoint)
    assert decoded["aud"] == f"{origin.scheme}://{origin.netloc}", decoded
    assert decoded["exp"] > time.time(), decoded
    return key, decoded


class PushService(_Server):
    """A push service stand-in on loopback; `status[name]` makes one subscription answer so."""

    def __init__(self) -> None:
        self.browsers: dict[str, Browser] = {}
        self.pushes: list[Push] = []
        self.status: dict[str, int] = {}
        self.errors: list[str] = []
        self.arrived = threading.Condition()
        super().__init__()

    def browser(self, name: str) -> Browser:
        made = Browser(name, f"{self.url}/push/{name}")
        self.browsers[name] = made
        return made

    def handle(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str]]:
        name = path.rsplit("/", 1)[-1]
        browser = self.browsers.get(name)
        if browser is None:
            return 404, {}
        if name in self.status:
            return self.status[name], {}
        try:
            assert headers.get("content-encoding") == "aes128gcm", headers
            assert int(headers["ttl"]) > 0, headers
            key, claims = verify_vapid(headers["authorization"], browser.endpoint)
            plain = http_ece.decrypt(
                body, private_key=browser.key, auth_secret=browser.auth, version="aes128gcm"
            )
            payload = json.loads(plain)
        except (AssertionError, KeyError, ValueError, InvalidSignature) as exc:
            self.errors.append(f"{name}: {type(exc).__name__}: {exc}")
            return 400, {}
        with self.arrived:
            self.pushes.append(Push(name, headers, payload, key, claims, time.time()))
            self.arrived.notify_all()
        return 201, {}

    def received(self, name: str) -> list[dict[str, Any]]:
        return [p.payload for p in self.pushes if p.browser == name]
