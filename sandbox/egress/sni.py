"""Read the server name (SNI) from the first bytes a TLS client sends: its ClientHello."""

from __future__ import annotations

import asyncio
from typing import Protocol

RECORD_HANDSHAKE = 22
HANDSHAKE_CLIENT_HELLO = 1
EXTENSION_SERVER_NAME = 0
# A ClientHello with post-quantum key shares is ~2 KiB; anything past this is not a greeting.
MAX_HELLO_BYTES = 64 * 1024


class NotTls(Exception):
    """The bytes are not a TLS ClientHello (or not a complete, well-formed one)."""


class Reader(Protocol):
    async def readexactly(self, size: int) -> bytes: ...


async def read_client_hello(reader: Reader) -> tuple[bytes, str | None]:
    """Read whole TLS records until the ClientHello is complete.

    Returns the raw bytes read (to forward unchanged) and the host name in its SNI extension
    (None when it has none).

    Raises:
        NotTls: the stream does not start with a ClientHello.
    """
    raw = bytearray()
    body = bytearray()  # the handshake messages, reassembled across records
    while True:
        header = await _exactly(reader, 5)
        raw += header
        if header[0] != RECORD_HANDSHAKE or header[1] != 3:
            raise NotTls("the connection did not start with a TLS handshake")
        length = int.from_bytes(header[3:5], "big")
        fragment = await _exactly(reader, length)
        raw += fragment
        body += fragment
        if len(raw) > MAX_HELLO_BYTES:
            raise NotTls("the TLS ClientHello is too large")
        if len(body) >= 4:
            if body[0] != HANDSHAKE_CLIENT_HELLO:
                raise NotTls("the first TLS handshake message is not a ClientHello")
            size = int.from_bytes(body[1:4], "big")
            if len(body) >= 4 + size:
                return bytes(raw), server_name(bytes(body[4 : 4 + size]))


async def _exactly(reader: Reader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise NotTls("the connection ended inside the TLS ClientHello") from None


def server_name(hello: bytes) -> str | None:
    """The host_name of a ClientHello body's server_name extension.

    Raises:
        NotTls: the body is malformed.
    """
    try:
        at = 2 + 32  # client_version, random
        at += 1 + hello[at]  # session_id
        at += 2 + int.from_bytes(hello[at : at + 2], "big")  # cipher_suites
        at += 1 + hello[at]  # compression_methods
        if at == len(hello):
            return None  # no extensions
        end = at + 2 + int.from_bytes(hello[at : at + 2], "big")
        at += 2
        if end > len(hello):
            raise NotTls("the ClientHello's extensions run past its end")
        while at + 4 <= end:
            kind = int.from_bytes(hello[at : at + 2], "big")
            size = int.from_bytes(hello[at + 2 : at + 4], "big")
            data = hello[at + 4 : at + 4 + size]
            at += 4 + size
            if kind != EXTENSION_SERVER_NAME:
                continue
            names = data[2 : 2 + int.from_bytes(data[0:2], "big")]
            pos = 0
            while pos + 3 <= len(names):
                name_type = names[pos]
                name_len = int.from_bytes(names[pos + 1 : pos + 3], "big")
                name = names[pos + 3 : pos + 3 + name_len]
                pos += 3 + name_len
                if name_type == 0:
                    return name.decode("ascii")
            return None
        return None
    except (IndexError, UnicodeDecodeError):
        raise NotTls("the ClientHello is malformed") from None
