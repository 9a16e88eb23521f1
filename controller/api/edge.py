"""The HTTP edge: how long a connection may take over its request, and how many there may be.

uvicorn closes a connection idle between requests (`timeout_keep_alive`), but bounds neither
the time a client takes to send its headers nor the number of connections it may hold open:
its `limit_concurrency` answers 503 only once a whole request has arrived. So one client that
opens connections and trickles a byte now and then could hold sockets and file descriptors
until the process runs out. `EdgeProtocol` (uvicorn's h11 protocol with three additions) closes

    a connection `Admission` refuses as soon as it is accepted, with a 503: one over
    `max_connections`, one more than its address's `max_connections_per_client`, or one from
    another machine that would take the last slots, which are kept for loopback clients;
    a connection whose request headers are not complete `header_timeout_s` after it opened (or
    after the first byte of its next request), with a 408 if it had sent anything;
    a connection whose response is finished while the client still owes body bytes, so a body
    the app refused unread is never read either.

The body's own deadline (`body_timeout_s`) is kept by `app.BodyLimit`, which reads every body,
so that a slow one gets a JSON 408. Long responses (event streams) are not limited here: the
header deadline ends when the request is parsed, and the idle one only runs between requests.
`server_config` builds the uvicorn configuration `dispatch serve` and the tests run with, and
`ensure_descriptors` makes sure the process may open that many sockets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import resource
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from controller.errors import ConfigError
from controller.settings import Settings

# Descriptors the controller needs besides its connections: database, Docker, logs, threads.
SPARE_DESCRIPTORS = 256
# Slots only loopback clients may take (at most a quarter of the cap): the owner's CLI runs on
# this machine, so a flood from many addresses elsewhere still cannot keep the owner out.
LOOPBACK_RESERVE = 4


@dataclass(frozen=True)
class EdgeLimits:
    """The figures `EdgeProtocol` enforces (see the module docstring)."""

    header_timeout_s: float
    max_connections: int
    max_connections_per_client: int
    loopback_reserve: int
    # Proxies carry many clients, so their address is not held to one client's share.
    trusted_proxies: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> EdgeLimits:
        return cls(
            header_timeout_s=settings.header_timeout_s,
            max_connections=settings.max_connections,
            max_connections_per_client=settings.connections_per_client,
            loopback_reserve=min(LOOPBACK_RESERVE, settings.max_connections // 4),
            trusted_proxies=settings.trusted_proxies,
        )


@dataclass
class Admission:
    """Who holds the connection slots, in all and per client address; one per server.

    A client is the connection's address (the peer of the socket; `X-Forwarded-For` is not read
    yet when a connection is accepted). Every open connection counts, a device's long-lived
    event streams included, so a stolen token cannot hold more than its address's share either.
    """

    limits: EdgeLimits
    _open: Counter[str] = field(default_factory=Counter)
    _total: int = 0

    def __post_init__(self) -> None:
        self._proxies = [ipaddress.ip_network(p) for p in self.limits.trusted_proxies]

    def admit(self, address: str) -> str | None:
        """Take a slot for a connection from `address`; None, or why it is refused."""
        limits = self.limits
        ip = peer_ip(address)
        if self._total >= limits.max_connections:
            return (
                f"the controller already has {limits.max_connections} connections open; try "
                "again shortly (the limit is the max_connections setting)"
            )
        local = ip is None or ip.is_loopback
        if not local and self._total >= limits.max_connections - limits.loopback_reserve:
            return (
                f"the controller already has {self._total} connections open and keeps the last "
                f"{limits.loopback_reserve} for clients on its own machine; try again shortly "
                "(the limit is the max_connections setting)"
            )
        client = client_key(ip)
        proxy = ip is not None and any(ip in network for network in self._proxies)
        if self._open[client] >= limits.max_connections_per_client and not proxy:
            return (
                f"{client} already has {self._open[client]} connections open; close some "
                "(the limit is the max_connections_per_client setting)"
            )
        self._open[client] += 1
        self._total += 1
        return None

    def release(self, address: str) -> None:
        """Give back the slot `admit` took for a connection from `address`."""
        client = client_key(peer_ip(address))
        self._open[client] -= 1
        self._total -= 1
        if self._open[client] <= 0:
            del self._open[client]


def peer_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A socket peer's IP, IPv4-mapped IPv6 unwrapped; None for a Unix socket (no address)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def client_key(ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None) -> str:
    """Whom a connection is counted under: its IPv4 address, or its IPv6 /64.

    One IPv6 subscriber is usually handed a whole /64, so counting each of its addresses apart
    would give one client millions of shares.
    """
    if ip is None:
        return "a local socket"
    if isinstance(ip, ipaddress.IPv6Address) and not ip.is_loopback:
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def raw_response(status: int, code: str, message: str) -> bytes:
    """A complete `Connection: close` JSON error, for answers given outside any request cycle."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
        "content-type: application/json\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class EdgeProtocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a header deadline; see the module."""

    limits: ClassVar[EdgeLimits]
    admission: ClassVar[Admission]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None
        self._request_begun = False
        # The address this connection holds a slot under; None until (and unless) admitted.
        self._slot: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        refusal = self.admission.admit(address)
        if refusal is not None:
            self.logger.warning("refused a connection from %s: %s", address or "a socket", refusal)
            transport.write(raw_response(503, "too_many_connections", refusal))
            transport.close()
            return
        self._slot = address
        # A connection that never sends a request is closed like one that sends it slowly.
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        waiting = self.conn.their_state is h11.IDLE
        if waiting and data:
            if self._header_deadline is None:
                # The first byte of a later request on a kept-alive connection.
                self._arm_header_deadline()
            self._request_begun = True
        super().data_received(data)
        if waiting and self.conn.their_state is not h11.IDLE:
            self._disarm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        if self._slot is not None:
            self.admission.release(self._slot)
            self._slot = None
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        # The app answered without reading the whole body (a refused token or size): close
        # rather than read and discard whatever the client still sends, for as long as it likes.
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            self.transport.close()
        super().on_response_complete()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self._request_begun = False
        self._header_deadline = self.loop.call_later(
            self.limits.header_timeout_s, self._on_header_timeout
        )

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _on_header_timeout(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self._request_begun:
            self.transport.write(
                raw_response(
                    408,
                    "request_timeout",
                    f"the request headers did not arrive within {self.limits.header_timeout_s:g} "
                    "s; send them at once (the limit is the header_timeout_s setting)",
                )
            )
        self.transport.close()


def edge_protocol(limits: EdgeLimits) -> type[EdgeProtocol]:
    """`EdgeProtocol` bound to `limits` (uvicorn builds protocols from a class and its config)."""

    class BoundEdgeProtocol(EdgeProtocol):
        pass

    BoundEdgeProtocol.limits = limits
    BoundEdgeProtocol.admission = Admission(limits)
    return BoundEdgeProtocol


def server_config(app: Any, settings: Settings, **overrides: Any) -> uvicorn.Config:
    """The uvicorn configuration for `app`: the edge limits, and proxy headers only if trusted.

    uvicorn believes `X-Forwarded-For` from 127.0.0.1 by default, which would let any local
    process (or a tunnel ending on this machine) pick the address pairing guesses are counted
    under. Here the headers are read only from the `trusted_proxies` addresses.
    """
    options: dict[str, Any] = {
        "http": edge_protocol(EdgeLimits.of(settings)),
        # uvicorn passes it to call_later, which takes a float.
        "timeout_keep_alive": settings.idle_timeout_s,
        "proxy_headers": bool(settings.trusted_proxies),
        "forwarded_allow_ips": list(settings.trusted_proxies),
        "log_level": settings.log_level,
        "access_log": False,
        "timeout_graceful_shutdown": 3,
        **overrides,
    }
    return uvicorn.Config(app, **options)


def ensure_descriptors(max_connections: int) -> int:
    """Raise this process's soft open-file limit so `max_connections` sockets fit; the new limit.

    Some systems start services with a soft limit as low as 256, below the default cap; then the
    cap would not be what stops a flood, running out of descriptors would.

    Raises:
        ConfigError: the hard limit is too low; it names the setting and the fix.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = max_connections + SPARE_DESCRIPTORS
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    if hard != resource.RLIM_INFINITY and hard < needed:
        fits = hard - SPARE_DESCRIPTORS
        lower = f"lower max_connections to {fits} or less, or " if fits >= 1 else ""
        raise ConfigError(
            f"setting max_connections = {max_connections} needs {needed} open files, but this "
            f"process may open at most {hard}; {lower}raise the hard limit (ulimit -Hn)"
        )
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))
    return needed
