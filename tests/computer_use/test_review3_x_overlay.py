"""Review 3: the task's untrusted X client can still draw over the screen's own windows, grab
the keyboard and move the pointer.

The untrusted cookie stops XTEST, reading the screen and sending events to other clients'
windows, but not creating an override-redirect window: one the window manager does not manage,
stacked above everything. A shell step the policy allows (no approval) can therefore paint
whatever it likes over the agent's Chromium or any window, and the screenshot the model reasons
on and the person approves shows the task's picture, while a click at a point the overlay leaves
uncovered still reaches the real window below. E.g. over a real "Delete all files? [OK]" dialog
the task paints "Close this advert?" everywhere but the OK button; the person approves "click
OK". The approval is only as good as the screenshot; the untrusted cookie does not protect it.

Worse, XGrabKeyboard is allowed to an untrusted client: the task's program grabs the keyboard
and receives every key the agent types afterwards (a password the person approved typing into
a login form), which the real window never gets. And XWarpPointer is allowed: a loop of warps
puts the pointer where the task wants between the agent's `mousemove` and its `click`, so a
click the person approved at one point lands on another (another window, another button).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from computer_use.screen.desktop import DESKTOP_USER, DISPLAY, XAUTHORITY, SandboxDesktop
from sandbox import SandboxSpec
from sandbox.images import DESKTOP_IMAGE
from tests.sandbox.conftest import MakeSandbox

pytestmark = [
    pytest.mark.docker,
    # Open, and documented (README, "Security model of the desktop sandbox"): on the sandbox's
    # own screen every window is a program the task started, so the task can already do inside
    # them whatever it could make a redirected click do; the sandbox boundary, not the X server,
    # is what keeps that inside. The planned fix keeps the task's X clients off the agent's
    # server altogether. strict: these fail loudly once that lands, so the marker goes.
    pytest.mark.xfail(
        strict=True,
        reason="review 3: untrusted X clients can still warp the "
        "pointer, grab the keyboard and draw override-redirect windows",
    ),
]

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
# The task's overlay (task user, untrusted cookie): red, override-redirect, over the left half
# of the real window; the right half (where the click goes) is left uncovered.
OVERLAY = """
from Xlib import X, display
d = display.Display()
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
        # A shell step the policy lets through without asking anyone.
        started = desktop.box.exec(
            [
                "sh",
                "-c",
                f"python3 -c '{OVERLAY}' >/dev/null 2>&1 & "
                "for i in $(seq 200); do [ -e /tmp/overlay-ready ] && exit 0; sleep 0.1; done; "
                "exit 1",
            ]
        )
        assert started.ok, started.stderr
        # Wait (with a deadline) for the overlay to show; if it never does, the check passes.
        deadline = time.monotonic() + 5
        while is_green(pixel(desktop, 200, 250)) and time.monotonic() < deadline:
            time.sleep(0.1)
        covered = pixel(desktop, 200, 250)
        # The click an approver would judge goes to the uncovered right half: the real window.
        desktop.xdotool(["mousemove", "400", "250", "click", "1"])
        clicked = poll(
            lambda: desktop.box.exec(["cat", "/tmp/real-clicked"]).stdout, 10, "the real click"
        )
        assert clicked, clicked
        assert is_green(covered), (
            f"the task's untrusted window painted over the screen's own window: {covered} "
            "where the real window is green"
        )
    finally:
        real.close()


# The task's key logger (task user, untrusted cookie): grabs the keyboard on a 1x1 window of its
# own and writes every key press it receives to /tmp/keys.
GRAB = """
from Xlib import X, display
d = display.Display()
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


def test_the_tasks_program_cannot_grab_what_the_agent_types(desktop: SandboxDesktop) -> None:
    # A shell step the policy lets through; then the agent types a password the person approved.
    desktop.box.exec(["sh", "-c", f"python3 -c '{GRAB}' >/tmp/grab.log 2>&1 &"])
    said = poll(lambda: desktop.box.exec(["cat", "/tmp/grab.log"]).stdout.strip(), 20, "the grab")
    desktop.xdotool(["type", "hunter2"])
    # Wait (with a deadline) for keys to arrive; if none ever do, the check passes.
    deadline = time.monotonic() + 3
    logged = b""
    while not logged and time.monotonic() < deadline:
        logged = desktop.box.exec(["cat", "/tmp/keys"]).stdout.strip()
        time.sleep(0.1)
    assert not logged, (
        f"the task's untrusted client grabbed the keyboard ({said!r}) and received the agent's "
        f"typing as key codes {logged.decode()}"
    )


# The task's pointer thief (task user, untrusted cookie): XWarpPointer in a loop, so the
# pointer sits at 300,250 (the real window) whenever the agent's click is sent.
WARP = """
from Xlib import display
d = display.Display()
root = d.screen().root
open("/tmp/warping", "w").close()
while True:
    root.warp_pointer(300, 250)
    d.flush()
"""


@pytest.mark.xfail(strict=False, reason="review 3: a race; it may miss on a given run")
def test_the_tasks_program_cannot_move_the_pointer_under_an_approved_click(
    desktop: SandboxDesktop,
) -> None:
    real = desktop.spawner.spawn(
        ["env", f"DISPLAY={DISPLAY}", f"XAUTHORITY={XAUTHORITY}", "python3", "-c", REAL],
        user=DESKTOP_USER,
    )
    try:
        assert real.read_line().strip() == b"ready"
        for _ in range(3):  # a few loops: the race is won more often than not by each
            desktop.box.exec(["sh", "-c", f"python3 -c '{WARP}' >/dev/null 2>&1 &"])
        poll(lambda: desktop.box.exec(["test", "-e", "/tmp/warping"]).ok, 20, "the warp loop")
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
            "task's untrusted client moved the pointer (XWarpPointer) between move and click"
        )
    finally:
        real.close()
