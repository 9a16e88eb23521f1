"""The computer toolset: every member of the SDK's `computer_toolset_20260801` on a `Screen`.

The model answers in pixels of the latest screenshot it was sent; each call is mapped to screen
pixels with that screenshot's `Scaler` by `to_screen`, the same mapping the approval gate sees
(through `to_screen`, from inside `confirm`) and the action then uses. A point the model sends
far outside the screenshot, a bad key name, an empty region or an out-of-range amount is refused
with a `ToolError` the model reads; nothing is pressed.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

from anthropic.tools import (
    BetaAbstractComputerToolset20260801,
    BetaComputerConfirmCallable,
    BetaComputerCursorPositionResult,
    BetaComputerMemberResult,
    BetaScreenshotResult,
    BetaToolsetCallContext,
    ToolError,
)
from anthropic.types.beta import (
    BetaComputerCursorPositionInput,
    BetaComputerDoubleClickInput,
    BetaComputerHoldKeyInput,
    BetaComputerKeyInput,
    BetaComputerLeftClickDragInput,
    BetaComputerLeftClickInput,
    BetaComputerLeftMouseDownInput,
    BetaComputerLeftMouseUpInput,
    BetaComputerMemberInput,
    BetaComputerMemberName,
    BetaComputerMiddleClickInput,
    BetaComputerMouseMoveInput,
    BetaComputerRightClickInput,
    BetaComputerScreenshotInput,
    BetaComputerScrollInput,
    BetaComputerTripleClickInput,
    BetaComputerTypeInput,
    BetaComputerWaitInput,
    BetaComputerZoomInput,
)
from pydantic import BaseModel
from Xlib import X
from Xlib import display as xdisplay
from Xlib.error import DisplayError, XError

from computer_use.approval.compare import Box, panels_outside
from computer_use.screen import keys
from computer_use.screen.base import Button, Frame, Screen, ScrollDirection
from computer_use.screen.scaling import Point, Scaler

MAX_KEY_REPEAT = 100
MAX_HOLD_S = 10
MAX_WAIT_S = 60
MAX_SCROLL_CLICKS = 50
MAX_TYPE_CHARS = 10_000
# Typing control characters (escape, ^C...) is a keystroke in disguise the approval card would
# not show: the model sends those with `key`. Newline and tab are typed as Return and Tab.
TYPEABLE_CONTROLS = frozenset("\n\t")

# Members that, while the model holds the left button down (`left_mouse_down`), drag: for the gate
# their input carries where the press was as `start_coordinate`, so the card shows a drag and a
# region rule judges both ends (see computer_use.approval.policy).
WHILE_HELD = frozenset({"mouse_move", "left_mouse_up"})

# Members that act where the pointer is when they get no coordinate: for the gate, `to_screen`
# fills in the pointer's position, so a region rule sees every click, and pins it: the call then
# acts there even if the pointer moved while a person was deciding (on a host display someone
# may be using the mouse, and the screen comparison ignores the cursor).
AT_POINTER = frozenset(
    {
        "left_click",
        "right_click",
        "middle_click",
        "double_click",
        "triple_click",
        "scroll",
        "left_mouse_down",
        "left_mouse_up",
    }
)
CLICKS: dict[str, tuple[Button, int]] = {
    "left_click": (Button.LEFT, 1),
    "right_click": (Button.RIGHT, 1),
    "middle_click": (Button.MIDDLE, 1),
    "double_click": (Button.LEFT, 2),
    "triple_click": (Button.LEFT, 3),
}
SCROLL: dict[str, ScrollDirection] = {
    "up": ScrollDirection.UP,
    "down": ScrollDirection.DOWN,
    "left": ScrollDirection.LEFT,
    "right": ScrollDirection.RIGHT,
}

# An X display name a local client can open (":0", "host:1.0"); the desktop sandbox's screen is
# reached through its screen agent instead and has no panels.
X_DISPLAY_NAME = re.compile(r"[\w.\-]*:\d+(\.\d+)?")

ClickInput = (
    BetaComputerLeftClickInput
    | BetaComputerRightClickInput
    | BetaComputerMiddleClickInput
    | BetaComputerDoubleClickInput
    | BetaComputerTripleClickInput
)


class X11ComputerToolset(BetaAbstractComputerToolset20260801):
    """The SDK's computer toolset on a `Screen` (an X display through `computer_use.screen.x11`).

    Args:
        screen: the display to drive; closed with the toolset.
        confirm: called by the SDK before every call with the member and its input; the approval
            gate. Required: keyboard members cannot run without one.
    """

    def __init__(self, screen: Screen, *, confirm: BetaComputerConfirmCallable) -> None:
        super().__init__(confirm=confirm)
        self.screen = screen
        self._frame_lock = threading.Lock()
        self._last_frame: Frame | None = None
        self._scaler: Scaler | None = None
        self._pinned: tuple[str, Point] | None = None
        # Where the model pressed the left button, while it holds it down.
        self._left_down_at: Point | None = None

    # -- for the gate and the audit ----------------------------------------------------------

    @property
    def last_frame(self) -> Frame | None:
        """The last screenshot sent to the model, whose pixels its coordinates refer to."""
        return self._last_frame

    @property
    def scaler(self) -> Scaler:
        """The mapping for the model's coordinates: the last screenshot's, else the screen's now."""
        with self._frame_lock:
            if self._scaler is None:
                self._scaler = self.screen.scaler()
            return self._scaler

    def capture(self) -> Frame:
        """A new capture of the screen, not sent to the model (for an approval or a comparison)."""
        return self.screen.capture()

    def panels(self) -> tuple[Box, ...]:
        """The screen's panels, for the approval comparison (`compare` rule 5): the strips its
        window manager keeps out of the work area; none when that cannot be read."""
        display = getattr(self.screen, "display", "")
        if not isinstance(display, str) or not X_DISPLAY_NAME.fullmatch(display):
            return ()
        try:
            return workarea_panels(display)
        except (DisplayError, XError, OSError):
            # No panels known: nothing is ignored for sitting at an edge (the strict side).
            return ()

    def to_screen(self, member: str, input: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
        """A member call's input with its points and region in screen pixels.

        `coordinate` and `start_coordinate` become `[x, y]` and `region` `[x0, y0, x1, y1]` on the
        screen; a pointer member without a coordinate gets the pointer's position, and the call
        that follows acts there (the gate calls this from `confirm`, once per call). While the
        model holds the left button down, a `mouse_move` or `left_mouse_up` is a drag: it gets
        the point of the press as `start_coordinate`. Other fields are kept as given.

        Raises:
            ToolError: a point or region the call would refuse.
        """
        given = input.model_dump(exclude_none=True) if isinstance(input, BaseModel) else dict(input)
        scaler = self.scaler
        mapped = dict(given)
        for field in ("coordinate", "start_coordinate"):
            if given.get(field) is not None:
                mapped[field] = list(scaler.to_screen(_pair(given[field], field), field=field))
        if given.get("region") is not None:
            mapped["region"] = list(scaler.region_to_screen(_quad(given["region"])))
        if member in AT_POINTER and given.get("coordinate") is None:
            pointer = self.screen.pointer()
            self._pinned = (member, pointer)
            mapped["coordinate"] = list(pointer)
        if member in WHILE_HELD:
            # Only this toolset says whether a move drags; the model's word is not taken for it.
            mapped.pop("start_coordinate", None)
            if self._left_down_at is not None:
                mapped["start_coordinate"] = list(self._left_down_at)
        return mapped

    def execute(
        self,
        context: BetaToolsetCallContext,
        name: BetaComputerMemberName,
        input: BetaComputerMemberInput,
    ) -> BetaComputerMemberResult:
        try:
            return super().execute(context, name, input)
        finally:
            # A pin serves the one call it was shown for.
            self._pinned = None

    def _at(self, member: str, coordinate: list[int] | None) -> Point | None:
        """Where a pointer member acts: its coordinate, else the position the gate was shown."""
        if coordinate is not None:
            return self._point(coordinate, "coordinate")
        if self._pinned is not None and self._pinned[0] == member:
            return self._pinned[1]
        return None

    def _move_to_pin(self, member: str) -> Point:
        """Put the pointer where the gate was shown `member` would act; where it is now."""
        now = self.screen.pointer()
        at = self._at(member, None)
        if at is not None and at != now:
            self.screen.move(at)
            return at
        return now

    # -- members -----------------------------------------------------------------------------

    def screenshot(
        self, context: BetaToolsetCallContext, input: BetaComputerScreenshotInput
    ) -> BetaScreenshotResult:
        frame = self.screen.capture()
        with self._frame_lock:
            self._last_frame = frame
            self._scaler = frame.scaler
        return BetaScreenshotResult(data=frame.base64(), media_type=frame.media_type)

    def zoom(
        self, context: BetaToolsetCallContext, input: BetaComputerZoomInput
    ) -> BetaScreenshotResult:
        region = self.scaler.region_to_screen(_quad(input.region))
        data, media_type = self.screen.zoom(region)
        return BetaScreenshotResult(
            data=base64.b64encode(data).decode("ascii"), media_type=media_type
        )

    def cursor_position(
        self, context: BetaToolsetCallContext, input: BetaComputerCursorPositionInput
    ) -> BetaComputerCursorPositionResult:
        x, y = self.scaler.to_shot(self.screen.pointer())
        return BetaComputerCursorPositionResult(x=x, y=y)

    def key(self, context: BetaToolsetCallContext, input: BetaComputerKeyInput) -> str | None:
        repeat = 1 if input.repeat is None else input.repeat
        if not 1 <= repeat <= MAX_KEY_REPEAT:
            raise ToolError(f"repeat {repeat} is out of range: send 1 to {MAX_KEY_REPEAT}")
        self.screen.key(keys.combo(input.text), repeat=repeat)
        return None

    def hold_key(
        self, context: BetaToolsetCallContext, input: BetaComputerHoldKeyInput
    ) -> str | None:
        if not 0 < input.duration <= MAX_HOLD_S:
            raise ToolError(
                f"duration {input.duration} s is out of range: hold a key 1 to {MAX_HOLD_S} s"
            )
        self.screen.hold_key(keys.combo(input.text), float(input.duration))
        return None

    def type(self, context: BetaToolsetCallContext, input: BetaComputerTypeInput) -> str | None:
        text = input.text
        if not text:
            raise ToolError("text is empty: send the text to type")
        if len(text) > MAX_TYPE_CHARS:
            raise ToolError(
                f"text has {len(text)} characters: type at most {MAX_TYPE_CHARS} per call"
            )
        controls = sorted(
            {f"U+{ord(c):04X}" for c in text if not c.isprintable() and c not in TYPEABLE_CONTROLS}
        )
        if controls:
            raise ToolError(
                f"text contains control characters ({', '.join(controls)}): type printable text, "
                "and press control keys with the key action"
            )
        self.screen.type_text(text)
        return None

    def mouse_move(
        self, context: BetaToolsetCallContext, input: BetaComputerMouseMoveInput
    ) -> str | None:
        self.screen.move(self._point(input.coordinate, "coordinate"))
        return None

    def left_mouse_down(
        self, context: BetaToolsetCallContext, input: BetaComputerLeftMouseDownInput
    ) -> str | None:
        at = self._move_to_pin("left_mouse_down")
        self.screen.button(Button.LEFT, down=True)
        self._left_down_at = at
        return None

    def left_mouse_up(
        self, context: BetaToolsetCallContext, input: BetaComputerLeftMouseUpInput
    ) -> str | None:
        self._move_to_pin("left_mouse_up")
        self.screen.button(Button.LEFT, down=False)
        self._left_down_at = None
        return None

    def _click(self, member: str, input: ClickInput) -> None:
        button, count = CLICKS[member]
        at = self._at(member, input.coordinate)
        self.screen.click(button, count=count, at=at, hold=_modifiers(input.text))

    def left_click(
        self, context: BetaToolsetCallContext, input: BetaComputerLeftClickInput
    ) -> str | None:
        self._click("left_click", input)
        return None

    def right_click(
        self, context: BetaToolsetCallContext, input: BetaComputerRightClickInput
    ) -> str | None:
        self._click("right_click", input)
        return None

    def middle_click(
        self, context: BetaToolsetCallContext, input: BetaComputerMiddleClickInput
    ) -> str | None:
        self._click("middle_click", input)
        return None

    def double_click(
        self, context: BetaToolsetCallContext, input: BetaComputerDoubleClickInput
    ) -> str | None:
        self._click("double_click", input)
        return None

    def triple_click(
        self, context: BetaToolsetCallContext, input: BetaComputerTripleClickInput
    ) -> str | None:
        self._click("triple_click", input)
        return None

    def left_click_drag(
        self, context: BetaToolsetCallContext, input: BetaComputerLeftClickDragInput
    ) -> str | None:
        start = self._point(input.start_coordinate, "start_coordinate")
        end = self._point(input.coordinate, "coordinate")
        self.screen.drag(start, end, hold=_modifiers(input.text))
        return None

    def scroll(self, context: BetaToolsetCallContext, input: BetaComputerScrollInput) -> str | None:
        if not 1 <= input.scroll_amount <= MAX_SCROLL_CLICKS:
            raise ToolError(
                f"scroll_amount {input.scroll_amount} is out of range: "
                f"send 1 to {MAX_SCROLL_CLICKS} wheel clicks"
            )
        direction = SCROLL.get(str(input.scroll_direction))
        if direction is None:
            raise ToolError(
                f"scroll_direction {input.scroll_direction!r} is not one of up, down, left, right"
            )
        at = self._at("scroll", input.coordinate)
        self.screen.scroll(direction, input.scroll_amount, at=at, hold=_modifiers(input.text))
        return None

    def wait(self, context: BetaToolsetCallContext, input: BetaComputerWaitInput) -> str | None:
        if not 0 <= input.duration <= MAX_WAIT_S:
            raise ToolError(
                f"duration {input.duration} s is out of range: wait 0 to {MAX_WAIT_S} s"
            )
        time.sleep(input.duration)
        return None

    def close(self) -> None:
        super().close()
        try:
            if self._left_down_at is not None:
                # A button the model pressed and never released would stay down for the next user.
                self.screen.button(Button.LEFT, down=False)
        finally:
            self.screen.close()

    def _point(self, value: list[int], field: str) -> Point:
        return self.scaler.to_screen(_pair(value, field), field=field)


def workarea_panels(display: str) -> tuple[Box, ...]:
    """The panels of X display `display`: the screen outside the work area its window manager
    publishes (`_NET_WORKAREA`, the first desktop's); none when it publishes none.

    Raises:
        Xlib.error.DisplayError: the display cannot be opened.
    """
    connection = xdisplay.Display(display)
    try:
        screen = connection.screen()
        atom = connection.intern_atom("_NET_WORKAREA", only_if_exists=True)
        found = screen.root.get_full_property(atom, X.AnyPropertyType) if atom else None
        if found is None or len(found.value) < 4:
            return ()
        x, y, width, height = (int(v) for v in found.value[:4])
        size = (screen.width_in_pixels, screen.height_in_pixels)
        return panels_outside(Box(x, y, x + width, y + height), size)
    finally:
        connection.close()


def _pair(value: Any, field: str) -> tuple[int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ToolError(f"{field} must be [x, y] in screenshot pixels, got {value!r}")
    return int(value[0]), int(value[1])


def _quad(value: Any) -> tuple[int, int, int, int]:
    if (
        not isinstance(value, list | tuple)
        or len(value) != 4
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise ToolError(f"region must be [x0, y0, x1, y1] in screenshot pixels, got {value!r}")
    return int(value[0]), int(value[1]), int(value[2]), int(value[3])


def _modifiers(text: str | None) -> tuple[str, ...]:
    return () if text is None or not text.strip() else keys.combo(text)
