"""The screen of a desktop sandbox: Xvfb and a window manager in the container, driven from here.

`SandboxDesktop` starts the virtual screen inside a sandbox built from the desktop image and
attaches to its screen agent (`images/desktop/screen-agent`) over an exec stream. Capturing
and input go through that agent, so the controller never speaks the X protocol to a server
the sandbox controls: what comes back is a small JSON header and raw pixels.

The screen runs as the image's `desktop` user (uid 1001), not as the task's user, so a task's
timeout (which signals every process of the task's user) leaves it standing.

The X server admits only holders of a cookie. The screen's own clients (the window manager,
the screen agent, the agent's Chromium) hold a trusted one, readable by the desktop user alone.
The task's user gets an *untrusted* one (the X SECURITY extension, as `ssh -X` uses it): its
programs can open and draw their own windows, which the agent then drives, but cannot read the
screen, synthesise input (no XTEST) or send events to the screen's own windows. Without that, a
shell step the policy allows (`bash` over read-only folders) could click and type on the screen
with xdotool and so act without the approval every screen action needs.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

from computer_use.screen.base import Encoding, Frame, make_frame
from computer_use.screen.scaling import ImageLimits, Region, Size
from computer_use.screen.x11 import X11Error, X11Screen
from sandbox import Process, Sandbox, SandboxError, Spawner

DESKTOP_USER = (1001, 1001)
DISPLAY = ":0"
START_TIMEOUT_S = 30.0
XVFB_LOG = "/tmp/.dispatch-xvfb.log"
OPENBOX_LOG = "/tmp/.dispatch-openbox.log"
# Made by the desktop user at start (mkdir fails, and the desktop with it, if anything is there):
# 0711, so the task's user reaches TASK_XAUTHORITY by name and nothing else in it.
X11_DIR = "/tmp/.dispatch-x11"
XAUTHORITY = f"{X11_DIR}/trusted"  # 0600, the desktop user's
TASK_XAUTHORITY = f"{X11_DIR}/task"  # 0644, untrusted; the image's XAUTHORITY for the task's user
# Run as the desktop user: a trusted cookie (passed to xauth on stdin, never in a command line
# another user could read in /proc), Xvfb admitting only cookie holders (-noreset: a server reset
# when its last client leaves would drop the untrusted cookie), openbox, then the task's
# untrusted cookie; "ready" once windows can be opened and are managed. Daemons log to files:
# nobody reads their streams, and a window manager blocked on a full pipe stops mapping windows.
X_SERVER = """set -eu
umask 077
mkdir -m 0711 {dir}
cookie=$(python3 -c 'import secrets; print(secrets.token_hex(16))')
echo "add {display} . $cookie" | xauth -q -f {auth} source -
export DISPLAY={display} XAUTHORITY={auth} HOME=/tmp
Xvfb {display} -screen 0 {width}x{height}x24 -nolisten tcp -noreset -auth {auth} \\
  +extension SECURITY >{xvfb_log} 2>&1 &
end=$(($(date +%s) + {timeout_s}))
until xdpyinfo >/dev/null 2>&1; do
  [ "$(date +%s)" -lt $end ] || {{ echo "X server"; exit 1; }}; sleep 0.05
done
openbox >{openbox_log} 2>&1 &
# Windows appear once the window manager takes their map requests: wait for its check window.
until xprop -root _NET_SUPPORTING_WM_CHECK | grep -q window; do
  [ "$(date +%s)" -lt $end ] || {{ echo "window manager"; exit 1; }}; sleep 0.05
done
xauth -q -f {task}.new generate {display} . untrusted timeout 0
chmod 0644 {task}.new
mv {task}.new {task}
echo ready
wait
"""
MAX_PIXELS = 8192 * 8192


class DesktopFailed(SandboxError):
    """The desktop sandbox's screen could not be started or stopped answering."""


@dataclass(frozen=True)
class ScreenSize:
    width: int
    height: int


