"""The desktop sandbox on the real engine: its screen starts, is seen and driven, and survives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from computer_use.screen.desktop import DESKTOP_USER, TTY_GROUP, DesktopFailed, SandboxDesktop
from sandbox import Mount, SandboxSpec
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


def windows(desktop: SandboxDesktop, *search: str) -> str:
    """The ids of the windows `xdotool search` finds; none (its exit status 1) is ""."""
    try:
        return desktop.xdotool(["search", *search]).strip()
    except DesktopFailed:
        return ""


def focused(desktop: SandboxDesktop) -> str:
    """The name of the window with the keyboard's focus; "" while none has it."""
    try:
        return desktop.xdotool(["getwindowfocus", "getwindowname"]).strip()
    except DesktopFailed:
        return ""


def type_in_terminal(desktop: SandboxDesktop, text: str) -> None:
    """What an agent does, each key approved: type into the screen's terminal (which has the
    keyboard's focus once it shows)."""
    poll(lambda: windows(desktop, "--onlyvisible", "--name", "^Terminal$"), 60, "the terminal")
    poll(lambda: focused(desktop) == "Terminal", 20, "the terminal to have the focus")
    desktop.xdotool(["type", "--delay", "20", text])


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


def test_the_screen_starts_with_a_terminal_that_opens_windows(desktop: SandboxDesktop) -> None:
    before = desktop.capture()
    type_in_terminal(desktop, "xterm -geometry 60x10+500+400 -title opened &\n")
    poll(lambda: windows(desktop, "--name", "opened"), 20, "an xterm window")
    poll(lambda: desktop.capture().tobytes() != before.tobytes(), 10, "the window to be drawn")
    desktop.xdotool(["mousemove", "321", "234"])
    location = desktop.xdotool(["getmouselocation", "--shell"])
    assert "X=321" in location and "Y=234" in location


def test_the_terminal_reads_a_granted_folder_others_may_read(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    # The screen's programs run as the desktop user: in a granted folder they have what its
    # modes give everyone else (the task's own tools, bash and edit, have the owner's rights).
    workspace.chmod(0o755)
    (workspace / "notes.txt").write_text("from the folder\n")
    box = make_sandbox("docker", SandboxSpec(image=DESKTOP_IMAGE, mounts=(Mount(workspace),)))
    desktop = SandboxDesktop(box, width=1024, height=768)
    desktop.start()
    try:
        type_in_terminal(desktop, "cat notes.txt > /tmp/seen; id -u >> /tmp/seen\n")
        seen = poll(
            lambda: (
                box.exec(["cat", "/tmp/seen"]).stdout.count(b"\n") == 2
                and box.exec(["cat", "/tmp/seen"]).stdout
            ),
            20,
            "the terminal's command",
        )
        assert seen == f"from the folder\n{DESKTOP_USER[0]}\n".encode()
    finally:
        desktop.close()


def test_a_task_timeout_does_not_take_the_screen_down(desktop: SandboxDesktop) -> None:
    result = desktop.box.exec(["sh", "-c", "sleep 60"], timeout_s=1)
    assert result.outcome.value == "timed_out"
    # Every process of the task's user got SIGTERM/SIGKILL; the screen runs as another user.
    assert desktop.capture().size == (1024, 768)
    assert "X=" in desktop.xdotool(["getmouselocation", "--shell"])


# Run as the task's user: every way to the screen's X server it could try.
X_PROBE = """
import socket
from Xlib import display
for name in [":0", "unix:0", "localhost:0"]:
    try:
        display.Display(name)
        print(name, "connected")
    except Exception as exc:
        print(name, type(exc).__name__)
for address in ["\\0/tmp/.X11-unix/X0", "/tmp/.X11-unix/X0"]:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(address)
        print(repr(address), "connected")
    except OSError as exc:
        print(repr(address), exc.strerror)
"""


# The task's way to receive the agent's clicks and keys (review 4): X clients try the abstract
# name before the socket's path, so whoever binds it gets them.
BIND_ABSTRACT = """
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind("\\0/tmp/.X11-unix/X0")
s.listen(8)
print("bound", flush=True)
time.sleep(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
"""


def test_the_tasks_programs_cannot_reach_the_screen(desktop: SandboxDesktop) -> None:
    # A shell step the policy allows must not click, type, draw, grab or warp around the
    # approval gate: it cannot even connect.
    desktop.xdotool(["mousemove", "200", "150"])
    moved = desktop.box.exec(["xdotool", "mousemove", "7", "9", "click", "1"])
    assert not moved.ok
    assert "X=200" in desktop.xdotool(["getmouselocation", "--shell"])
    probe = desktop.box.exec(["python3", "-c", X_PROBE]).stdout.decode().splitlines()
    assert probe == [
        ":0 DisplayConnectionError",
        "unix:0 DisplayConnectionError",
        "localhost:0 DisplayConnectionError",
        # The abstract name is the screen's server's own (nobody else may bind it, below); it
        # answers, and refuses an X connection without the cookie (":0" above).
        "'\\x00/tmp/.X11-unix/X0' connected",
        "'/tmp/.X11-unix/X0' Permission denied",
    ]
    taken = desktop.box.exec(["python3", "-c", BIND_ABSTRACT])
    assert not taken.ok and b"Address already in use" in taken.stderr
    refused = desktop.box.exec(["sh", "-c", "xterm -title mine"], timeout_s=30)
    assert not refused.ok and b"Can't open display" in refused.stderr
    # The desktop's home (its cookie, its dot-files) is its own.
    assert not desktop.box.exec(["ls", "/tmp/.dispatch-desktop"]).ok
    assert not windows(desktop, "--name", "mine")


def test_an_abstract_socket_the_task_bound_first_stops_the_desktop(
    make_sandbox: MakeSandbox,
) -> None:
    box = make_sandbox("docker", SandboxSpec(image=DESKTOP_IMAGE))
    squatter = box.spawn(["python3", "-c", BIND_ABSTRACT, "120"])
    try:
        assert squatter.read_line().strip() == b"bound"
        with pytest.raises(DesktopFailed, match=r"abstract socket|X server"):
            SandboxDesktop(box).start(timeout_s=20)
    finally:
        squatter.close()


def test_a_folder_the_task_made_first_stops_the_desktop(make_sandbox: MakeSandbox) -> None:
    # Made before the screen starts, the socket's folder would be the task's to open.
    box = make_sandbox("docker", SandboxSpec(image=DESKTOP_IMAGE))
    assert box.exec(["mkdir", "-m", "0777", "/tmp/.X11-unix"]).ok
    with pytest.raises(DesktopFailed, match="already exist"):
        SandboxDesktop(box).start(timeout_s=20)


@pytest.mark.parametrize(
    ("user", "said"), [(DESKTOP_USER, "the desktop's own user"), ((1000, TTY_GROUP), "group tty")]
)
def test_a_sandbox_running_as_the_desktop_user_or_tty_gets_no_desktop(
    make_sandbox: MakeSandbox, user: tuple[int, int], said: str
) -> None:
    box = make_sandbox("docker", SandboxSpec(image=DESKTOP_IMAGE, user=user))
    with pytest.raises(DesktopFailed, match=said):
        SandboxDesktop(box).start(timeout_s=20)
