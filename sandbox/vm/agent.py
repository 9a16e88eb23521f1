"""The host end of the exec agent's channel (images/vm/agent.py): framed JSON over a socket.

Each frame is a 4-byte big-endian length and a JSON object. One reader thread routes replies to
the request (or command) whose id they carry; when the VM goes away every waiter gets None.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import struct
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from sandbox.errors import SandboxError

CALL_TIMEOUT_S = 30.0


class AgentLink:
    """The host end of the exec agent's channel: one reader thread, replies routed by id."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._send_lock = threading.Lock()
        self._lock = threading.Lock()
        self._waiting: dict[int, queue.Queue[dict[str, Any] | None]] = {}
        self._next_id = 0
        self._hello: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read, name="dispatch-agent", daemon=True)
        self._reader.start()

    def wait_hello(self, timeout_s: float) -> None:
        try:
            hello = self._hello.get(timeout=timeout_s)
        except queue.Empty:
            raise SandboxError(f"the VM's agent did not answer within {timeout_s:g} s") from None
        if hello is None:
            raise SandboxError("the VM closed its agent channel while starting")

    def open(self) -> tuple[int, queue.Queue[dict[str, Any] | None]]:
        with self._lock:
            self._next_id += 1
            replies: queue.Queue[dict[str, Any] | None] = queue.Queue()
            if self.closed.is_set():
                replies.put(None)
            self._waiting[self._next_id] = replies
            return self._next_id, replies

    def forget(self, ident: int) -> None:
        with self._lock:
            self._waiting.pop(ident, None)

    def send(self, message: Mapping[str, Any]) -> None:
        body = json.dumps(message).encode()
        try:
            with self._send_lock:
                self._sock.sendall(struct.pack(">I", len(body)) + body)
        except OSError:
            self.close()

    def call(self, op: str, timeout_s: float = CALL_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        """Send a request and wait for its answer.

        Raises:
            SandboxError: the agent refused it, did not answer, or the VM went away.
        """
        ident, replies = self.open()
        try:
            self.send({"op": op, "id": ident, **fields})
            try:
                answer = replies.get(timeout=timeout_s)
            except queue.Empty:
                raise SandboxError(f"the VM's agent did not answer {op!r} in time") from None
        finally:
            self.forget(ident)
        if answer is None:
            raise SandboxError(f"the VM went away during {op!r}")
        if answer.get("ev") == "error":
            raise SandboxError(f"the VM's agent could not {op}: {answer.get('message')}")
        return answer

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        self._closed()

    def _closed(self) -> None:
        self.closed.set()
        self._hello.put(None)
        with self._lock:
            for replies in self._waiting.values():
                replies.put(None)

    def _read(self) -> None:
        try:
            while True:
                header = self._exactly(4)
                message = json.loads(self._exactly(struct.unpack(">I", header)[0]))
                if message.get("ev") == "hello":
                    self._hello.put(message)
                    continue
                with self._lock:
                    replies = self._waiting.get(message.get("id"))
                if replies is not None:
                    replies.put(message)
        except (OSError, ValueError, EOFError):
            pass
        self._closed()

    def _exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self._sock.recv(size - len(data))
            if not chunk:
                raise EOFError
            data += chunk
        return bytes(data)


def until_exit(
    replies: queue.Queue[dict[str, Any] | None],
) -> Iterator[dict[str, Any]]:
    while True:
        message = replies.get()
        if message is None:
            return
        yield message
        if message.get("ev") == "exit":
            return
