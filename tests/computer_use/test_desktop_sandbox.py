"""The desktop sandbox on the real engine: its screen starts, is seen and driven, and survives."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from computer_use.screen.desktop import SandboxDesktop
from sandbox import SandboxSpec
from sandbox.images import DESKTOP_IMAGE
from tests.sandbox.conftest import MakeSandbox

pytestmark = pytest.mark.docker


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


def test_the_screen_starts_at_the_asked_size_and_is_captured(desktop: SandboxDesktop) -> None:
    assert (desktop.size.width, desktop.size.height) == (1024, 768)
    image = desktop.capture()
    assert image.size == (1024, 768)
    assert image.mode == "RGB"


def test_an_application_window_appears_and_the_pointer_moves(desktop: SandboxDesktop) -> None:
    before = desktop.capture()
    # Started by the task's user, as the agent's bash would.
    desktop.box.exec(["sh", "-c", "xterm -geometry 60x10+100+100 -bg white -fg black &"])
    poll(lambda: desktop.xdotool(["search", "--class", "xterm"]).strip(), 20, "an xterm window")
    poll(lambda: desktop.capture().tobytes() != before.tobytes(), 10, "the window to be drawn")
    desktop.xdotool(["mousemove", "321", "234"])
    location = desktop.xdotool(["getmouselocation", "--shell"])
    assert "X=321" in location and "Y=234" in location


def test_a_task_timeout_does_not_take_the_screen_down(desktop: SandboxDesktop) -> None:
    result = desktop.box.exec(["sh", "-c", "sleep 60"], timeout_s=1)
    assert result.outcome.value == "timed_out"
    # Every process of the task's user got SIGTERM/SIGKILL; the screen runs as another user.
    assert desktop.capture().size == (1024, 768)
    assert desktop.box.exec(["xdpyinfo", "-display", ":0"]).ok


# Run as the task's user: what its programs may and may not do with the screen's X server.
X_PROBE = """
from Xlib import X, display, error
d = display.Display()
print("xtest", d.has_extension("XTEST"))
try:
    d.screen().root.get_image(0, 0, 8, 8, X.ZPixmap, 0xFFFFFFFF)
    print("read screen: yes")
except error.XError as exc:
    print("read screen:", type(exc).__name__)
"""


def test_the_tasks_programs_cannot_read_or_drive_the_screen(desktop: SandboxDesktop) -> None:
    # A shell step the policy allows must not click or type around the approval gate.
    desktop.xdotool(["mousemove", "200", "150"])
    moved = desktop.box.exec(["xdotool", "mousemove", "7", "9", "click", "1"])
    assert not moved.ok
    assert "X=200" in desktop.xdotool(["getmouselocation", "--shell"])
    probe = desktop.box.exec(["python3", "-c", X_PROBE])
    assert probe.stdout.decode().split("\n")[:2] == ["xtest False", "read screen: BadAccess"]
    # The trusted cookie is the desktop user's alone, and without a cookie the server says no.
    assert not desktop.box.exec(["cat", "/tmp/.dispatch-x11/trusted"]).ok
    refused = desktop.box.exec(["env", "XAUTHORITY=/dev/null", "xdpyinfo"])
    assert not refused.ok and b"unable to open display" in refused.stderr
    # Its own windows still open, and the agent (trusted) still sees and drives them.
    desktop.box.exec(["sh", "-c", "xterm -geometry 40x5+50+50 -title mine &"])
    poll(lambda: desktop.xdotool(["search", "--name", "mine"]).strip(), 20, "the task's window")
