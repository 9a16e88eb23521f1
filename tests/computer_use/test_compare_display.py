"""The screen-change rule on a real X server: real windows, a real caret, the real pointer."""

from __future__ import annotations

import pytest
from PIL import Image, ImageChops

from computer_use.approval.compare import Box, compare
from tests.computer_use import gate_xvfb
from tests.computer_use.gate_xvfb import XDisplay

xvfb = gate_xvfb.xvfb
desktop = gate_xvfb.desktop

pytestmark = pytest.mark.display

BUTTON_WINDOW = """
root.title("target")
root.geometry("300x200+100+100")
tk.Button(root, text="Delete", width=12).place(x=90, y=80)
"""
BUTTON = (100 + 150, 100 + 95)


def differs(base: Image.Image) -> object:
    return lambda image: ImageChops.difference(base, image).getbbox() is not None


def test_a_window_moved_over_the_target_matters(desktop: XDisplay) -> None:
    desktop.tk(BUTTON_WINDOW)
    desktop.window("target")
    desktop.spawn("xterm", "-title", "intruder", "-geometry", "40x10+600+450")
    intruder = desktop.window("intruder")
    approved = desktop.settled()

    desktop.xdotool("windowmove", intruder, "180", "150")
    now = desktop.until(differs(approved), "the xterm moving")  # type: ignore[arg-type]
    now = desktop.settled()

    result = compare(approved, now, [BUTTON])
    assert result.matters, result
    assert "the target at (250, 195)" in result.reason


def test_a_blinking_caret_in_an_xterm_does_not_matter(desktop: XDisplay) -> None:
    # `cat` waits at the top-left with a block cursor that blinks every 250 ms.
    desktop.spawn(
        "xterm",
        "-title",
        "typing",
        "-bc",
        "-bcn",
        "250",
        "-bcf",
        "250",
        "-geometry",
        "60x10+40+40",
        "-e",
        "cat",
    )
    window = desktop.window("typing")
    desktop.xdotool("windowfocus", "--sync", window)
    approved = desktop.capture()
    blinked = desktop.until(differs(approved), "the caret blinking")  # type: ignore[arg-type]
    caret = ImageChops.difference(approved, blinked).getbbox()
    assert caret is not None
    # The action's target is right next to the caret: only the caret rule can excuse it.
    target = (caret[2] + 10, caret[1] + 5)

    result = compare(approved, blinked, [target])
    assert not result.matters, result
    assert result.reason == "only a caret changed; ignored"


def test_the_pointer_moving_away_from_the_target_does_not_matter(desktop: XDisplay) -> None:
    # A canvas has no hover effect: what changes is the pointer's image alone.
    desktop.tk(
        """
root.title("canvas")
root.geometry("300x200+100+100")
tk.Canvas(root, background="white").pack(fill="both", expand=True)
"""
    )
    desktop.window("canvas")
    desktop.xdotool("mousemove", "600", "500")
    desktop.settled()
    start = desktop.pointer()
    approved = desktop.capture(with_cursor=True)
    target = (250, 200)

    desktop.xdotool("mousemove", "370", "280")
    now = desktop.until(differs(approved), "the pointer moving", with_cursor=True)  # type: ignore[arg-type]

    result = compare(approved, now, [target], pointers=[start, desktop.pointer()])
    assert not result.matters, result
    assert result.reason == "only the pointer changed; ignored"
    # The capture really holds the pointer: unexplained, the same change matters.
    assert compare(approved, now, [target]).matters
    # At the target nothing is explained away as the pointer (the driver's captures have none).
    assert compare(approved, now, [(372, 284)], pointers=[start, desktop.pointer()]).matters


def test_a_clock_updating_in_a_corner_does_not_matter(desktop: XDisplay) -> None:
    desktop.tk(BUTTON_WINDOW)
    desktop.window("target")
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

    # A bottom panel, as a window manager reports it outside its work area.
    result = compare(approved, now, [BUTTON], panels=[Box(0, 736, 1024, 768)])
    assert not result.matters, result
    assert result.ignored and all(box.left >= 900 and box.top >= 740 for box in result.ignored)


def test_a_dialog_opening_matters(desktop: XDisplay) -> None:
    desktop.tk(BUTTON_WINDOW)
    desktop.window("target")
    approved = desktop.settled()

    desktop.spawn("xmessage", "-center", "-title", "dialog", "Discard all changes?")
    desktop.window("dialog")
    now = desktop.settled()

    result = compare(approved, now, [BUTTON])
    assert result.matters, result
    assert result.reason.startswith("the screen changed in 1 place")
