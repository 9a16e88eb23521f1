"""Moving bytes for the proxy: buffered reads while a request is checked, then a zero-copy relay.

While the proxy reads and checks a request, a connection is a raw non-blocking socket read
through the event loop (`Conn`). Once both ends are decided, `relay` hands the two sockets to two
threads that move the bytes with `splice(2)` through a pipe, so the data never enters Python:
this is what lets the proxy keep up with a loopback download.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import socket
import threading
from collections.abc import Callable

PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class Conn:
    """A non-blocking socket read through the event loop, with what was read but not used."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.buffer = bytearray()

    async def _fill(self) -> bool:
        data = await asyncio.get_running_loop().sock_recv(self.sock, 65536)
        self.buffer += data
        return bool(data)

    async def readuntil(self, marker: bytes, limit: int) -> bytes:
        """Bytes up to and including `marker`.

        Raises:
            asyncio.LimitOverrunError: more than `limit` bytes without it.
            asyncio.IncompleteReadError: the peer closed first.
        """
        while (end := self.buffer.find(marker)) < 0:
            if len(self.buffer) > limit:
                raise asyncio.LimitOverrunError("request head too large", len(self.buffer))
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self.buffer), None)
        end += len(marker)
        data = bytes(self.buffer[:end])
        del self.buffer[:end]
        return data

    async def readexactly(self, size: int) -> bytes:
        """Raises: asyncio.IncompleteReadError."""
        while len(self.buffer) < size:
            if not await self._fill():
                raise asyncio.IncompleteReadError(bytes(self.buffer), size)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    async def send(self, data: bytes) -> None:
        await asyncio.get_running_loop().sock_sendall(self.sock, data)

    def take(self) -> bytes:
        """What was read and not consumed (it goes on to the other end)."""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


async def open_conn(address: str, port: int, timeout_s: float) -> Conn:
    """Connect to `address:port` (an IP address, already checked).

    Raises:
        OSError, TimeoutError: it could not be reached.
    """
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, (address, port)), timeout_s
        )
    except BaseException:
        sock.close()
        raise
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return Conn(sock)


def _pump(src: socket.socket, dst: socket.socket, count: Callable[[int], None]) -> None:
    """Move bytes from `src` to `dst` until `src` ends; then end `dst`'s sending side."""
    try:
        _splice(src, dst, count)
    except OSError:
        pass
    finally:
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)


def _splice(src: socket.socket, dst: socket.socket, count: Callable[[int], None]) -> None:
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, F_SETPIPE_SZ, PIPE_BYTES)
        while True:
            try:
                moved = os.splice(src.fileno(), write_end, PIPE_BYTES, flags=os.SPLICE_F_MOVE)
            except OSError as exc:
                if exc.errno != 22:  # EINVAL: this pair cannot splice, copy instead
                    raise
                return _copy(src, dst, count)
            if moved == 0:
                return None
            left = moved
            while left:
                left -= os.splice(read_end, dst.fileno(), left, flags=os.SPLICE_F_MOVE)
            count(moved)
    finally:
        os.close(read_end)
        os.close(write_end)


def _copy(src: socket.socket, dst: socket.socket, count: Callable[[int], None]) -> None:
    while data := src.recv(PIPE_BYTES):
        dst.sendall(data)
        count(len(data))


def _finish(done: asyncio.Future[None]) -> None:
    if not done.done():
        done.set_result(None)


async def relay(
    client: Conn, upstream: Conn, up: Callable[[int], None], down: Callable[[int], None]
) -> None:
    """Carry bytes both ways until the upstream side ends (then the client's is closed too).

    Whatever `client` had read beyond the request goes first. The counters are called from the
    relay's threads with each chunk's size.
    """
    pending = client.take()
    if pending:
        await upstream.send(pending)
        up(len(pending))
    loop = asyncio.get_running_loop()
    went_up, came_down = loop.create_future(), loop.create_future()
    for conn in (client, upstream):
        conn.sock.setblocking(True)

    def upward() -> None:
        try:
            _pump(client.sock, upstream.sock, up)
        finally:
            loop.call_soon_threadsafe(_finish, went_up)

    def downward() -> None:
        try:
            _pump(upstream.sock, client.sock, down)
        finally:
            # The answer has ended: stop reading the client too (wakes the other thread).
            with contextlib.suppress(OSError):
                client.sock.shutdown(socket.SHUT_RDWR)
            loop.call_soon_threadsafe(_finish, came_down)

    threading.Thread(target=upward, name="egress-up", daemon=True).start()
    threading.Thread(target=downward, name="egress-down", daemon=True).start()
    # Both, so the byte counts are final when the caller records them.
    await asyncio.gather(came_down, went_up)
