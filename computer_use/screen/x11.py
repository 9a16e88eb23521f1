"""The X11 screen: capture with mss, input with xdotool, on any X display (a desktop or Xvfb).

Input goes through `xdotool` subprocesses, the well-kept tool for XTEST input: it maps keysym
names and any Unicode character to keycodes (remapping a spare keycode when the layout lacks one),
which python-xlib would make us rewrite. Each call is an argv list without a shell, and free text
always follows `--`, so nothing the model sends is read as an option or another command.

mss objects are not thread-safe and are costly to open, so each thread keeps its own (the tool
runner and the approval gate capture from different threads).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence

import mss
from PIL import Image

from computer_use.screen.base import (
    Button,
    Encoding,
    Frame,
    MediaType,
    ScrollDirection,
    make_frame,
    zoom_image,
)
from computer_use.screen.scaling import ImageLimits, Point, Region, Scaler, Size

# Delay between typed characters: without one, X clients behind a busy server (or xterm's own
# input buffer) drop or reorder keys.
TYPE_DELAY_MS = 12
# Typing is sent in chunks so a long text neither hits argv limits nor blocks one call for long.
TYPE_CHUNK_CHARS = 64
CLICK_DELAY_MS = 80
XDOTOOL_TIMEOUT_S = 30.0
DRAG_STEPS = 8


class X11Error(RuntimeError):
    """The X display or xdotool failed; the message says which and how to fix it."""


class X11Screen:
    """The `Screen` of X display `display` (for example ":0" or ":99")."""

    def __init__(
        self,
        display: str,
        *,
        limits: ImageLimits | None = None,
        encoding: Encoding | None = None,
        xdotool: str | None = None,
    ) -> None:
        if not display:
            raise X11Error("no X display given: pass the display name, for example ':0'")
        found = xdotool or shutil.which("xdotool")
        if found is None:
            raise X11Error("xdotool is not installed: install it (apt-get install xdotool)")
        self.display = display
        self.limits = limits or ImageLimits()
        self.encoding = encoding or Encoding()
        self._xdotool = found
        self._env = {**os.environ, "DISPLAY": display}
        self._local = threading.local()
        self._all: list[mss.base.MSS] = []
        self._lock = threading.Lock()

    # -- capture ---------------------------------------------------------------------------

    def _mss(self) -> mss.base.MSS:
        grabber: mss.base.MSS | None = getattr(self._local, "mss", None)
        if grabber is None:
            try:
                grabber = mss.MSS(display=self.display)
            except Exception as exc:
                raise X11Error(
                    f"cannot open X display {self.display!r}: {exc}; is the X server running "
                    "and is this user allowed to connect (xhost / XAUTHORITY)?"
                ) from exc
            self._local.mss = grabber
            with self._lock:
                self._all.append(grabber)
        return grabber

    def size(self) -> Size:
        whole = self._mss().monitors[0]
        return Size(whole["width"], whole["height"])

    def capture(self) -> Frame:
        grabber = self._mss()
        shot = grabber.grab(grabber.monitors[0])
        taken = time.monotonic()
        return make_frame(
            bytes(shot.raw),
            Size(*shot.size),
            limits=self.limits,
            encoding=self.encoding,
            captured_at_s=taken,
        )

    def scaler(self) -> Scaler:
        return Scaler.for_screen(self.size(), self.limits)

    def grab(self, region: Region) -> Image.Image:
        """A full-resolution RGB copy of `region` of the screen."""
        grabber = self._mss()
        box = {"left": region.x0, "top": region.y0}
        shot = grabber.grab({**box, "width": region.size.width, "height": region.size.height})
        return Image.frombuffer("RGB", shot.size, bytes(shot.raw), "raw", "BGRX", 0, 1)

    def zoom(self, region: Region) -> tuple[bytes, MediaType]:
        data, _ = zoom_image(self.grab(region), self.limits, self.encoding)
        return data, self.encoding.media_type

    # -- input -----------------------------------------------------------------------------

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(
                [self._xdotool, *args],
                env=self._env,
                capture_output=True,
                text=True,
                timeout=XDOTOOL_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise X11Error(
                f"xdotool {args[0]} did not finish within {XDOTOOL_TIMEOUT_S:.0f} s on display "
                f"{self.display!r}; is the X server responding?"
            ) from exc
        if done.returncode != 0:
            raise X11Error(
                f"xdotool {args[0]} failed on display {self.display!r} "
                f"(exit {done.returncode}): {done.stderr.strip() or 'no message'}"
            )
        return done.stdout

    def pointer(self) -> Point:
        values = dict(
            line.split("=", 1)
            for line in self._run("getmouselocation", "--shell").splitlines()
            if "=" in line
        )
        try:
            return Point(int(values["X"]), int(values["Y"]))
        except (KeyError, ValueError) as exc:
            raise X11Error(f"xdotool getmouselocation gave no position: {values}") from exc

    def move(self, to: Point) -> None:
        # No --sync: it waits for a motion event, which never comes when the pointer is already
        # there (15 s). The X server handles this connection's requests in order anyway, so a
        # click sent after the move lands where the move put the pointer.
        self._run("mousemove", str(to.x), str(to.y))

    def click(
        self, button: Button, *, count: int = 1, at: Point | None = None, hold: Sequence[str] = ()
    ) -> None:
        args = ["mousemove", str(at.x), str(at.y)] if at is not None else []
        # xdotool sleeps --delay (100 ms unless given) after every click, the last one too.
        pause = CLICK_DELAY_MS if count > 1 else 0
        args += ["click", "--repeat", str(count), "--delay", str(pause), str(int(button))]
        with self._held(hold):
            self._run(*args)

    def button(self, button: Button, *, down: bool) -> None:
        self._run("mousedown" if down else "mouseup", str(int(button)))

    def drag(self, start: Point, end: Point, *, hold: Sequence[str] = ()) -> None:
        with self._held(hold):
            self._run("mousemove", str(start.x), str(start.y), "mousedown", "1")
            try:
                # Intermediate motion: toolkits start a drag only after seeing the pointer move
                # with the button down, and some ignore a single jump.
                for step in range(1, DRAG_STEPS + 1):
                    x = start.x + (end.x - start.x) * step // DRAG_STEPS
                    y = start.y + (end.y - start.y) * step // DRAG_STEPS
                    self._run("mousemove", str(x), str(y))
            finally:
                self._run("mouseup", "1")

    def scroll(
        self,
        direction: ScrollDirection,
        clicks: int,
        *,
        at: Point | None = None,
        hold: Sequence[str] = (),
    ) -> None:
        args = ["mousemove", str(at.x), str(at.y)] if at is not None else []
        args += ["click", "--repeat", str(clicks), "--delay", "30", str(int(direction))]
        with self._held(hold):
            self._run(*args)

    def key(self, keysyms: Sequence[str], *, repeat: int = 1) -> None:
        self._run("key", "--repeat", str(repeat), "--delay", "30", "--", "+".join(keysyms))

    def hold_key(self, keysyms: Sequence[str], duration_s: float) -> None:
        with self._held(keysyms):
            time.sleep(duration_s)

    def type_text(self, text: str) -> None:
        for start in range(0, len(text), TYPE_CHUNK_CHARS):
            chunk = text[start : start + TYPE_CHUNK_CHARS]
            self._run("type", "--delay", str(TYPE_DELAY_MS), "--", chunk)

    def _held(self, keysyms: Sequence[str]) -> _Held:
        return _Held(self, tuple(keysyms))

    def close(self) -> None:
        with self._lock:
            grabbers, self._all = self._all, []
        for grabber in grabbers:
            grabber.close()
        self._local = threading.local()


class _Held:
    """Keys held down for the duration of a `with` block, released even if the block fails."""

    def __init__(self, screen: X11Screen, keysyms: tuple[str, ...]) -> None:
        self._screen = screen
        self._keysyms = keysyms

    def __enter__(self) -> None:
        if self._keysyms:
            self._screen._run("keydown", "--", "+".join(self._keysyms))

    def __exit__(self, *exc: object) -> None:
        if self._keysyms:
            self._screen._run("keyup", "--", "+".join(reversed(self._keysyms)))
