"""Review 2: what the screen comparison ignored hid changes a person would care about.

- The pointer rule ignored any change up to 32x32 touching the pointer's position, and a click
  at the pointer (a pinned click, or after a `mouse_move` onto the target) has its target exactly
  there: a small button under the pointer replaced by another was not seen.
- The panel rule ignored small changes within 64 px of any screen edge: a window's own content
  there (an xterm's first line, a browser's address bar) changed and the approval still held.

Real windows on Xvfb; captures as the screen driver takes them (without the cursor image).
"""

from __future__ import annotations

import subprocess

import pytest
from PIL import Image, ImageChops

from computer_use.approval.compare import Box, compare, panels_outside
from computer_use.approval.gate import ApprovalOutcome, ApprovalRequest, Confirmer, OutcomeKind
from computer_use.screen.computer import X11ComputerToolset, workarea_panels
from computer_use.screen.x11 import X11Screen
from tests.computer_use import gate_xvfb
from tests.computer_use.gate_xvfb import XDisplay
from tests.computer_use.test_gate import FakePolicy, RecordingComputer, Verdict, click_use

pytestmark = pytest.mark.display

xvfb = gate_xvfb.xvfb
desktop = gate_xvfb.desktop

# A toolbar of small icon buttons, like a file manager's: "Save" at (212, 212).
TOOLBAR = """
root.title("toolbar")
root.geometry("300x200+100+100")
tk.Button(root, text="S", bg="#3060c0", fg="white", bd=0, highlightthickness=0).place(
    x=100, y=100, width=24, height=24)
"""
SAVE = (212, 212)
# What replaces it: a red "delete" icon of the same size, over the same spot.
REPLACEMENT = """
root.title("replacement")
root.overrideredirect(True)
root.geometry("24x24+200+200")
tk.Label(root, text="X", bg="#d02020", fg="white").pack(fill="both", expand=True)
"""


def differs(base: Image.Image) -> object:
    return lambda image: ImageChops.difference(base, image).getbbox() is not None


def test_a_small_button_under_the_pointer_replaced_at_the_target_matters(
    desktop: XDisplay,
) -> None:
    desktop.tk(TOOLBAR)
    desktop.window("toolbar")
    desktop.xdotool("mousemove", *map(str, SAVE))
    approved = desktop.settled()
    pointer = desktop.pointer()
    assert pointer == SAVE

    desktop.tk(REPLACEMENT)
    desktop.window("replacement")
    now = desktop.settled()

    result = compare(approved, now, [SAVE], pointers=[pointer, desktop.pointer()])
    # Before the fix: "only the pointer changed; ignored".
    assert result.matters, result
    assert "(212, 212)" in result.reason


def test_a_click_at_the_pointer_is_asked_again_when_the_button_under_it_is_replaced(
    desktop: XDisplay,
) -> None:
    desktop.tk(TOOLBAR)
    desktop.window("toolbar")
    desktop.xdotool("mousemove", *map(str, SAVE))
    desktop.settled()
    requests: list[ApprovalRequest] = []

    class ReplacedAfterApproval:
        def request(self, req: ApprovalRequest) -> ApprovalOutcome:
            requests.append(req)
            if len(requests) == 1:
                desktop.tk(REPLACEMENT)
                desktop.window("replacement")
                desktop.settled()
            return ApprovalOutcome(OutcomeKind.APPROVED, request_id=len(requests))

    hook = Confirmer(
        task_id=1,
        tool="computer",
        policy=FakePolicy(Verdict("ask")),
        gate=ReplacedAfterApproval(),
        capture=desktop.capture,
        pointer=desktop.pointer,
    )
    toolset = RecordingComputer(confirm=hook)
    result = toolset.tool_result(click_use(at=SAVE))

    assert not result.get("is_error"), result
    # Before the fix one request: the click ran on the red button nobody approved.
    assert len(requests) == 2, [r.replaced_because for r in requests]
    assert requests[1].replaces == 1


