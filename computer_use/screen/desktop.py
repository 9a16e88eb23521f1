"""The screen of a desktop sandbox: Xvfb and a window manager in the container, driven from here.

`SandboxDesktop` starts the virtual screen inside a sandbox built from the desktop image and
attaches to its screen agent (`images/desktop/screen-agent`) over an exec stream. Capturing
and input go through that agent, so the controller never speaks the X protocol to a server
the sandbox controls: what comes back is a small JSON header and raw pixels.

The screen runs as the image's `desktop` user (uid 1001), not as the task's user, so a task's
timeout (which signals every process of the task's user) leaves it standing.

The task's user cannot connect to the X server at all. Nothing the task runs without an
approval (a `bash` step, a command) may change the screen the person judges, and any X client
can: even an untrusted one (the SECURITY extension) may lay an override-redirect window over
the others, grab the keyboard or warp the pointer. So the server listens on no TCP port; its
Unix socket is in a folder only the desktop user may enter; and it admits only holders of a
cookie kept in the desktop user's private home. It also keeps its socket in the abstract
namespace, which file modes do not guard but the cookie does: X clients (libxcb) try that name
before the socket's path, so a server that left it free would let the task bind it and receive
every click and key the agent sends (review 4). The start checks that the name is the server's
own. Every window on the screen is the desktop user's: the terminal the desktop starts with
(`TERMINAL`), and what the agent opens from it or from the window manager's menu, each
keystroke and click approved.
"""

from __future__ import annotations

