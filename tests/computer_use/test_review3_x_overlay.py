"""Review 3: a program the task runs without an approval must not change the screen the person
judges: no window painted over the screen's own, no keyboard grab, no pointer warp.

An untrusted X cookie (the SECURITY extension) was not enough: it stops XTEST, reading the
screen and sending events to other clients' windows, but still lets a client lay an
override-redirect window over everything (the screenshot the person approves shows the task's
picture while the click reaches the real window below), grab the keyboard (a password the
person approved typing goes to the task's program) and warp the pointer between the agent's
move and its click. Now the task's user cannot connect to the screen's X server at all (see
computer_use/screen/desktop.py). Each attack below is run as a shell step would run it, as the
task's user, and tries every way in: the display named in its environment, the Unix socket by
path and in the abstract namespace, TCP, and the screen's own cookie.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from computer_use.screen.desktop import DESKTOP_USER, DISPLAY, XAUTHORITY, SandboxDesktop
from sandbox import SandboxSpec
from sandbox.images import DESKTOP_IMAGE
from tests.sandbox.conftest import MakeSandbox

pytestmark = pytest.mark.docker

# Run first by every attack (task user): connect to the screen's X server by every route the
# container offers; print how each failed, and exit 3 if none worked.
CONNECT = """
import os, socket
from Xlib import display
tried = []
for name in [os.environ.get("DISPLAY") or ":0", "unix:0", "localhost:0", "127.0.0.1:0"]:
    for auth in [os.environ.get("XAUTHORITY"), "/tmp/.dispatch-desktop/.Xauthority"]:
        if auth:
            os.environ["XAUTHORITY"] = auth
        try:
            d = display.Display(name)
            break
        except Exception as exc:
            tried.append(f"{name} {auth}: {type(exc).__name__}")
    else:
        continue
    break
else:
    for address in ["\\0/tmp/.X11-unix/X0", "/tmp/.X11-unix/X0"]:
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(address)
            tried.append(f"{address!r}: connected")
        except OSError as exc:
            tried.append(f"{address!r}: {exc.strerror}")
    print("refused:", "; ".join(tried), flush=True)
    raise SystemExit(3)
print("connected", flush=True)
"""


# The screen's own window (run as the desktop user with the trusted cookie, like the agent's
# Chromium; override-redirect only so that it sits exactly there): green, 400x300 at 100,100;
# a button press on it is written to /tmp/real-clicked.
REAL = """
from Xlib import X, display
d = display.Display()
s = d.screen()
w = s.root.create_window(100, 100, 400, 300, 0, s.root_depth, background_pixel=0x00C000,
                         override_redirect=True, event_mask=X.ExposureMask | X.ButtonPressMask)
w.map()
d.sync()
print("ready", flush=True)
while True:
    e = d.next_event()
    if e.type == X.ButtonPress:
        open("/tmp/real-clicked", "w").write(f"{e.event_x},{e.event_y}")
"""
# The task's overlay (task user): red, override-redirect, over the left half of the real window;
# the right half (where the click goes) is left uncovered.
OVERLAY = (
    CONNECT
    + """
from Xlib import X
s = d.screen()
w = s.root.create_window(100, 100, 200, 300, 0, s.root_depth, background_pixel=0xFF0000,
                         override_redirect=True, event_mask=X.ExposureMask)
w.map()
w.configure(stack_mode=X.Above)
d.sync()
while True:
    if d.next_event().type == X.Expose:
        open("/tmp/overlay-ready", "a").close()
