"""A scripted fake of the Anthropic Messages API: a real HTTP server on loopback for tests.

Tests run the real `anthropic` client and its tool runner against it (`base_url=server.url` or
`ANTHROPIC_BASE_URL`), so the agent loop is exercised end to end without the network.

The server replays a *script*: one entry per model reply, consumed in order. An entry is

- a `Reply` (text and/or `ToolCall`s, a stop reason, usage tokens, an optional delay),
- a callable `(ModelRequest) -> Reply` that sees the whole conversation the model would see (the
  newest `tool_result` screenshots included) — `click_largest_region` computes a click target from
  the newest screenshot this way, or
- a `Fault`: HTTP 429 with `retry-after`, 529 overloaded, 500, 401, or a connection reset
  (mid-stream when the request streams, before any response otherwise). A fault consumes its
  entry, so `[Fault.overloaded(), Reply(...)]` makes the client's retry get the reply.

What it speaks, as the SDK (checked against `anthropic` 2.14.0) expects it: `POST /v1/messages`
answered with one JSON message or, with `"stream": true`, the server-sent events `message_start`,
`content_block_start`, `content_block_delta` (`text_delta`, `input_json_delta`),
`content_block_stop`, `message_delta` (stop reason, output tokens), `message_stop`; errors in the
API's shape `{"type": "error", "error": {"type", "message"}, "request_id"}` with a `request-id`
header. Message threads (beta `message-threads-2026-08-12`) are held like the API holds them: a
`create` starts one, a `continue` sends only the new messages and is answered from the stored
history; with `threads=False` every threaded request gets the `thread_unsupported_request` 400 that
makes the SDK resend the whole history unthreaded.

Every request is recorded (`requests`) with its headers, body and the reconstructed conversation.
The API key is checked (`x-api-key` or `Authorization: Bearer`); a wrong one gets the API's 401 and
consumes nothing. When the script runs out the server answers 500 naming the script, tells the
client not to retry, and remembers the failure so `assert_script_done()` (run by the pytest
fixture at teardown) fails the test even if the agent swallowed the error — it never hangs.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import json
import socket
import struct
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from computer_use.testing.script import (
    FAULTS,
    FakeModelError,
    Fault,
    ModelRequest,
    Reply,
    ToolCall,
    Turn,
    centre_of_largest_region,
    click_largest_region,
    newest_screenshot,
)
from computer_use.testing.wire import error_body, events, unpaired_tool_use

__all__ = [
    "MESSAGE_THREADS_BETA",
    "FakeModel",
    "FakeModelError",
    "Fault",
    "ModelRequest",
    "RecordedRequest",
    "Reply",
    "ToolCall",
    "Turn",
    "centre_of_largest_region",
    "click_largest_region",
    "newest_screenshot",
]

MESSAGE_THREADS_BETA = "message-threads-2026-08-12"
# The request fields a thread keeps from its `create`; the API refuses them on a `continue`.
_CREATE_ONLY_FIELDS = ("system", "tools")


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request as received (header names lower-cased), and the status it got."""

    method: str
    path: str
    headers: Mapping[str, str]
    body: Mapping[str, Any] | None
    messages: Sequence[Mapping[str, Any]]
    status: int

    @property
    def thread(self) -> Mapping[str, Any] | None:
        return self.body.get("thread") if self.body else None


@dataclass
class _Thread:
    system: Any
    tools: list[Any]
    history: list[dict[str, Any]]  # every message up to and including the stored reply


class _Abort(Exception):
    """The handler reset the connection: write nothing more."""