import contextlib
import json
import shlex
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
# The group of terminals (a pty is 0620, owner and tty): a task in it could write into the
# screen's terminals.
TTY_GROUP = 5
DISPLAY = ":0"
START_TIMEOUT_S = 30.0
# Both made by the desktop user at start, 0700; mkdir fails (and the desktop with it) if the
# task made either first. HOME holds the cookie, the logs and every dot-file the screen's
# programs read (a shell's .bashrc, openbox's autostart): none of it the task's to plant.
HOME = "/tmp/.dispatch-desktop"
XAUTHORITY = f"{HOME}/.Xauthority"
XVFB_LOG = f"{HOME}/xvfb.log"
OPENBOX_LOG = f"{HOME}/openbox.log"
# The folder of the X server's socket, fixed by libxtrans; see X_SERVER.
SOCKET_DIR = "/tmp/.X11-unix"
# Run as the desktop user: a cookie (passed to xauth on stdin, never in a command line another
# user could read in /proc), Xvfb on its Unix sockets alone (-noreset: one server for the
# sandbox's life), the check that the abstract socket is Xvfb's (ABSTRACT_IS_OURS), openbox,
# and the terminal; "ready" once windows
# can be opened and are managed, else what failed and the logs' last words, on one line.
# Daemons log to files: nobody reads their streams, and a window manager blocked on a full pipe
# stops mapping windows.
X_SERVER = """set -eu
umask 077
fail() {{
  echo "$1: $(tail -q -c 200 {xvfb_log} {openbox_log} 2>/dev/null | tr -s '\\n' ' ')"; exit 1
}}
mkdir -m 0700 {home} {sockets} 2>/dev/null || fail "its folders ({home}, {sockets} already exist)"
cd {home}
export DISPLAY={display} XAUTHORITY={auth} HOME={home}
cookie=$(python3 -I -c 'import secrets; print(secrets.token_hex(16))')
echo "add {display} . $cookie" | xauth -q -f {auth} source -
Xvfb {display} -screen 0 {width}x{height}x24 -nolisten tcp -noreset \\
  -auth {auth} >{xvfb_log} 2>&1 &
xvfb=$!
end=$(($(date +%s) + {timeout_s}))
# Bounded: a socket another process bound in the abstract namespace may never answer.
until timeout 2 xdpyinfo >/dev/null 2>&1; do
  [ "$(date +%s)" -lt $end ] || fail "its X server"; sleep 0.05
done
python3 -I -c '{abstract_check}' "$xvfb" "@{sockets}/X{number}" \\
  || fail "its abstract socket (another process holds @{sockets}/X{number})"
# libxtrans opens the socket's folder to everyone (mode 1777) when it makes the socket in it;
# shut again, so only the desktop user reaches the socket (the cookie guarded that instant).
chmod 0700 {sockets}
openbox >{openbox_log} 2>&1 &
# Windows appear once the window manager takes their map requests: wait for its check window.
until xprop -root _NET_SUPPORTING_WM_CHECK | grep -q window; do
  [ "$(date +%s)" -lt $end ] || fail "its window manager"; sleep 0.05
done
{terminal}
echo ready
wait
"""
# Exits 0 when every socket bound to the abstract name argv[2] is one of process argv[1]'s (and
# there is one): /proc/net/unix lists sockets by inode, /proc/PID/fd names the process's own.
ABSTRACT_IS_OURS = (
    "import os, sys\n"
    "pid, name = sys.argv[1], sys.argv[2]\n"
    'own = {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}\n'
    'rows = [r.split() for r in open("/proc/net/unix").read().splitlines()[1:]]\n'
    "held = [r[6] for r in rows if len(r) > 7 and r[7] == name]\n"
    'sys.exit(0 if held and all(f"socket:[{i}]" in own for i in held) else 1)\n'
)
# The screen's terminal: its shell is the desktop user's (the task's programs may not touch the
# screen), in the task's folder when that user may enter it, and files it makes are readable by
# the task (umask 022). Its shell is waited for (keys typed into an xterm before its shell has a
# terminal are lost), not its window: on a busy machine the window manager may take seconds to
# map it, and the agent looks again until it shows.
TERMINAL = """(umask 022; cd {folder} 2>/dev/null || true
 exec xterm -geometry {geometry} -title Terminal -e sh -c 'touch {ready}; exec bash' \\
   >/dev/null 2>&1) &
until [ -e {ready} ]; do
  [ "$(date +%s)" -lt $end ] || fail "its terminal"; sleep 0.05
done
# Until it shows: ask again for its window to be mapped (a map request made while openbox is
# still starting can be lost, and the window then never shows), then give it the keyboard's
# focus, so the first keys typed reach it.
(until xdotool search --onlyvisible --name '^Terminal$' windowactivate >/dev/null 2>&1; do
  [ "$(date +%s)" -lt $end ] || exit 0; sleep 0.2
  xdotool search --name '^Terminal$' windowmap >/dev/null 2>&1 || true
done) &"""
TERMINAL_GEOMETRY = "100x30+40+40"
TERMINAL_READY = f"{HOME}/.terminal-started"
# Isolated (-I): no user site-packages, whose .pth files run at start, from a home the task
# could have written (images before this one gave the desktop user /tmp), no PYTHON* variables.
SCREEN_AGENT = (
    "env",
    f"HOME={HOME}",
    f"DISPLAY={DISPLAY}",
    f"XAUTHORITY={XAUTHORITY}",
    "python3",
    "-I",
    "/usr/local/bin/dispatch-screen-agent",
)
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

    def start(self, timeout_s: float = START_TIMEOUT_S, *, terminal: bool = True) -> ScreenSize:
        """Start Xvfb, openbox and (unless `terminal` is false) a terminal as the desktop user,
        and attach to the screen agent.

        Raises:
            DesktopFailed: the sandbox runs as the desktop user, or the screen did not come up
                in time (the message has Xvfb's words).
        """
        uid, groups, folder = self._task_user()
        if uid == DESKTOP_USER[0] or TTY_GROUP in groups:
            who = f"uid {uid}, the desktop's own user" if uid == DESKTOP_USER[0] else "group tty"
            raise DesktopFailed(
                f"the sandbox runs as {who}, so its programs could drive the screen or write "
                "into its terminals; run the task as another user (the sandbox_user setting, or "
                "folders owned by another user and group)"
            )
        width, height = self.requested.width, self.requested.height
        opened = TERMINAL.format(
            folder=shlex.quote(folder), geometry=TERMINAL_GEOMETRY, ready=TERMINAL_READY
        )
        script = X_SERVER.format(
            home=HOME,
            sockets=SOCKET_DIR,
            display=DISPLAY,
            auth=XAUTHORITY,
            width=width,
            height=height,
            xvfb_log=XVFB_LOG,
            openbox_log=OPENBOX_LOG,
            terminal=opened if terminal else "",
            abstract_check=ABSTRACT_IS_OURS,
            number=DISPLAY.lstrip(":"),
            timeout_s=max(1, round(timeout_s)),
        )
        server = self.spawner.spawn(["sh", "-c", script], user=DESKTOP_USER)
        self._processes.append(server)
        try:
            said = server.read_line().decode(errors="replace").strip()
        except SandboxError:
            said = ""
        if said != "ready":
            what, _, logs = (said or "its X server").partition(": ")
            raise DesktopFailed(
                f"the desktop did not start ({what} failed or was not ready within "
                f"{timeout_s:g} s){': ' + logs if logs else ''}"
            )
        self._agent = self.spawner.spawn(SCREEN_AGENT, user=DESKTOP_USER)
        header, _ = self._ask({"op": "size"})
        self.size = ScreenSize(int(header["width"]), int(header["height"]))
        return self.size

    def _task_user(self) -> tuple[int, set[int], str]:
        """The task's uid, its groups and the folder its commands start in."""
        said = self.box.exec(["sh", "-c", "id -u; id -G; pwd"], timeout_s=30)
        try:
            uid, groups, folder = said.stdout.decode().split("\n")[:3]
            return int(uid), {int(g) for g in groups.split()}, folder
        except ValueError:
            raise DesktopFailed(f"could not tell the sandbox's user ({said.describe()})") from None

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
