"""Chromium inside the desktop sandbox, reached by Playwright through the sandbox's exec streams.

The sandbox has no network, so the controller cannot open a TCP connection to a Chromium
running in it. Two transports, both over `Spawner.spawn` streams:

- `pipe` (the default): Chromium runs with `--remote-debugging-pipe` under a small adapter
  (`PIPE_ADAPTER`) whose stdin/stdout are one exec stream; here `PipeBridge` offers Playwright
  a one-use WebSocket on 127.0.0.1 with a random path. No DevTools port exists in the sandbox,
  so nothing else there (the task's bash) can drive the browser around the approval gate.
- `port`: Chromium opens `--remote-debugging-port` inside the sandbox; `CdpBridge` listens on an
  ephemeral port of 127.0.0.1 here and carries each accepted connection over a new exec stream
  into a tiny relay (`RELAY`) that connects to that port. Playwright's `connect_over_cdp` makes
  two connections (`/json/version`, then the WebSocket); after it has connected the bridge stops
  accepting. Any process in the sandbox can reach that port as well.

Over a stream, sandbox → here, bytes are framed as a 4-byte big-endian length and the payload (a
zero length is the end), because a `Process` offers only exact-length reads; here → sandbox they
go raw on stdin, and closing stdin ends the connection (and, for `pipe`, Chromium).

Chromium runs with `--no-sandbox`: its own sandbox needs user namespaces the hardened container
does not grant; the container is the confinement. It runs as the desktop user (uid 1001), not
the task's user, so a bash command's timeout (which signals every process of the task's user)
does not take the browser down with it.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from computer_use.browser.launch import CHROMIUM_FLAGS, BrowserFailed
from computer_use.screen.desktop import DESKTOP_USER
from sandbox import Process, Sandbox, SandboxError, Spawner

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

DEVTOOLS_PORT = 9222
START_TIMEOUT_S = 60.0
CHUNK_BYTES = 65536
MAX_FRAME_BYTES = 1 << 20
# The browser's own folder, made by its user (the desktop user), never one the task made first:
# the profile (0700) and the log (readable, for the error messages) live in it, and it is
# Chromium's HOME, so nothing the task planted in /tmp (a profile, a Python .pth file) is read.
BROWSER_HOME = "/tmp/.dispatch-browser"
STDERR_LOG = f"{BROWSER_HOME}/stderr.log"
PREPARE_HOME = (
    f"d={BROWSER_HOME}; "
    '{ mkdir -m 0755 "$d" 2>/dev/null || { [ ! -L "$d" ] && [ -O "$d" ]; }; }'
    f' || {{ echo "{BROWSER_HOME} exists and is not the browser user\'s" >&2; exit 1; }};'
    ' mkdir -p -m 0700 "$d/profile"'
)

# Runs in the sandbox (python3 is in the image): one TCP connection to 127.0.0.1:argv[1],
# relayed to stdin/stdout.
RELAY = r"""
import os, socket, struct, sys, threading
conn = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
out = sys.stdout.buffer
def down():
    while True:
        try:
            data = conn.recv(65536)
        except OSError:
            data = b""
        out.write(struct.pack(">I", len(data)) + data)
        out.flush()
        if not data:
            return
reader = threading.Thread(target=down)
reader.start()
while True:
    data = os.read(0, 65536)
    if not data:
        break
    conn.sendall(data)
try:
    conn.shutdown(socket.SHUT_WR)
except OSError:
    pass
