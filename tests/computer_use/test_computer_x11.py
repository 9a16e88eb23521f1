"""The computer toolset on a real Xvfb display, through the SDK's own call pipeline.

Each call goes through `toolset.tool_result(tool_use)`, the path the tool runner takes (input
parsing, `confirm`, the member, rendering). What happened is read back independently: the probe
window's event log, the X server's pointer, files a shell wrote.
"""

from __future__ import annotations

import base64
import io
import shutil
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from anthropic.tools import BetaComputerConfirmContext
from PIL import Image, ImageChops

from computer_use.screen.computer import X11ComputerToolset
from computer_use.screen.scaling import MAX_LONG_EDGE_PX, MAX_PIXELS
from computer_use.screen.x11 import X11Screen
from tests.computer_use import probe_app
from tests.computer_use.xdisplay import ProbeApp, Xvfb, tool_use, wait_for, xvfb

pytestmark = pytest.mark.display

SIZES = [(1024, 768), (1280, 800), (1920, 1080), (2560, 1440)]
SIZE_IDS = [f"{w}x{h}" for w, h in SIZES]


@dataclass
class Recorder:
    """A confirm hook that records what it was asked (with the gate's screen-pixel view)."""

    toolset: X11ComputerToolset | None = None
    deny: set[str] = field(default_factory=set)
    asked: list[tuple[str, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    while_deciding: Callable[[], None] | None = None

    def __call__(self, context: BetaComputerConfirmContext) -> bool:
        assert self.toolset is not None
        given = context.input.model_dump(exclude_none=True)
        self.asked.append((context.member, given, self.toolset.to_screen(context.member, given)))
        if self.while_deciding is not None:
            self.while_deciding()
        return context.member not in self.deny


@dataclass
class Desktop:
    server: Xvfb
    toolset: X11ComputerToolset
    confirm: Recorder
    app: ProbeApp | None = None

    def run(self, name: str, **input: Any) -> dict[str, Any]:
        """One member call as the model would send it; the `tool_result` block."""
        return dict(self.toolset.tool_result(tool_use(name, **input)))

    def screenshot(self) -> Image.Image:
        result = self.run("screenshot")
        assert not result.get("is_error"), result
        (block,) = [b for b in result["content"] if b["type"] == "image"]
        return Image.open(io.BytesIO(base64.b64decode(block["source"]["data"]))).convert("RGB")

    def shot_point(self, x: int, y: int) -> list[int]:
        """Screen point (x, y) in the last screenshot's pixels, computed here, not by the code."""
        frame = self.toolset.last_frame
        assert frame is not None, "take a screenshot first"
        return [
            int(x * frame.shot_size.width / frame.screen_size.width),
            int(y * frame.shot_size.height / frame.screen_size.height),
        ]

    def expected_screen(self, point: list[int]) -> tuple[float, float]:
        """Where a screenshot point should land: the exact scaled point."""
        frame = self.toolset.last_frame
        assert frame is not None
        return (
            point[0] * frame.screen_size.width / frame.shot_size.width,
            point[1] * frame.screen_size.height / frame.shot_size.height,
        )


@contextmanager
def open_desktop(tmp_path: Path, size: tuple[int, int], *, app: bool) -> Iterator[Desktop]:
    with xvfb(*size) as server:
        recorder = Recorder()
        toolset = X11ComputerToolset(X11Screen(server.name), confirm=recorder)
        recorder.toolset = toolset
        desktop = Desktop(server, toolset, recorder)
        try:
            if app:
                desktop.app = ProbeApp(server, tmp_path / "events.jsonl")
            yield desktop
        finally:
            if desktop.app is not None:
                desktop.app.close()
            toolset.close()


@pytest.fixture
def desktop(tmp_path: Path) -> Iterator[Desktop]:
    """The probe window on a 1920x1080 screen: the model sees it scaled to 1429x804."""
    with open_desktop(tmp_path, (1920, 1080), app=True) as desktop:
        yield desktop


def probe(desktop: Desktop) -> ProbeApp:
    assert desktop.app is not None
    return desktop.app


def centre(rect: tuple[int, int, int, int]) -> tuple[int, int]:
    x, y, w, h = rect
    return x + w // 2, y + h // 2


def colour_at(image: Image.Image, point: list[int]) -> tuple[int, int, int]:
    pixel = image.getpixel((point[0], point[1]))
    assert isinstance(pixel, tuple)
    return pixel[0], pixel[1], pixel[2]


def near(colour: tuple[int, int, int], hex_colour: str, tolerance: int = 24) -> bool:
    want = tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
    return all(abs(a - b) <= tolerance for a, b in zip(colour, want, strict=True))


# -- the button: the whole path from screenshot to a click the window shows -------------------


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_a_click_aimed_at_the_button_in_the_screenshot_presses_it(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    with open_desktop(tmp_path, size, app=True) as desktop:
        before = desktop.screenshot()
        frame = desktop.toolset.last_frame
        assert frame is not None and before.size == tuple(frame.shot_size)
        target = desktop.shot_point(*centre(probe_app.BUTTON))
        # The colour is read beside the label, which is at the centre.
        x, y, _, _ = probe_app.BUTTON
        swatch = desktop.shot_point(x + 15, y + 15)
        assert near(colour_at(before, swatch), probe_app.BUTTON_COLOUR)

        result = desktop.run("left_click", coordinate=target)

        assert not result.get("is_error"), result
        wait_for(lambda: probe(desktop).of("button"), "the button's click handler")
        wait_for(
            lambda: near(colour_at(desktop.screenshot(), swatch), probe_app.CLICKED_COLOUR),
            "the button to turn green in a screenshot",
        )


@pytest.mark.parametrize("size", SIZES, ids=SIZE_IDS)
def test_the_pointer_lands_within_one_screen_pixel_at_every_size(
    tmp_path: Path, size: tuple[int, int]
) -> None:
    with open_desktop(tmp_path, size, app=False) as desktop:
        image = desktop.screenshot()
        width, height = image.size
        assert width <= MAX_LONG_EDGE_PX and height <= MAX_LONG_EDGE_PX
        assert width * height <= MAX_PIXELS
        assert abs(width / height - size[0] / size[1]) < 2 / height
        points = [[0, 0], [width - 1, height - 1], [width - 1, 0], [0, height - 1]]
        points += [[(17 + 97 * i) % width, (29 + 61 * i) % height] for i in range(25)]
        for point in points:
            assert not desktop.run("mouse_move", coordinate=point).get("is_error")
            landed = desktop.server.pointer()
            exact = desktop.expected_screen(point)
            assert abs(landed[0] - exact[0]) <= 1 and abs(landed[1] - exact[1]) <= 1, (
                point,
                landed,
                exact,
            )
            # And back: the cursor position the model reads is the point it aimed at.
            text = desktop.run("cursor_position")["content"][0]["text"]
            assert text == f"X={point[0]},Y={point[1]}"


# -- mouse members ---------------------------------------------------------------------------


def test_drag_presses_moves_and_releases_where_aimed(desktop: Desktop) -> None:
    desktop.screenshot()
    x, y, _, _ = probe_app.PAD
    start = desktop.shot_point(x + 50, y + 60)
    end = desktop.shot_point(x + 300, y + 250)

    result = desktop.run("left_click_drag", start_coordinate=start, coordinate=end)

    assert not result.get("is_error"), result
    (release,) = wait_for(lambda: probe(desktop).of("release1"), "the button release")
    (press,) = probe(desktop).of("press1")
    assert abs(press["x"] - desktop.expected_screen(start)[0]) <= 1
    assert abs(press["y"] - desktop.expected_screen(start)[1]) <= 1
    assert abs(release["x"] - desktop.expected_screen(end)[0]) <= 1
    assert abs(release["y"] - desktop.expected_screen(end)[1]) <= 1
    assert len(probe(desktop).of("drag_motion")) >= 2


def test_scroll_turns_the_wheel_at_the_point(desktop: Desktop) -> None:
    desktop.screenshot()
    x, y, _, _ = probe_app.PAD
    at = desktop.shot_point(x + 100, y + 100)

    down = desktop.run("scroll", coordinate=at, scroll_direction="down", scroll_amount=3)
    up = desktop.run("scroll", scroll_direction="up", scroll_amount=2)

    assert not down.get("is_error") and not up.get("is_error"), (down, up)
    wheel = wait_for(
        lambda: len(probe(desktop).of("wheel_up")) == 2 and probe(desktop).of("wheel_down"),
        "two wheel-up turns",
    )
    assert len(wheel) == 3
    assert all(abs(e["x"] - desktop.expected_screen(at)[0]) <= 1 for e in wheel)


def test_right_middle_double_and_triple_clicks(desktop: Desktop) -> None:
    desktop.screenshot()
    x, y, _, _ = probe_app.PAD
    at = desktop.shot_point(x + 200, y + 200)
    for member in ("right_click", "middle_click", "double_click", "triple_click"):
        assert not desktop.run(member, coordinate=at).get("is_error"), member
    wait_for(lambda: probe(desktop).of("triple"), "the triple click")
    assert len(probe(desktop).of("press3")) == 1
    assert len(probe(desktop).of("press2")) == 1
    # Tk logs each press under its most specific binding (press, double or triple): the
    # double click is two presses and the triple click three.
    left = [e for e in probe(desktop).events() if e["type"] in ("press1", "double", "triple")]
    assert len(left) == 5 and probe(desktop).of("double")


def test_mouse_down_and_up_act_where_the_pointer_is(desktop: Desktop) -> None:
    desktop.screenshot()
    x, y, _, _ = probe_app.PAD
    at = desktop.shot_point(x + 30, y + 30)
    desktop.run("mouse_move", coordinate=at)
    assert not desktop.run("left_mouse_down").get("is_error")
    wait_for(lambda: probe(desktop).of("press1"), "the left button press")
    assert not probe(desktop).of("release1")
    assert not desktop.run("left_mouse_up").get("is_error")
    (release,) = wait_for(lambda: probe(desktop).of("release1"), "the left button release")
    assert abs(release["x"] - desktop.expected_screen(at)[0]) <= 1


def test_a_click_with_a_modifier_holds_it_and_releases_it(desktop: Desktop) -> None:
    desktop.screenshot()
    x, y, _, _ = probe_app.PAD
    at = desktop.shot_point(x + 40, y + 40)
    desktop.run("left_click", coordinate=at, text="shift")
    desktop.run("left_click", coordinate=at)

    def presses() -> list[dict[str, Any]]:
        # The second click follows at once on the same spot: Tk reports it as a double click.
        return [e for e in probe(desktop).events() if e["type"] in ("press1", "double")]

    presses_seen = wait_for(lambda: len(presses()) == 2 and presses(), "two clicks")
    shift_mask = 1
    assert presses_seen[0]["state"] & shift_mask
    assert not presses_seen[1]["state"] & shift_mask, "shift stayed down after the click"


# -- keyboard members ------------------------------------------------------------------------


def test_key_combinations_and_repeats_reach_the_window(desktop: Desktop) -> None:
    desktop.screenshot()
    desktop.run("mouse_move", coordinate=desktop.shot_point(50, 50))

    assert not desktop.run("key", text="ctrl+s").get("is_error")
    assert not desktop.run("key", text="Return", repeat=3).get("is_error")

    wait_for(lambda: probe(desktop).of("ctrl_s"), "ctrl+s")
    wait_for(
        lambda: len([e for e in probe(desktop).of("key_down") if e["keysym"] == "Return"]) == 3,
        "three Return presses",
    )


def test_hold_key_holds_then_releases(desktop: Desktop) -> None:
    desktop.screenshot()
    desktop.run("mouse_move", coordinate=desktop.shot_point(50, 50))

    assert not desktop.run("hold_key", text="shift", duration=1).get("is_error")

    wait_for(
        lambda: [e for e in probe(desktop).of("key_up") if e["keysym"] == "Shift_L"],
        "shift to be released",
    )
    downs = [e for e in probe(desktop).of("key_down") if e["keysym"] == "Shift_L"]
    assert downs


def test_zoom_returns_the_region_scaled_up(desktop: Desktop) -> None:
    desktop.screenshot()
    x, y, w, h = probe_app.RED_SQUARE
    region = [*desktop.shot_point(x + 5, y + 5), *desktop.shot_point(x + w - 5, y + h - 5)]

    result = desktop.run("zoom", region=region)

    assert not result.get("is_error"), result
    (block,) = result["content"]
    image = Image.open(io.BytesIO(base64.b64decode(block["source"]["data"]))).convert("RGB")
    assert image.width <= MAX_LONG_EDGE_PX and image.width * image.height <= MAX_PIXELS
    assert image.width > 500, "the crop was not scaled up to the image budget"
    r, g, b = image.split()
    mask = ImageChops.multiply(
        r.point(lambda v: 255 if v > 200 else 0),
        ImageChops.multiply(
            g.point(lambda v: 255 if v < 60 else 0), b.point(lambda v: 255 if v < 60 else 0)
        ),
    )
    red = mask.histogram()[255]
    assert red > 0.95 * image.width * image.height


# -- refusals and the confirm hook -----------------------------------------------------------


def test_nonsense_is_refused_with_a_message_and_nothing_happens(desktop: Desktop) -> None:
    desktop.screenshot()
    desktop.run("mouse_move", coordinate=[10, 10])
    where = desktop.server.pointer()

    refused = {
        "far outside": desktop.run("left_click", coordinate=[1920, 1080]),
        "bad key": desktop.run("key", text="ctrl+notakey"),
        "control char": desktop.run("type", text="ls\x1b[A"),
        "bad amount": desktop.run("scroll", scroll_direction="down", scroll_amount=0),
        "bad region": desktop.run("zoom", region=[50, 50, 10, 10]),
        "long wait": desktop.run("wait", duration=3600),
    }

    for name, result in refused.items():
        assert result.get("is_error"), name
    assert "1429x804 screenshot" in refused["far outside"]["content"][0]["text"]
    assert "unknown key name 'notakey'" in refused["bad key"]["content"][0]["text"]
    assert "U+001B" in refused["control char"]["content"][0]["text"]
    assert desktop.server.pointer() == where
    assert not probe(desktop).of("press1") and not probe(desktop).of("key_down")


def test_confirm_sees_every_call_in_screen_pixels_and_a_denial_stops_the_click(
    desktop: Desktop,
) -> None:
    desktop.screenshot()
    target = desktop.shot_point(*centre(probe_app.BUTTON))
    desktop.confirm.deny = {"left_click"}

    denied = desktop.run("left_click", coordinate=target)

    assert denied.get("is_error")
    assert "did not grant permission" in denied["content"][0]["text"]
    members = [member for member, _, _ in desktop.confirm.asked]
    assert members == ["screenshot", "left_click"]
    _, given, on_screen = desktop.confirm.asked[1]
    assert given["coordinate"] == target
    exact = desktop.expected_screen(target)
    assert abs(on_screen["coordinate"][0] - exact[0]) <= 1
    assert abs(on_screen["coordinate"][1] - exact[1]) <= 1

    # The denied click did nothing; an approved one lands where to_screen said.
    desktop.confirm.deny = set()
    assert not probe(desktop).of("button")
    desktop.run("left_click", coordinate=target)
    wait_for(lambda: probe(desktop).of("button"), "the approved click")
    assert list(desktop.server.pointer()) == desktop.confirm.asked[-1][2]["coordinate"]


def test_to_screen_gives_the_pointer_for_a_click_without_a_coordinate(desktop: Desktop) -> None:
    desktop.screenshot()
    desktop.run("mouse_move", coordinate=[700, 400])
    mapped = desktop.toolset.to_screen("left_click", {})
    assert mapped["coordinate"] == list(desktop.server.pointer())
    region = desktop.toolset.to_screen("zoom", {"region": [0, 0, 1429, 804]})
    assert region["region"] == [0, 0, 1920, 1080]


# -- typing into a real terminal -------------------------------------------------------------


@pytest.mark.skipif(shutil.which("xterm") is None, reason="xterm is not installed: run `make test`")
def test_typing_into_xterm_runs_the_command_literally(tmp_path: Path) -> None:
    out = tmp_path / "typed.txt"
    ready = tmp_path / "shell-ready"
    with open_desktop(tmp_path, (1280, 800), app=False) as desktop:
        terminal = subprocess.Popen(
            ["xterm", "-geometry", "100x30+0+0", "-e", "sh", "-c", f"touch {ready}; exec sh"],
            env={**desktop.server.env, "PS1": "$ ", "ENV": ""},
        )
        try:
            wait_for(lambda: window_mapped(desktop.server), "xterm to map its window")
            # Keys typed before the shell reads its terminal are lost on a busy machine.
            wait_for(ready.exists, "the shell in xterm to start")
            desktop.screenshot()
            desktop.run("left_click", coordinate=[300, 200])
            # Typed in pieces; one begins with "--" and names xdotool commands: it must reach
            # the shell as text, not as xdotool options or chained commands.
            long = "0123456789" * 10  # longer than one xdotool chunk
            for text in [f"echo '{long}", "--window 1 key ctrl+c", f' "$((6*7))"\' > {out}']:
                result = desktop.run("type", text=text)
                assert not result.get("is_error"), result
            assert not desktop.run("key", text="Return").get("is_error")

            wait_for(lambda: out.exists() and out.read_text().endswith("\n"), f"{out}")
            assert out.read_text() == f'{long}--window 1 key ctrl+c "$((6*7))"\n'
        finally:
            terminal.terminate()
            terminal.wait(timeout=10)


def window_mapped(server: Xvfb) -> bool:
    done = subprocess.run(
        ["xwininfo", "-root", "-tree"], env=server.env, capture_output=True, text=True, check=False
    )
    return '"XTerm"' in done.stdout


def test_a_click_without_a_coordinate_lands_where_the_person_approved_it(
    desktop: Desktop,
) -> None:
    desktop.screenshot()
    x, y, _, _ = probe_app.PAD
    approved = desktop.shot_point(x + 60, y + 60)
    desktop.run("mouse_move", coordinate=approved)
    shown = list(desktop.server.pointer())

    def person_moves_the_mouse() -> None:
        move = ["xdotool", "mousemove", "--sync", str(x + 300), str(y + 300)]
        subprocess.run(move, env=desktop.server.env, check=True)

    desktop.confirm.while_deciding = person_moves_the_mouse

    assert not desktop.run("left_click").get("is_error")

    (press,) = wait_for(lambda: probe(desktop).of("press1"), "the click")
    assert desktop.confirm.asked[-1][2]["coordinate"] == shown
    assert [press["x"], press["y"]] == shown