class FakeModel:
    """The server: `with FakeModel(script) as model:` or `start()`/`stop()`; `url` to connect."""

    def __init__(
        self,
        script: Sequence[Turn] = (),
        *,
        name: str = "script",
        api_key: str = "test-key",
        model: str = "claude-fake",
        threads: bool = True,
    ) -> None:
        self.name = name
        self.api_key = api_key
        self.model = model
        self.threads = threads
        self.requests: list[RecordedRequest] = []
        self.failures: list[str] = []
        self._script: deque[Turn] = deque(script)
        self._lock = threading.Lock()
        self._threads: dict[str, _Thread] = {}
        self._continued: set[str] = set()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._serve_thread: threading.Thread | None = None
        self._stopping = threading.Event()

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> FakeModel:
        fake = self

        class Handler(_Handler):
            model = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        # A handler sleeping through a slow reply must not hold stop() up; `_stopping` wakes it.
        server.block_on_close = False
        self._stopping.clear()
        self._server = server
        self._serve_thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._serve_thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._serve_thread is not None:
            self._serve_thread.join(timeout=10)
            self._serve_thread = None

    def __enter__(self) -> FakeModel:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise FakeModelError("FakeModel is not started: call start() or use it in a with block")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def environ(self) -> dict[str, str]:
        """The variables that point a real client (or a `dispatch serve` process) at this server."""
        return {"ANTHROPIC_BASE_URL": self.url, "ANTHROPIC_API_KEY": self.api_key}

    def forget_threads(self) -> None:
        """Lose every stored thread, as when threads expire: a continue gets `thread_not_found`."""
        with self._lock:
            self._threads.clear()

    # -- the script ------------------------------------------------------------------------------

    def add(self, *turns: Turn) -> None:
        """Append turns to the script (a test may script as it goes)."""
        with self._lock:
            self._script.extend(turns)

    def add_next(self, *turns: Turn) -> None:
        """Put turns before the rest of the script: a turn that must look again re-queues itself."""
        with self._lock:
            self._script.extendleft(reversed(turns))

    @property
    def remaining(self) -> int:
        with self._lock:
            return len(self._script)

    def assert_script_done(self) -> None:
        """Fail if a request found the script empty, or if turns were never asked for."""
        if self.failures:
            raise FakeModelError("; ".join(self.failures))
        if self.remaining:
            raise FakeModelError(
                f"FakeModel script {self.name!r}: {self.remaining} turn(s) never requested "
                f"after {len(self.requests)} request(s)"
            )

    def message_requests(self) -> list[RecordedRequest]:
        """The requests to `/v1/messages` that were answered with a reply."""
        return [r for r in self.requests if r.path == "/v1/messages" and r.status == 200]

    # -- request handling (called from the handler's thread) ---------------------------------------

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):06d}"

    def _take_turn(self) -> Turn | None:
        with self._lock:
            return self._script.popleft() if self._script else None

    def _record(self, handler: _Handler, body: Any, messages: Sequence[Any], status: int) -> None:
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    method=handler.command,
                    path=handler.path,
                    headers={k.lower(): v for k, v in handler.headers.items()},
                    body=body if isinstance(body, dict) else None,
                    messages=list(messages),
                    status=status,
                )
            )