reader.join()
"""


class CdpBridge:
    """A loopback listener whose connections are relayed into the sandbox to `port`."""

    def __init__(
        self,
        spawner: Spawner,
        port: int = DEVTOOLS_PORT,
        *,
        user: tuple[int, int] | None = DESKTOP_USER,
    ) -> None:
        self.spawner = spawner
        self.port = port
        self.user = user
        self._listener: socket.socket | None = None
        self._open: list[tuple[socket.socket, Process]] = []
        self._lock = threading.Lock()
        self.connections = 0

    def start(self) -> int:
        """Listen on 127.0.0.1; the port chosen."""
        listener = socket.create_server(("127.0.0.1", 0))
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return int(listener.getsockname()[1])

    def stop_accepting(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            # close() alone leaves the socket listening while accept() blocks on it in the
            # accepting thread; shutdown() stops it and wakes that thread.
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                listener.close()

    def close(self) -> None:
        self.stop_accepting()
        with self._lock:
            pairs, self._open = self._open, []
        for conn, process in pairs:
            with contextlib.suppress(OSError):
                conn.close()
            process.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                process = self.spawner.spawn(
                    # Isolated (-I): nothing from the task's folder or a planted user site.
                    ["python3", "-I", "-c", RELAY, str(self.port)],
                    user=self.user,
                )
            except SandboxError:
                conn.close()
                continue
            with self._lock:
                self._open.append((conn, process))
                self.connections += 1
            threading.Thread(target=self._up, args=(conn, process), daemon=True).start()
            threading.Thread(target=self._down, args=(conn, process), daemon=True).start()

    @staticmethod
    def _up(conn: socket.socket, process: Process) -> None:
        try:
            while data := conn.recv(CHUNK_BYTES):
                process.write(data)
        except (OSError, SandboxError):
            pass
        process.close()  # the relay sees end of input and closes its side

    @staticmethod
    def _down(conn: socket.socket, process: Process) -> None:
        try:
            while True:
                (size,) = struct.unpack(">I", process.read_exactly(4))
                if size == 0 or size > MAX_FRAME_BYTES:
                    break
                conn.sendall(process.read_exactly(size))
        except (OSError, SandboxError, struct.error):
            pass
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_WR)


# Runs in the sandbox: starts Chromium (argv[2:]) with its DevTools pipe on fds 3 (commands in)
# and 4 (replies out), copies stdin to fd 3 and fd 4 to stdout in length-prefixed frames. When
# stdin ends (the controller closed the stream, or died) Chromium is stopped.
PIPE_ADAPTER = r"""
import os, signal, struct, sys, threading, time
to_r, to_w = os.pipe()
from_r, from_w = os.pipe()
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
pid = os.fork()
if pid == 0:
    high_in, high_out = os.dup(to_r), os.dup(from_w)
    os.dup2(high_in, 100); os.dup2(high_out, 101)
    os.dup2(100, 3); os.dup2(101, 4)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0); os.dup2(null, 1); os.dup2(log, 2)
    os.closerange(5, 4096)
    os.execvp(sys.argv[2], sys.argv[2:])
os.close(to_r); os.close(from_w)
out = sys.stdout.buffer
def down():
    while True:
        data = os.read(from_r, 65536)
        out.write(struct.pack(">I", len(data)) + data)
        out.flush()
        if not data:
            return
threading.Thread(target=down, daemon=True).start()
while True:
    data = os.read(0, 65536)
    if not data:
        break
    os.write(to_w, data)
os.close(to_w)
os.kill(pid, signal.SIGTERM)
for _ in range(50):
    if os.waitpid(pid, os.WNOHANG)[0]:
        break
    time.sleep(0.1)
else:
    os.kill(pid, signal.SIGKILL)
