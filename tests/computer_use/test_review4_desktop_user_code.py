"""Review 4: code the task plants (unapproved bash steps, as the task's user) must never run as
the desktop user, who holds the X cookie and so the whole screen.

The screen agent runs `python3 -I` and the X server's script cds into its private home; but the
browser tool starts Chromium through `python3 -c PIPE_ADAPTER` (and the port transport's relay
through `python3 -c RELAY`) as the desktop user, with HOME=/tmp, without -I, in the sandbox's
working directory (the task's folder). Python then reads the user site of HOME (/tmp/.local/...:
its .pth files run at start) and puts the working directory first on sys.path (a `struct.py`
there replaces the adapter's `import struct`). Both are the task's to write.

Fixed: both helpers run `python3 -I`, and Chromium's HOME, profile and log are in a folder its
user makes (refused if the task made it first); each test shows its attack failing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from computer_use.browser.cdp_bridge import SandboxChromium
from computer_use.screen.desktop import DESKTOP_USER, DesktopFailed, SandboxDesktop
from sandbox import Mount, Sandbox, SandboxSpec, Spawner
from sandbox.images import DESKTOP_IMAGE
from tests.sandbox.conftest import MakeSandbox

T = TypeVar("T")

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


def poll(predicate: Callable[[], T], timeout_s: float) -> T:
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


def as_desktop_user(box: Sandbox, script: str) -> str:
    """What the desktop user sees (the test's own look; the task cannot do this)."""
    assert isinstance(box, Spawner)
    process = box.spawn(["sh", "-c", f"{script}; echo '<end>'"], user=DESKTOP_USER)
    lines = []
    try:
        while True:
            line = process.read_line().decode(errors="replace")
            if not line or line.strip() == "<end>":
                break
            lines.append(line)
    finally:
        process.close()
    return "".join(lines)


def test_the_browser_log_does_not_follow_a_task_symlink(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    box = make_box(make_sandbox, workspace, writable=False)
    desktop = SandboxDesktop(box, width=1024, height=768)
    desktop.start(terminal=False)
    before = as_desktop_user(box, "sha256sum /tmp/.dispatch-desktop/.Xauthority")
    planted = box.exec(
        ["ln", "-s", "/tmp/.dispatch-desktop/.Xauthority", "/tmp/chromium-stderr.log"]
    )
    assert planted.ok, planted.describe()
    launcher = SandboxChromium(box, start_timeout_s=60)
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            try:
                launcher.connect(playwright)
            except Exception as exc:
                print(f"browser: {exc}")
            after = as_desktop_user(box, "sha256sum /tmp/.dispatch-desktop/.Xauthority")
            print(f"cookie before {before!r} after {after!r}")
            assert after == before, "the task's symlink made the desktop user clobber its cookie"
    finally:
        launcher.close()
        desktop.close()


def test_the_browser_profile_is_not_the_tasks(make_sandbox: MakeSandbox, workspace: Path) -> None:
    box = make_box(make_sandbox, workspace, writable=False)
    made = box.exec(["sh", "-c", "mkdir -m 0777 /tmp/chromium"])
    assert made.ok, made.describe()
    launcher = SandboxChromium(box, start_timeout_s=60)
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            started = True
            try:
                launcher.connect(playwright)
            except Exception as exc:
                started = False
                print(f"browser: {exc}")
            profile = poll(lambda: box.exec(["ls", "/tmp/chromium"]).stdout, 20)
            print(f"profile: {profile!r}")
            # As the task's user: swap the browser's profile out from under it.
            swapped = box.exec(
                [
                    "sh",
                    "-c",
                    "ls -ld /tmp/chromium; mv /tmp/chromium/Default /tmp/chromium/taken"
                    " && ls /tmp/chromium/taken | head -3",
                ]
            )
            print(f"swapped: {swapped.describe()} {swapped.stdout[:200]!r}")
            assert not (started and swapped.ok), "the task moved the browser's own profile"
    finally:
        launcher.close()


FONTS_CONF = """<?xml version="1.0"?>
<!DOCTYPE fontconfig SYSTEM "fonts.dtd">
<fontconfig>
  <match target="pattern">
    <edit name="family" mode="prepend" binding="strong"><string>DejaVu Sans Mono</string></edit>
  </match>
</fontconfig>
"""
MEASURE = "<span id=t style='font-family: sans-serif; font-size: 20px'>iiiiiiiiiiiiiiiiiiii</span>"


def text_width(box: Sandbox) -> float:
    """How wide the browser the person sees draws a line of sans-serif text."""
    from playwright.sync_api import sync_playwright

    launcher = SandboxChromium(box, start_timeout_s=60)
    try:
        with sync_playwright() as playwright:
            page = launcher.connect(playwright).new_page()
            page.set_content(MEASURE)
            return float(page.evaluate("document.getElementById('t').offsetWidth"))
    finally:
        launcher.close()


def test_the_task_cannot_choose_the_browsers_fonts(
    make_sandbox: MakeSandbox, workspace: Path
) -> None:
    # Chromium makes /tmp/.config itself (as the desktop user) when it first starts: the task
    # plants before that, as any bash step before the first browser call does.
    clean = make_box(make_sandbox, workspace, writable=False)
    before = text_width(clean)
    box = make_box(make_sandbox, workspace, writable=False)
    planted = box.exec(
        [
            "sh",
            "-c",
            "mkdir -p /tmp/.config/fontconfig && "
            'printf %s "$1" > /tmp/.config/fontconfig/fonts.conf',
            "sh",
            FONTS_CONF,
        ]
    )
    assert planted.ok, planted.describe()
    after = text_width(box)
    print(f"width before {before}, after the task's fonts.conf {after}")
    assert after == before, "the task's fonts.conf changed how the browser draws text"