def xterm_at_top(desktop: XDisplay) -> str:
    desktop.spawn(
        "xterm", "-title", "top", "-geometry", "80x4+0+0", "-e", "sh", "-c", "cat; sleep 60"
    )
    window = desktop.window("top")
    desktop.xdotool("windowfocus", "--sync", window)
    return window


def test_text_typed_into_a_window_at_the_top_edge_matters(desktop: XDisplay) -> None:
    # An xterm's first line at y < 20, like a browser's address bar at the top of the screen.
    window = xterm_at_top(desktop)
    approved = desktop.settled()
    desktop.xdotool("type", "--window", window, "--delay", "20", "evil.example")
    now = desktop.until(differs(approved), "the typed text showing")  # type: ignore[arg-type]
    now = desktop.settled()
    changed = ImageChops.difference(approved, now).getbbox()
    assert changed is not None and changed[3] <= 40, changed

    result = compare(approved, now, [])
    # Before the fix: "only a small area at the screen's edge changed; ignored".
    assert result.matters, result


def set_workarea(desktop: XDisplay, x: int, y: int, width: int, height: int) -> None:
    """Publish a work area on the root window, as a window manager with panels does."""
    subprocess.run(
        [
            "xprop",
            "-root",
            "-f",
            "_NET_WORKAREA",
            "32c",
            "-set",
            "_NET_WORKAREA",
            f"{x}, {y}, {width}, {height}",
        ],
        env=desktop.env,
        check=True,
        timeout=30,
    )


def test_a_clock_in_a_panel_the_window_manager_reserves_is_ignored(desktop: XDisplay) -> None:
    set_workarea(desktop, 0, 0, 1024, 736)
    try:
        panels = workarea_panels(desktop.name)
    finally:
        subprocess.run(
            ["xprop", "-root", "-remove", "_NET_WORKAREA"], env=desktop.env, check=True, timeout=30
        )
    assert panels == (Box(0, 736, 1024, 768),)
    desktop.tk(
        """
import time
root.title("clock")
root.overrideredirect(True)
root.geometry("120x24+900+740")
label = tk.Label(root, font=("Helvetica", 11))
label.pack(fill="both", expand=True)
def tick():
    label.config(text=time.strftime("%H:%M:%S") + f".{int(time.time() * 10) % 10}")
    root.after(100, tick)
tick()
"""
    )
    desktop.window("clock")
    approved = desktop.capture()
    now = desktop.until(differs(approved), "the clock ticking")  # type: ignore[arg-type]

    result = compare(approved, now, [(250, 195)], panels=panels)
    assert not result.matters, result
    assert result.reason == "only a small area in a panel changed; ignored"
    # Outside any panel the window manager reserves, the same change matters.
    assert compare(approved, now, [(250, 195)]).matters


def test_no_work_area_means_no_panels(desktop: XDisplay) -> None:
    assert workarea_panels(desktop.name) == ()


def test_the_computer_toolset_reads_its_screens_panels(desktop: XDisplay) -> None:
    toolset = X11ComputerToolset(X11Screen(desktop.name), confirm=lambda ctx: True)
    try:
        assert toolset.panels() == ()
        set_workarea(desktop, 0, 28, 1024, 740)
        try:
            assert toolset.panels() == (Box(0, 0, 1024, 28),)
        finally:
            subprocess.run(
                ["xprop", "-root", "-remove", "_NET_WORKAREA"],
                env=desktop.env,
                check=True,
                timeout=30,
            )
    finally:
        toolset.close()
    # A screen reached another way (the desktop sandbox's agent) has none: nothing is excused.
    toolset.screen.display = "the desktop sandbox 0123456789ab"
    assert toolset.panels() == ()


def test_panels_are_the_screen_outside_the_work_area() -> None:
    screen = (1920, 1080)
    assert panels_outside(Box(0, 32, 1920, 1080), screen) == (Box(0, 0, 1920, 32),)
    assert panels_outside(Box(64, 0, 1920, 1040), screen) == (
        Box(0, 1040, 1920, 1080),
        Box(0, 0, 64, 1040),
    )
    assert panels_outside(Box(0, 0, 1920, 1080), screen) == ()
