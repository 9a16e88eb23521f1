"""The filtering proxy: plain HTTP and CONNECT, nothing else, each request checked and recorded.

A small asyncio server rather than a general proxy library: it must do less than any library
does (no caching, no TLS interception, no SOCKS, no upstream chaining, no plugins), and every
line it has is a line that decides what a sandbox reaches, so it stays short enough to read.

- `GET http://name[:port]/path` (any method, absolute URI): forwarded if `name:port` is allowed
  and the `Host` header names the same host; sent upstream with `Connection: close`, so one
  connection carries one checked request (anything the client sends after it still goes to the
  same checked destination).
- `CONNECT name:port`: if allowed, the tunnel opens and its first bytes must be a TLS
  ClientHello whose SNI is `name`; anything else closes it.
- Names are resolved here, checked by `EgressPolicy` (no private, loopback, link-local or own
  addresses unless mapped in network_resolve), and the checked address is the one connected to.
- Anything else (an origin-form request, a malformed one, `https://` in a plain request) is
  refused. Each refusal is a 403 (400 when malformed) whose body names the domain and the fix.

Run as its own process (`python -m sandbox.egress.proxy`, see `sandbox.egress.process`): it
listens on a Unix socket, writes one JSON record per request to stdout, and exits when its
stdin closes (its parent is gone).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sandbox.egress.pipe import Conn, open_conn, relay
from sandbox.egress.policy import EgressPolicy, Refused
from sandbox.egress.record import EgressRecord
from sandbox.egress.sni import NotTls, read_client_hello

MAX_HEAD_BYTES = 64 * 1024
HEAD_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 256
HOP_HEADERS = {"proxy-connection", "proxy-authorization", "connection", "keep-alive"}


@dataclass
class _Exchange:
    """What one client connection asked for and what became of it."""

    started: float = field(default_factory=time.time)
    method: str = ""
    domain: str = ""
    port: int = 0
    allowed: bool = False
    reason: str = ""
    status: int | None = None
    up: int = 0
    down: int = 0


class EgressProxy:
    """The server; `on_record` is called once per client connection when it ends."""

    def __init__(self, policy: EgressPolicy, on_record: Callable[[EgressRecord], None]) -> None:
        self.policy = policy
        self.on_record = on_record
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def handle(self, client: Conn) -> None:
        ex = _Exchange()
        try:
            async with self._slots:
                await self._serve(client, ex)
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, OSError):
            if ex.allowed and not ex.reason:
                ex.reason = "connection ended abruptly"
        finally:
            client.close()
            if ex.method or ex.domain:
                self.on_record(
                    EgressRecord(
                        time=ex.started,
                        domain=ex.domain,
                        port=ex.port,
                        method=ex.method,
                        allowed=ex.allowed,
                        reason=ex.reason,
                        bytes_up=ex.up,
                        bytes_down=ex.down,
                        status=ex.status,
                    )
                )

    async def _serve(self, client: Conn, ex: _Exchange) -> None:
        try:
            head = await asyncio.wait_for(
                client.readuntil(b"\r\n\r\n", MAX_HEAD_BYTES), HEAD_TIMEOUT_S
            )
        except asyncio.LimitOverrunError:
            ex.method, ex.reason = "?", "request head too large"
            await self._answer(client, ex, 400, "the request head is larger than 64 KiB")
            return
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                ex.method, ex.reason = "?", "not an HTTP request"
                await self._answer(client, ex, 400, _NOT_HTTP)
            return
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            ex.method, ex.reason = "?", "not an HTTP request"
            await self._answer(client, ex, 400, _NOT_HTTP)
            return
        ex.method, target = parts[0].upper(), parts[1]
        headers = [line.split(":", 1) for line in lines[1:] if line]
        # A bare CR or LF inside a line could end it for the destination and add a header
        # (a second Host) that was never checked here.
        if any(len(h) != 2 for h in headers) or any("\r" in x or "\n" in x for x in lines):
            ex.reason = "malformed header"
            await self._answer(client, ex, 400, "a request header has no ':'")
            return
        if ex.method == "CONNECT":
            await self._connect(client, ex, target)
        else:
            await self._forward(client, ex, target, [(k, v) for k, v in headers])

    async def _connect(self, client: Conn, ex: _Exchange, target: str) -> None:
        host, port = _split_host_port(target, None)
        ex.domain, ex.port = host, port or 0
        if port is None:
            ex.reason = "CONNECT without a port"
            await self._answer(client, ex, 400, "CONNECT needs host:port")
            return
        upstream = await self._open(client, ex, host, port)
        if upstream is None:
            return
        try:
            ex.status = 200
            await client.send(b"HTTP/1.1 200 Connection established\r\n\r\n")
            try:
                hello, sni = await asyncio.wait_for(read_client_hello(client), HEAD_TIMEOUT_S)
            except NotTls as exc:
                ex.allowed, ex.reason = False, f"refused: {exc} (a tunnel carries TLS only)"
                return
            if sni is None or sni.lower().rstrip(".") != ex.domain:
                ex.allowed = False
                ex.reason = (
                    f"refused: the TLS server name {sni!r} is not the CONNECT host {ex.domain!r}"
                )
                return
            await upstream.send(hello)
            ex.up += len(hello)
            await self._relay(client, upstream, ex)
        finally:
            upstream.close()

    async def _forward(
        self, client: Conn, ex: _Exchange, target: str, headers: list[tuple[str, str]]
    ) -> None:
        url = urlsplit(target)
        if url.scheme != "http" or not url.hostname:
            ex.domain = url.hostname or ""
            ex.reason = "not an absolute http:// URL"
            message = (
                "send https:// requests through CONNECT (set HTTPS_PROXY)"
                if url.scheme == "https"
                else "this is a proxy: ask for an absolute http:// URL (set HTTP_PROXY)"
            )
            await self._answer(client, ex, 400, message)
            return
        try:
            port = url.port or 80
        except ValueError:
            ex.domain, ex.reason = url.hostname, "bad port"
            await self._answer(client, ex, 400, "the URL's port is not a number from 1 to 65535")
            return
        host = url.hostname
        ex.domain, ex.port = host, port
        for key, value in headers:
            if key.strip().lower() == "host":
                named, named_port = _split_host_port(value.strip(), 80)
                if named.lower().rstrip(".") != host.lower().rstrip(".") or named_port != port:
                    ex.reason = f"Host header {value.strip()!r} differs from the URL's host"
                    await self._answer(client, ex, 403, _refusal(ex, self.policy, ex.reason))
                    return
        upstream = await self._open(client, ex, host, port)
        if upstream is None:
            return
        try:
            path = url.path or "/"
            if url.query:
                path += "?" + url.query
            kept = [(k, v) for k, v in headers if k.strip().lower() not in HOP_HEADERS]
            if not any(k.strip().lower() == "host" for k, _ in kept):
                kept.insert(0, ("Host", url.netloc.rpartition("@")[2]))
            lines = [f"{ex.method} {path} HTTP/1.1", *(f"{k}:{v}" for k, v in kept)]
            lines.append("Connection: close")
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            await upstream.send(head)
            ex.up += len(head)
            ex.status = 200
            await self._relay(client, upstream, ex)
        finally:
            upstream.close()

    async def _open(self, client: Conn, ex: _Exchange, host: str, port: int) -> Conn | None:
        """Check, resolve and connect; on refusal answer the client and return None."""
        loop = asyncio.get_running_loop()
        try:
            ex.domain = self.policy.check_name(host, port)
            if ex.domain in self.policy.resolve:  # no DNS to wait for
                addresses = self.policy.addresses(ex.domain, port)
            else:
                addresses = await loop.run_in_executor(None, self.policy.addresses, ex.domain, port)
        except Refused as refused:
            ex.reason = refused.reason
            await self._answer(
                client, ex, 403, _refusal(ex, self.policy, refused.reason, refused.listable)
            )
            return None
        ex.allowed = True
        errors = []
        for address in addresses:
            try:
                return await open_conn(str(address), port, CONNECT_TIMEOUT_S)
            except (TimeoutError, OSError) as exc:
                errors.append(f"{address}: {exc or 'timed out'}")
        ex.reason = "could not connect: " + "; ".join(errors)
        await self._answer(client, ex, 502, f"Dispatch could not reach {host}:{port}: {ex.reason}")
        return None

    async def _relay(self, client: Conn, upstream: Conn, ex: _Exchange) -> None:
        def up(n: int) -> None:
            ex.up += n

        def down(n: int) -> None:
            ex.down += n

        await relay(client, upstream, up, down)

    async def _answer(self, client: Conn, ex: _Exchange, status: int, body: str) -> None:
        ex.status = status
        data = (body.rstrip("\n") + "\n").encode()
        phrase = {400: "Bad Request", 403: "Forbidden", 502: "Bad Gateway"}[status]
        head = (
            f"HTTP/1.1 {status} {phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n"
            f"X-Dispatch-Egress: refused\r\n\r\n"
        )
        with contextlib.suppress(OSError):
            await client.send(head.encode() + data)


_NOT_HTTP = (
    "Dispatch's egress proxy speaks HTTP only: this sandbox reaches the internet through "
    "HTTP_PROXY/HTTPS_PROXY, and raw TCP or UDP is not allowed"
)


def _refusal(ex: _Exchange, policy: EgressPolicy, reason: str, listable: bool = False) -> str:
    name = ex.domain or "?"
    text = (
        f"Dispatch refused {name}:{ex.port}: {reason}.\n"
        f"This sandbox may reach only: {policy.describe()}.\n"
    )
    if listable:
        entry = name if ex.port in (80, 443) else f"{name}:{ex.port}"
        text += (
            f"To allow it, run the task with --allow {entry} (dispatch submit, dispatch sandbox "
            f'run), or send "network": {{"allow": ["{entry}"]}} with the task, or add it to a '
            "preset in [network.presets] of config.toml.\n"
        )
    return text


def _split_host_port(text: str, default: int | None) -> tuple[str, int | None]:
    """`host:port`, `[v6]:port` or `host` (then `default`); a bad port gives 0."""
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        return host, 0
    return host, int(port_text)


async def serve(policy: EgressPolicy, socket_path: str | None, listen: str | None) -> None:
    """Run until stdin closes or SIGTERM; print a ready line with the address, then records."""
    out = sys.stdout

    def emit(record: EgressRecord) -> None:
        out.write(record.to_json() + "\n")
        out.flush()

    proxy = EgressProxy(policy, emit)
    if socket_path:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(socket_path)
        os.chmod(socket_path, 0o666)  # the sandbox runs as some other user
        address = socket_path
    else:
        host, _, port = (listen or "127.0.0.1:0").rpartition(":")
        listener = socket.create_server((host, int(port)))
        bound = listener.getsockname()
        address = f"{bound[0]}:{bound[1]}"
    listener.listen(128)
    listener.setblocking(False)
    out.write(json.dumps({"ready": address}) + "\n")
    out.flush()
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, done.set)

    def on_stdin() -> None:
        if not os.read(0, 4096):  # the parent is gone
            done.set()

    loop.add_reader(0, on_stdin)
    accepting = asyncio.ensure_future(_accept(listener, proxy))
    try:
        await done.wait()
    finally:
        accepting.cancel()
        listener.close()
        if socket_path:
            with contextlib.suppress(OSError):
                os.unlink(socket_path)


async def _accept(listener: socket.socket, proxy: EgressProxy) -> None:
    loop = asyncio.get_running_loop()
    handlers: set[asyncio.Future[None]] = set()
    while True:
        sock, _ = await loop.sock_accept(listener)
        if sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        handler = asyncio.ensure_future(proxy.handle(Conn(sock)))
        handlers.add(handler)
        handler.add_done_callback(handlers.discard)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sandbox.egress.proxy")
    parser.add_argument("--socket", help="listen on this Unix socket")
    parser.add_argument("--listen", help="listen on host:port instead (benchmarks)")
    parser.add_argument("--policy", required=True, help='JSON {"allow": [...], "resolve": {...}}')
    args = parser.parse_args(argv)
    spec = json.loads(args.policy)
    policy = EgressPolicy.build(spec.get("allow", ()), spec.get("resolve", {}))
    asyncio.run(serve(policy, args.socket, args.listen))


if __name__ == "__main__":
    main()
