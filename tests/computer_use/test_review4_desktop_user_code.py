"""Review 4: code the task plants (unapproved bash steps, as the task's user) must never run as
the desktop user, who holds the X cookie and so the whole screen.

The screen agent runs `python3 -I` and the X server's script cds into its private home; but the
browser tool starts Chromium through `python3 -c PIPE_ADAPTER` (and the port transport's relay
through `python3 -c RELAY`) as the desktop user, with HOME=/tmp, without -I, in the sandbox's
working directory (the task's folder). Python then reads the user site of HOME (/tmp/.local/...:
its .pth files run at start) and puts the working directory first on sys.path (a `struct.py`
there replaces the adapter's `import struct`). Both are the task's to write.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from computer_use.browser.cdp_bridge import SandboxChromium
from computer_use.screen.desktop import DESKTOP_USER, DesktopFailed, SandboxDesktop
from sandbox import Mount, Sandbox, SandboxSpec
from sandbox.images import DESKTOP_IMAGE
from tests.sandbox.conftest import MakeSandbox

pytestmark = [pytest.mark.docker, pytest.mark.browser]

PROOF = "/tmp/review4-proof"
# Run as whoever imports it: if that is the desktop user, use its cookie to talk to the screen
# (xdpyinfo answers, and a window titled "planted-by-task" is opened on it).
PAYLOAD = (
    f"import os; os.getuid() == {DESKTOP_USER[0]} and not os.path.exists('{PROOF}') and os.system("
    "'(id -u; DISPLAY=:0 XAUTHORITY=/tmp/.dispatch-desktop/.Xauthority xdpyinfo | head -3;"
    f" chmod 0644 {PROOF}) >{PROOF} 2>&1;"
    " DISPLAY=:0 XAUTHORITY=/tmp/.dispatch-desktop/.Xauthority setsid xterm -title planted-by-task"
    " -e sleep 600 >/dev/null 2>&1 &')"
)


def poll(predicate, timeout_s: float):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


def find_window(desktop: SandboxDesktop, title: str) -> str:
    try:
        return desktop.xdotool(["search", "--name", f"^{title}$"]).strip()
    except DesktopFailed:
        return ""


def make_box(make_sandbox: MakeSandbox, workspace: Path, *, writable: bool) -> Sandbox:
    workspace.chmod(0o755)  # a folder others may read, like most
    mount = Mount(workspace, read_only=not writable)
    return make_sandbox("docker", SandboxSpec(image=DESKTOP_IMAGE, mounts=(mount,)))


def plant(box: Sandbox, where: str) -> None:
    """As the task's user, the way a bash step would (no approval asked)."""
    if where == "user-site":
        site = "/tmp/.local/lib/python3.11/site-packages"
        script = f"mkdir -p {site} && printf '%s\\n' \"$1\" > {site}/review4.pth"
    else:
        script = 'printf "%s\\n" "$1" "from _review4_struct import *" > struct.py && '
        script += "cp /usr/lib/python3.11/struct.py _review4_struct.py"
    done = box.exec(["sh", "-c", script, "sh", PAYLOAD])
    assert done.ok, done.describe()


@pytest.mark.xfail(
    strict=True,
    reason="REVIEW4-1 (critical): the browser's launcher runs `python3 -c` as the desktop user "
    "with HOME=/tmp and cwd = the task's folder, so a .pth in /tmp/.local or a struct.py in the "
    "folder (planted by an unapproved bash step) runs with the X cookie: full control of the "
    "screen the person judges",
)
@pytest.mark.parametrize("where", ["user-site", "task-folder"])
def test_task_planted_python_never_runs_as_the_desktop_user(
    make_sandbox: MakeSandbox, workspace: Path, where: str
) -> None:
    # user-site: the folder read-only, so the default policy runs bash steps without asking;
    # /tmp is the task's to write all the same. task-folder: a read-write folder (a command
    # task, or any approved bash step that writes files there, e.g. unpacking an archive).
    box = make_box(make_sandbox, workspace, writable=where == "task-folder")
    desktop = SandboxDesktop(box, width=1024, height=768)
    desktop.start(terminal=False)
    plant(box, where)
    launcher = SandboxChromium(box, start_timeout_s=60)
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            try:
                launcher.connect(playwright)
            except Exception as exc:
                print(f"browser: {exc}")
            proof = poll(lambda: box.exec(["cat", PROOF]).stdout, 20)
            window = poll(lambda: find_window(desktop, "planted-by-task"), 20)
            print(f"proof: {proof!r}; window: {window!r}")
            assert not proof, f"the task's code ran as the desktop user and reached X: {proof!r}"
            assert not window, "the task's code opened a window on the screen"
    finally:
        launcher.close()
        desktop.close()