"""


class PipeBridge:
    """A one-use WebSocket endpoint on 127.0.0.1 whose messages go to Chromium's DevTools pipe.

    The path carries a random token and only the first connection that names it is served, so
    another local process can neither guess nor share the controller's connection.
    """

    def __init__(self, process: Process) -> None:
        self.process = process
        self.token = secrets.token_urlsafe(24)
        self._server: Any = None
        self._served = False
        self._lock = threading.Lock()

    def start(self) -> str:
        """Listen; the `ws://` URL Playwright connects to."""
        from websockets.sync.server import serve

        self._server = serve(
            self._serve, "127.0.0.1", 0, max_size=None, compression=None, ping_interval=None
        )
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        port = self._server.socket.getsockname()[1]
        return f"ws://127.0.0.1:{port}/devtools/browser/{self.token}"

    def _serve(self, connection: Any) -> None:
        with self._lock:
            first, self._served = not self._served, True
        if not first or connection.request.path != f"/devtools/browser/{self.token}":
            connection.close(code=1008, reason="not this browser's client")
            return
        threading.Thread(target=self._down, args=(connection,), daemon=True).start()
        try:
            for message in connection:
                data = message.encode() if isinstance(message, str) else bytes(message)
                self.process.write(data + b"\0")
        except SandboxError:
            pass
        self.process.close()

    def _down(self, connection: Any) -> None:
        buffer = bytearray()
        try:
            while True:
                (size,) = struct.unpack(">I", self.process.read_exactly(4))
                if size == 0 or size > MAX_FRAME_BYTES:
                    break
                buffer += self.process.read_exactly(size)
                while (end := buffer.find(b"\0")) >= 0:
                    connection.send(bytes(buffer[:end]).decode())
                    del buffer[: end + 1]
        except Exception:  # the stream or the socket ended; either way the session is over
            pass
        with contextlib.suppress(Exception):
            connection.close()

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
        self.process.close()


@dataclass
class SandboxChromium:
    """Chromium started headless in a desktop sandbox, reached from here.

    `transport="pipe"` (the default) runs it with `--remote-debugging-pipe` under a small
    adapter on one exec stream: no DevTools port exists in the sandbox, so the task's own
    commands cannot drive the browser past the approval gate. `transport="port"` opens
    `--remote-debugging-port` inside the sandbox and relays TCP over `CdpBridge`; any process in
    the sandbox (the task's bash included) can then connect to that port too.
    """

    box: Sandbox
    user: tuple[int, int] | None = DESKTOP_USER
    transport: Literal["pipe", "port"] = "pipe"
    port: int = DEVTOOLS_PORT
    start_timeout_s: float = START_TIMEOUT_S
    extra_args: tuple[str, ...] = ()
    _chromium: Process | None = field(default=None, init=False, repr=False)
    _pid: str | None = field(default=None, init=False, repr=False)
    _bridge: CdpBridge | None = field(default=None, init=False, repr=False)
    _pipe: PipeBridge | None = field(default=None, init=False, repr=False)
    _browser: Browser | None = field(default=None, init=False, repr=False)
    bridge_port: int | None = field(default=None, init=False)

    def connect(self, playwright: Playwright) -> Browser:
        from playwright.sync_api import Error as PlaywrightError

        if not isinstance(self.box, Spawner):
            raise BrowserFailed(
                f"the {type(self.box).__name__} backend cannot run a browser; "
                "use the docker backend"
            )
        spawner: Spawner = self.box
        flags = [
            "--headless=new",
            "--no-sandbox",
            f"--user-data-dir={BROWSER_HOME}/profile",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            *CHROMIUM_FLAGS,
            *self.extra_args,
        ]
        if self.transport == "pipe":
            command = ["chromium", "--remote-debugging-pipe", *flags, "about:blank"]
            self._chromium = spawner.spawn(
                [
                    "sh",
                    "-c",
                    f'{PREPARE_HOME}; exec env HOME="$d" python3 -I -c "$0" "$@"',
                    PIPE_ADAPTER,
                    STDERR_LOG,
                    *command,
                ],
                user=self.user,
            )
            self._pipe = PipeBridge(self._chromium)
            endpoint = self._pipe.start()
        else:
            endpoint = self._start_with_port(spawner, flags)
        try:
            self._browser = playwright.chromium.connect_over_cdp(
                endpoint, timeout=self.start_timeout_s * 1000
            )
        except PlaywrightError as exc:
            raise BrowserFailed(
                f"could not reach Chromium in the sandbox: {str(exc).strip()[:300]}"
                f"{self._log_tail()}"
            ) from None
        finally:
            if self._bridge is not None:
                self._bridge.stop_accepting()
        return self._browser

    def _start_with_port(self, spawner: Spawner, flags: list[str]) -> str:
        command = [
            "chromium",
            f"--remote-debugging-port={self.port}",
            "--remote-debugging-address=127.0.0.1",
            *flags,
            "about:blank",
        ]
        # `echo $$` then `exec`: the pid of Chromium itself, so close() can stop exactly it. Its
        # output goes to a file: nobody reads the stream, and a full pipe would stall it.
        script = f'{PREPARE_HOME}; echo "$$"; exec env HOME="$d" "$@" >/dev/null 2>{STDERR_LOG}'
        self._chromium = spawner.spawn(["sh", "-c", script, "sh", *command], user=self.user)
        try:
            self._pid = self._chromium.read_line().decode().strip()
        except SandboxError as exc:
            raise BrowserFailed(f"Chromium did not start in the sandbox: {exc}") from None
        self._wait_for_devtools()
        self._bridge = CdpBridge(spawner, self.port, user=self.user)
        self.bridge_port = self._bridge.start()
        return f"http://127.0.0.1:{self.bridge_port}"

    def _log_tail(self) -> str:
        with contextlib.suppress(SandboxError):
            log = self.box.read_file(Path(STDERR_LOG)).decode(errors="replace").strip()
            if log:
                return f" (Chromium said: {log[-300:]})"
        return ""

    def _wait_for_devtools(self) -> None:
        probe = ["curl", "-sf", "--max-time", "2", f"http://127.0.0.1:{self.port}/json/version"]
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            # No exec timeout: one would signal every process of the sandbox user.
            if self.box.exec(probe).ok:
                return
            if time.monotonic() > deadline:
                raise BrowserFailed(
                    f"Chromium in the sandbox did not open its DevTools port within "
                    f"{self.start_timeout_s:g} s{self._log_tail()}"
                )
            time.sleep(0.2)

    def close(self) -> None:
        browser, self._browser = self._browser, None
        if browser is not None:
            with contextlib.suppress(Exception):
                browser.new_browser_cdp_session().send("Browser.close")
            with contextlib.suppress(Exception):
                browser.close()
        bridge, self._bridge = self._bridge, None
        if bridge is not None:
            bridge.close()
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            pipe.close()  # the adapter sees end of input and stops Chromium
        pid, self._pid = self._pid, None
        if pid and pid.isdigit():
            # As the user Chromium runs as; harmless if it has already gone.
            with contextlib.suppress(SandboxError):
                self._kill(pid)
        chromium, self._chromium = self._chromium, None
        if chromium is not None:
            chromium.close()

    def _kill(self, pid: str) -> None:
        if self.user is None or not isinstance(self.box, Spawner):
            self.box.exec(["kill", pid])
            return
        killer = self.box.spawn(["sh", "-c", f"kill {pid} 2>/dev/null; echo done"], user=self.user)
        with contextlib.suppress(SandboxError):
            killer.read_line()
        killer.close()