class SandboxDesktop:
    """A virtual screen in a running desktop sandbox."""

    def __init__(self, box: Sandbox, *, width: int = 1280, height: int = 800) -> None:
        if not isinstance(box, Spawner):
            raise DesktopFailed(
                f"the {type(box).__name__} backend cannot run a desktop; use the docker backend"
            )
        self.box = box
        self.spawner: Spawner = box
        self.requested = ScreenSize(width, height)
        self._processes: list[Process] = []
        self._agent: Process | None = None
        self._lock = threading.Lock()
        self.size = self.requested

    def start(self, timeout_s: float = START_TIMEOUT_S) -> ScreenSize:
        """Start Xvfb and openbox as the desktop user and attach to the screen agent.

        Raises:
            DesktopFailed: the screen did not come up in time (the message has Xvfb's words).
        """
        width, height = self.requested.width, self.requested.height
        script = X_SERVER.format(
            dir=X11_DIR,
            display=DISPLAY,
            auth=XAUTHORITY,
            task=TASK_XAUTHORITY,
            width=width,
            height=height,
            xvfb_log=XVFB_LOG,
            openbox_log=OPENBOX_LOG,
            timeout_s=max(1, round(timeout_s)),
        )
        server = self.spawner.spawn(["sh", "-c", script], user=DESKTOP_USER)
        self._processes.append(server)
        try:
            said = server.read_line().decode(errors="replace").strip()
        except SandboxError:
            said = ""
        if said != "ready":
            logs = self.box.exec(
                ["sh", "-c", f"tail -c 300 {XVFB_LOG} {OPENBOX_LOG} 2>&1"], timeout_s=10
            )
            what = f"its {said}" if said else "its X server"
            raise DesktopFailed(
                f"the desktop did not start ({what} was not ready within {timeout_s:g} s): "
                + logs.stdout.decode(errors="replace").strip()
            )
        self._agent = self.spawner.spawn(
            ["env", f"DISPLAY={DISPLAY}", f"XAUTHORITY={XAUTHORITY}", "dispatch-screen-agent"],
            user=DESKTOP_USER,
        )
        header, _ = self._ask({"op": "size"})
        self.size = ScreenSize(int(header["width"]), int(header["height"]))
        return self.size

    def _ask(self, request: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        agent = self._agent
        if agent is None:
            raise DesktopFailed("the desktop is not started; call start() first")
        with self._lock:
            agent.write(json.dumps(request).encode() + b"\n")
            try:
                header = json.loads(agent.read_line())
            except ValueError as exc:
                raise DesktopFailed(f"the screen agent answered nonsense ({exc})") from None
            size = header.get("bytes", 0)
            if not isinstance(size, int) or not 0 <= size <= MAX_PIXELS * 4:
                raise DesktopFailed(f"the screen agent announced {size!r} bytes")
            payload = agent.read_exactly(size) if size else b""
        if not header.get("ok") and "error" in header:
            raise DesktopFailed(f"the screen agent failed: {header['error']}")
        return header, payload

    def capture_raw(self) -> tuple[dict[str, Any], bytes]:
        """The whole screen's pixels (BGRX, rows top to bottom) and the agent's header."""
        header, pixels = self._ask({"op": "capture"})
        width, height = int(header["width"]), int(header["height"])
        if header.get("format") != "BGRX" or len(pixels) != width * height * 4:
            raise DesktopFailed("the screen agent sent an image of the wrong size")
        return header, pixels

    def capture(self) -> Image.Image:
        """The whole screen at full resolution (RGB)."""
        header, pixels = self.capture_raw()
        size = (int(header["width"]), int(header["height"]))
        return Image.frombuffer("RGB", size, pixels, "raw", "BGRX", 0, 1)

    def xdotool(self, args: Sequence[str | int]) -> str:
        """Run xdotool against the desktop; its stdout.

        Raises:
            DesktopFailed: xdotool failed (its message included).
        """
        header, _ = self._ask({"op": "xdotool", "args": [str(a) for a in args]})
        if header.get("code") != 0:
            raise DesktopFailed(
                f"xdotool {' '.join(map(str, args))} failed: {header.get('stderr')}"
            )
        return str(header.get("stdout", ""))

    def close(self) -> None:
        """Detach; the screen itself ends with its sandbox."""
        agent, self._agent = self._agent, None
        if agent is not None:
            with contextlib.suppress(SandboxError):
                agent.write(b'{"op": "exit"}\n')
            agent.close()
        for process in self._processes:
            process.close()
        self._processes.clear()


class SandboxScreen(X11Screen):
    """The computer toolset's `Screen` on a desktop sandbox: the X11 driver's input (xdotool
    commands) and capture, both carried out by the screen agent inside the sandbox."""

    def __init__(
        self,
        desktop: SandboxDesktop,
        *,
        limits: ImageLimits | None = None,
        encoding: Encoding | None = None,
    ) -> None:
        # Not X11Screen.__init__: nothing here opens a display or runs xdotool on the host.
        self.desktop = desktop
        self.display = f"the desktop sandbox {desktop.box.id[:12]}"
        self.limits = limits or ImageLimits()
        self.encoding = encoding or Encoding()

    def size(self) -> Size:
        return Size(self.desktop.size.width, self.desktop.size.height)

    def capture(self) -> Frame:
        header, pixels = self.desktop.capture_raw()
        taken = time.monotonic()
        size = Size(int(header["width"]), int(header["height"]))
        return make_frame(
            pixels, size, limits=self.limits, encoding=self.encoding, captured_at_s=taken
        )

    def grab(self, region: Region) -> Image.Image:
        return self.desktop.capture().crop((region.x0, region.y0, region.x1, region.y1))

    def _run(self, *args: str) -> str:
        try:
            return self.desktop.xdotool(list(args))
        except DesktopFailed as exc:
            raise X11Error(str(exc)) from exc

    def close(self) -> None:
        self.desktop.close()