class _Handler(BaseHTTPRequestHandler):
    model: FakeModel
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, delayed ACKs add ~40 ms a reply.
    disable_nagle_algorithm = True
    server_version = "FakeModel/1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the requests are recorded instead

    def finish(self) -> None:
        with contextlib.suppress(OSError):  # the connection was reset on purpose
            super().finish()

    def do_GET(self) -> None:
        self._send_error(404, "not_found_error", f"Not found: GET {self.path}", body=None)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        try:
            self._handle_post(body)
        except _Abort:
            self.close_connection = True

    def _handle_post(self, body: Any) -> None:
        fake = self.model
        if self.path.split("?")[0] != "/v1/messages":
            self._send_error(404, "not_found_error", f"Not found: POST {self.path}", body=body)
            return
        if not self._key_ok():
            self._send_error(401, "authentication_error", "invalid x-api-key", body=body)
            return
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            self._send_error(400, "invalid_request_error", "messages: Field required", body=body)
            return
        for required in ("model", "max_tokens"):
            if required not in body:
                self._send_error(
                    400, "invalid_request_error", f"{required}: Field required", body=body
                )
                return
        conversation = self._conversation(body)
        if conversation is None:
            return  # an error was sent
        thread_source, messages, system, tools = conversation
        problem = unpaired_tool_use(messages)
        if problem is not None:
            self._send_error(400, "invalid_request_error", problem, body=body, messages=messages)
            return

        index = len(fake.requests)
        turn = fake._take_turn()
        if turn is None:
            message = (
                f"FakeModel script {fake.name!r} has no turn left for request #{index + 1} "
                f"({len(fake.message_requests())} replies given)"
            )
            fake.failures.append(message)
            # x-should-retry: false, so the client fails now instead of retrying into the same wall.
            self._send_error(500, "api_error", message, body=body, retry=False, messages=messages)
            return
        if isinstance(turn, Fault):
            self._send_fault(turn, body, messages)
            return
        request = ModelRequest(
            index=index,
            body=copy.deepcopy(body),
            messages=copy.deepcopy(messages),
            system=system,
            tools=tools,
        )
        try:
            reply = turn if isinstance(turn, Reply) else turn(request)
        except (
            Exception
        ) as exc:  # a scripted callable failed: say so, never leave the client hanging
            message = f"FakeModel script {fake.name!r}: turn #{index + 1} raised {exc!r}"
            fake.failures.append(message)
            self._send_error(500, "api_error", message, body=body, retry=False, messages=messages)
            return
        if not isinstance(reply, Reply):
            message = (
                f"FakeModel script {fake.name!r}: turn #{index + 1} returned {reply!r}, not a Reply"
            )
            fake.failures.append(message)
            self._send_error(500, "api_error", message, body=body, retry=False, messages=messages)
            return
        if reply.delay_s:
            fake._stopping.wait(reply.delay_s)
        message_json = self._message_json(reply)
        if thread_source is not None:
            self._store_thread(thread_source, messages, system, tools, message_json)
        fake._record(self, body, messages, 200)
        if body.get("stream"):
            self._stream(message_json, reset=False)
        else:
            self._send_json(200, message_json)

    # -- threads ---------------------------------------------------------------------------------

    def _conversation(
        self, body: dict[str, Any]
    ) -> tuple[str | None, list[Any], Any, list[Any]] | None:
        """(where to store the reply, full messages, system, tools), or None after an error."""
        fake = self.model
        thread = body.get("thread")
        messages = list(body["messages"])
        if thread is None:
            return None, messages, body.get("system"), list(body.get("tools") or [])
        betas = [b.strip() for b in self.headers.get("anthropic-beta", "").split(",")]
        if not fake.threads:
            self._send_error(
                400,
                "invalid_request_error",
                "This request cannot be threaded: resend it without `thread`.",
                body=body,
                error_code="thread_unsupported_request",
                unsupported=["thread"],
            )
            return None
        if MESSAGE_THREADS_BETA not in betas:
            self._send_error(
                400,
                "invalid_request_error",
                f"thread: requires the beta header `anthropic-beta: {MESSAGE_THREADS_BETA}`",
                body=body,
            )
            return None
        if thread.get("type") == "create":
            return "create", messages, body.get("system"), list(body.get("tools") or [])
        if thread.get("type") != "continue":
            self._send_error(
                400, "invalid_request_error", "thread.type: use create or continue", body=body
            )
            return None
        previous = str(thread.get("previous_message_id"))
        repeated = [f for f in _CREATE_ONLY_FIELDS if f in body]
        if repeated:
            self._send_error(
                400,
                "invalid_request_error",
                f"{repeated[0]}: not allowed with thread continue (the thread keeps it)",
                body=body,
            )
            return None
        with fake._lock:
            stored = fake._threads.get(previous)
            already = previous in fake._continued
        if stored is None:
            self._send_error(
                404,
                "not_found_error",
                f"thread: no message {previous}",
                body=body,
                error_code="thread_not_found",
            )
            return None
        if already:
            self._send_error(
                409,
                "invalid_request_error",
                f"thread: message {previous} was already continued",
                body=body,
                retry=False,
                error_code="thread_already_continued",
            )
            return None
        return previous, [*copy.deepcopy(stored.history), *messages], stored.system, stored.tools

    def _store_thread(
        self,
        source: str,
        messages: list[Any],
        system: Any,
        tools: list[Any],
        reply: dict[str, Any],
    ) -> None:
        fake = self.model
        history = [*messages, {"role": "assistant", "content": reply["content"]}]
        with fake._lock:
            if source != "create":
                fake._continued.add(source)
            fake._threads[reply["id"]] = _Thread(system=system, tools=tools, history=history)

    # -- responses -------------------------------------------------------------------------------

    def _key_ok(self) -> bool:
        key = self.headers.get("x-api-key")
        if key is None:
            auth = self.headers.get("authorization", "")
            key = auth[len("Bearer ") :] if auth.startswith("Bearer ") else None
        return key == self.model.api_key

    def _message_json(self, reply: Reply) -> dict[str, Any]:
        fake = self.model
        content: list[dict[str, Any]] = []
        if reply.text is not None:
            content.append({"type": "text", "text": reply.text})
        for call in reply.tool_calls:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call.id or fake._next_id("toolu"),
                "name": call.name,
                "input": dict(call.input),
            }
            if call.toolset is not None:
                block["toolset_name"] = call.toolset
            content.append(block)
        return {
            "id": fake._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": fake.model,
            "content": content,
            "stop_reason": reply.resolved_stop_reason(),
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.input_tokens,
                "output_tokens": reply.output_tokens,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }

    def _send_fault(self, fault: Fault, body: dict[str, Any], messages: list[Any]) -> None:
        if fault.delay_s:
            self.model._stopping.wait(fault.delay_s)
        if fault.kind == "reset":
            self.model._record(self, body, messages, 0)
            if body.get("stream"):
                self._stream(
                    self._message_json(Reply(text="This reply is cut off mid")), reset=True
                )
            self._reset()
        status, error_type, message = FAULTS[fault.kind]
        headers = {}
        if fault.retry_after_s is not None:
            headers["retry-after"] = f"{fault.retry_after_s:g}"
        self._send_error(status, error_type, message, body=body, headers=headers, messages=messages)

    def _send_error(
        self,
        status: int,
        error_type: str,
        message: str,
        *,
        body: Any,
        retry: bool | None = None,
        headers: Mapping[str, str] | None = None,
        messages: Sequence[Any] = (),
        **details: Any,
    ) -> None:
        request_id = self.model._next_id("req")
        self.model._record(self, body, messages, status)
        extra = dict(headers or {})
        if retry is not None:
            extra["x-should-retry"] = "true" if retry else "false"
        self._send_json(
            status, error_body(error_type, message, request_id, **details), extra, request_id
        )

    def _send_json(
        self,
        status: int,
        payload: Mapping[str, Any],
        headers: Mapping[str, str] | None = None,
        request_id: str | None = None,
    ) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("request-id", request_id or self.model._next_id("req"))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, message: dict[str, Any], *, reset: bool) -> None:
        """Send `message` as the API's server-sent events; with `reset`, stop half-way and reset."""
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("request-id", self.model._next_id("req"))
        # The stream ends when the connection does: no length is known up front.
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        for event in events(message):
            self._event(event)
            if reset and event["type"] == "content_block_delta":
                self.wfile.flush()
                return
        self.wfile.flush()

    def _event(self, event: Mapping[str, Any]) -> None:
        self.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())

    def _reset(self) -> None:
        # SO_LINGER 0 makes close() send a TCP RST: the client sees a reset, not a clean end.
        try:
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
        except OSError:
            pass
        raise _Abort
