"""Review 4: the task's user takes the X server's abstract socket name, and with it every X
connection the screen's side opens after that. Fixed: the screen's Xvfb holds the name itself
(guarded by its cookie) and its start checks that it does; the task's bind is refused.

Found when `-nolisten local` kept the desktop's Xvfb off the abstract socket
`@/tmp/.X11-unix/X0`, so the name was free, and the container's one network namespace let the
task's user bind it. libxcb (xdotool, xterm, anything the agent starts from the terminal) tries
that abstract name before the socket's path. The screen agent captures through the connection it
opened at start (the real screen), but runs a new `xdotool` for every action: from the moment
the task binds the name, each approved click and keystroke goes to an X server of the task's
choosing. The person sees the real screen and approves typing into the real terminal; the keys
(a password, a command) reach the task's program instead, and the real screen never changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from computer_use.screen.desktop import DESKTOP_USER, DesktopFailed, SandboxDesktop
from sandbox import Process, SandboxSpec, Spawner
from sandbox.images import DESKTOP_IMAGE
from tests.sandbox.conftest import MakeSandbox

pytestmark = pytest.mark.docker

T = TypeVar("T")

# The task's own X server (its user, TCP on 127.0.0.1:6005, no access control) and a terminal on
# it covering the whole screen, so that it has the keyboard.
TASK_SERVER = (
    "Xvfb :5 -screen 0 640x480x24 -listen tcp -nolisten unix -ac >/tmp/task-x.log 2>&1 &"
    " until xdpyinfo -display 127.0.0.1:5 >/dev/null 2>&1; do sleep 0.1; done;"
    " DISPLAY=127.0.0.1:5 xterm -geometry 200x100+0+0 -e bash >/dev/null 2>&1 & echo up; wait"
)
# The abstract name the desktop's clients try first, relayed to the task's server.
TAKE_NAME = r"""
import socket, threading
listener = socket.socket(socket.AF_UNIX)
listener.bind("\0/tmp/.X11-unix/X0")
listener.listen(16)
print("bound", flush=True)
def pump(a, b):
    while True:
        data = a.recv(65536)
        if not data:
            break
        b.sendall(data)
    b.close()
while True:
    client, _ = listener.accept()
    server = socket.create_connection(("127.0.0.1", 6005))
    threading.Thread(target=pump, args=(client, server), daemon=True).start()
    threading.Thread(target=pump, args=(server, client), daemon=True).start()
"""


def poll(predicate: Callable[[], T], timeout_s: float, what: str) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.1)


def visible_terminal(desktop: SandboxDesktop) -> str:
    try:
        return desktop.xdotool(["search", "--onlyvisible", "--name", "^Terminal$"]).strip()
    except DesktopFailed:
        return ""


@pytest.fixture
def desktop(make_sandbox: MakeSandbox) -> Iterator[SandboxDesktop]:
    box = make_sandbox("docker", SandboxSpec(image=DESKTOP_IMAGE))
    screen = SandboxDesktop(box, width=1024, height=768)
    screen.start()
    yield screen
    screen.close()


def hijack(box: Spawner) -> list[Process]:
    """As the task's user, the way an unapproved bash step would (two background programs).
    Returns them, the relay only if it could bind the name (it prints why it could not)."""
    server = box.spawn(["sh", "-c", TASK_SERVER])
    assert server.read_line().strip() == b"up"
    name = box.spawn(["sh", "-c", f"python3 -c '{TAKE_NAME}' 2>&1"])
    said = name.read_line().strip()
    print(f"the task's relay said: {said!r}")
    return [server, name] if said == b"bound" else [server]


def test_approved_keys_reach_the_screens_terminal_not_the_tasks(desktop: SandboxDesktop) -> None:
    box = desktop.box
    poll(lambda: visible_terminal(desktop), 60, "the screen's terminal")
    assert desktop.xdotool(["getdisplaygeometry"]).split() == ["1024", "768"]
    started = hijack(desktop.spawner)
    assert len(started) == 1, "the task bound the screen's abstract socket name"
    try:
        geometry = desktop.xdotool(["getdisplaygeometry"]).split()
        # An approved action: type a command into the screen's terminal.
        desktop.xdotool(["type", "--delay", "20", "id -u > /tmp/who-got-the-keys\n"])
        who = poll(
            lambda: box.exec(["cat", "/tmp/who-got-the-keys"]).stdout.strip(), 30, "the command"
        )
        print(f"xdotool sees a {geometry} screen; the keys were run by uid {who!r}")
        assert geometry == ["1024", "768"], "xdotool drove another X server"
        assert who == str(DESKTOP_USER[0]).encode(), "the approved keys ran in the task's terminal"
    finally:
        for process in started:
            process.close()
