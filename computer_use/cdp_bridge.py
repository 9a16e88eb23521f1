"""Chromium inside the desktop sandbox, reached by Playwright through the sandbox's exec streams.

The sandbox has no network, so the controller cannot open a TCP connection to the DevTools port
of a Chromium running in it. `CdpBridge` listens on an ephemeral port of 127.0.0.1 here and
carries each accepted connection over a new exec stream (`Spawner.spawn`) into a tiny relay in
the sandbox that connects to Chromium's port there. Playwright's `connect_over_cdp` makes two
connections (`/json/version`, then the WebSocket); after it has connected the bridge stops
accepting, so no other local process can reach the browser through it.

Over the stream, sandbox → here, the relay frames its bytes as a 4-byte big-endian length and
the payload (a zero length is the end), because a `Process` offers only exact-length reads; here
→ sandbox the bytes go raw on stdin, and closing stdin ends the connection.

Chromium runs with `--no-sandbox`: its own sandbox needs user namespaces the hardened container
does not grant; the container is the confinement. It runs as the desktop user (uid 1001), not
the task's user, so a bash command's timeout (which signals every process of the task's user)
does not take the browser down with it.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from computer_use.browser import CHROMIUM_FLAGS, BrowserFailed
from computer_use.desktop import DESKTOP_USER
from sandbox import Process, Sandbox, SandboxError, Spawner

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Playwright

DEVTOOLS_PORT = 9222
START_TIMEOUT_S = 60.0
CHUNK_BYTES = 65536
MAX_FRAME_BYTES = 1 << 20
STDERR_LOG = "/tmp/chromium-stderr.log"

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
                    ["python3", "-c", RELAY, str(self.port)], user=self.user
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


@dataclass
class SandboxChromium:
    """Chromium started headless in a desktop sandbox and connected over `CdpBridge`."""

    box: Sandbox
    user: tuple[int, int] | None = DESKTOP_USER
    port: int = DEVTOOLS_PORT
    start_timeout_s: float = START_TIMEOUT_S
    extra_args: tuple[str, ...] = ()
    _chromium: Process | None = field(default=None, init=False, repr=False)
    _pid: str | None = field(default=None, init=False, repr=False)
    _bridge: CdpBridge | None = field(default=None, init=False, repr=False)
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
        command = [
            "chromium",
            "--headless=new",
            f"--remote-debugging-port={self.port}",
            "--remote-debugging-address=127.0.0.1",
            "--no-sandbox",
            "--user-data-dir=/tmp/chromium",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            *CHROMIUM_FLAGS,
            *self.extra_args,
            "about:blank",
        ]
        # `echo $$` then `exec`: the pid of Chromium itself, so close() can stop exactly it. Its
        # output goes to a file: nobody reads the stream, and a full pipe would stall it.
        script = f'echo "$$"; exec env HOME=/tmp "$@" >/dev/null 2>{STDERR_LOG}'
        self._chromium = spawner.spawn(["sh", "-c", script, "sh", *command], user=self.user)
        try:
            self._pid = self._chromium.read_line().decode().strip()
        except SandboxError as exc:
            raise BrowserFailed(f"Chromium did not start in the sandbox: {exc}") from None
        self._wait_for_devtools()
        self._bridge = CdpBridge(spawner, self.port, user=self.user)
        self.bridge_port = self._bridge.start()
        try:
            self._browser = playwright.chromium.connect_over_cdp(
                f"http://127.0.0.1:{self.bridge_port}", timeout=self.start_timeout_s * 1000
            )
        except PlaywrightError as exc:
            raise BrowserFailed(
                f"could not reach Chromium in the sandbox over the bridge: {exc}"
            ) from None
        finally:
            self._bridge.stop_accepting()
        return self._browser

    def _wait_for_devtools(self) -> None:
        probe = ["curl", "-sf", "--max-time", "2", f"http://127.0.0.1:{self.port}/json/version"]
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            # No exec timeout: one would signal every process of the sandbox user.
            if self.box.exec(probe).ok:
                return
            if time.monotonic() > deadline:
                detail = ""
                with contextlib.suppress(SandboxError):
                    log = self.box.read_file(Path(STDERR_LOG))
                    detail = log.decode(errors="replace").strip()[-300:]
                raise BrowserFailed(
                    f"Chromium in the sandbox did not open its DevTools port within "
                    f"{self.start_timeout_s:g} s" + (f": {detail}" if detail else "")
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