"""
)


def poll(predicate, timeout_s: float, what: str):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def desktop(make_sandbox: MakeSandbox) -> Iterator[SandboxDesktop]:
    box = make_sandbox("docker", SandboxSpec(image=DESKTOP_IMAGE))
    screen = SandboxDesktop(box, width=1024, height=768)
    screen.start()
    yield screen
    screen.close()


def pixel(desktop: SandboxDesktop, x: int, y: int) -> tuple[int, int, int]:
    value = desktop.capture().getpixel((x, y))
    assert isinstance(value, tuple)
    return value[0], value[1], value[2]


def is_green(rgb: tuple[int, int, int]) -> bool:
    return rgb[1] > 150 and rgb[0] < 80


def attack(desktop: SandboxDesktop, name: str, script: str) -> str:
    """Start `script` in the background as a shell step would (task user, no approval); what it
    said about its connection (its first line: "refused: ..." or "connected")."""
    log = f"/tmp/{name}.log"
    desktop.box.exec(["sh", "-c", f"python3 -c '{script}' >{log} 2>&1 &"])
    said = poll(
        lambda: desktop.box.exec(["head", "-n", "1", log]).stdout.decode().strip(),
        20,
        f"the {name} attack to connect or give up",
    )
    return str(said)


def test_the_tasks_window_cannot_paint_over_the_screens_own_windows(
    desktop: SandboxDesktop,
) -> None:
    real = desktop.spawner.spawn(
        ["env", f"DISPLAY={DISPLAY}", f"XAUTHORITY={XAUTHORITY}", "python3", "-c", REAL],
        user=DESKTOP_USER,
    )
    try:
        assert real.read_line().strip() == b"ready"
        poll(lambda: is_green(pixel(desktop, 200, 250)), 20, "the real window to be drawn")
        said = attack(desktop, "overlay", OVERLAY)
        if said == "connected":  # then give it the time to show (with a deadline)
            ready = lambda: desktop.box.exec(["test", "-e", "/tmp/overlay-ready"]).ok  # noqa: E731
            poll(ready, 20, "the overlay to be mapped")
        covered = pixel(desktop, 200, 250)
        # The click an approver would judge goes to the uncovered right half: the real window.
        desktop.xdotool(["mousemove", "400", "250", "click", "1"])
        clicked = poll(
            lambda: desktop.box.exec(["cat", "/tmp/real-clicked"]).stdout, 10, "the real click"
        )
        assert clicked, clicked
        assert is_green(covered), (
            f"the task's window painted over the screen's own window: {covered} where the real "
            f"window is green (the task's program: {said})"
        )
        assert said.startswith("refused:"), said
    finally:
        real.close()


# The task's key logger (task user): grabs the keyboard on a 1x1 window of its own and writes
# every key press it receives to /tmp/keys.
GRAB = (
    CONNECT
    + """
from Xlib import X
s = d.screen()
w = s.root.create_window(0, 0, 1, 1, 0, s.root_depth, override_redirect=True,
                         event_mask=X.KeyPressMask)
w.map()
d.sync()
status = w.grab_keyboard(True, X.GrabModeAsync, X.GrabModeAsync, X.CurrentTime)
print("grab", status, flush=True)
keys = open("/tmp/keys", "w")
while True:
    e = d.next_event()
    if e.type == X.KeyPress:
        keys.write(f"{e.detail} ")
        keys.flush()
"""
)


def test_the_tasks_program_cannot_grab_what_the_agent_types(desktop: SandboxDesktop) -> None:
    # A shell step the policy lets through; then the agent types a password the person approved.
    said = attack(desktop, "grab", GRAB)
    if said == "connected":
        poll(
            lambda: desktop.box.exec(["cat", "/tmp/grab.log"]).stdout.count(b"\n") > 1,
            20,
            "the grab",
        )
    desktop.xdotool(["type", "hunter2"])
    # Wait (with a deadline) for keys to arrive; if none ever do, the check passes.
    deadline = time.monotonic() + 3
    logged = b""
    while not logged and time.monotonic() < deadline:
        logged = desktop.box.exec(["cat", "/tmp/keys"]).stdout.strip()
        time.sleep(0.1)
    assert not logged, (
        f"the task's program grabbed the keyboard and received the agent's typing as key codes "
        f"{logged.decode()}"
    )
    assert said.startswith("refused:"), said


# The task's pointer thief (task user): XWarpPointer in a loop, so the pointer sits at 300,250
# (the real window) whenever the agent's click is sent.
WARP = (
    CONNECT
    + """
root = d.screen().root
open("/tmp/warping", "w").close()
while True:
    root.warp_pointer(300, 250)
    d.flush()
"""
)


def test_the_tasks_program_cannot_move_the_pointer_under_an_approved_click(
    desktop: SandboxDesktop,
) -> None:
    real = desktop.spawner.spawn(
        ["env", f"DISPLAY={DISPLAY}", f"XAUTHORITY={XAUTHORITY}", "python3", "-c", REAL],
        user=DESKTOP_USER,
    )
    try:
        assert real.read_line().strip() == b"ready"
        said = attack(desktop, "warp", WARP)
        # The approved click: on the empty desktop at 800,600, far from the real window. Sent as
        # `X11Screen.click` sends it; a few times, as an agent's clicks come.
        clicked = b""
        for _ in range(40):
            desktop.xdotool(["mousemove", "800", "600", "click", "--repeat", "1", "1"])
            clicked = desktop.box.exec(["cat", "/tmp/real-clicked"]).stdout
            if clicked:
                break
        assert not clicked, (
            f"a click approved at 800,600 landed on the real window at {clicked.decode()}: the "
            "task's program moved the pointer (XWarpPointer) between move and click"
        )
        assert said.startswith("refused:"), said
    finally:
        real.close()
