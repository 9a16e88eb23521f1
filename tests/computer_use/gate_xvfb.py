"""A throwaway Xvfb display for the compare and gate tests, with real windows and captures.

Captures use `mss` directly (the screen driver's own capture may not be merged yet); windows are
xterm, xmessage and small Tk programs, moved with xdotool. Every wait polls with a deadline.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import mss
import pytest
from PIL import Image

SCREEN = (1024, 768)
DEADLINE_S = 30.0
TOOLS = ("Xvfb", "xterm", "xdotool", "xmessage", "xdpyinfo")


@dataclass
class XDisplay:
    name: str
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DISPLAY": self.name}

    def spawn(self, *args: str) -> subprocess.Popen[bytes]:
        child = subprocess.Popen(
            args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.children.append(child)
        return child

    def tk(self, program: str) -> subprocess.Popen[bytes]:
        """Run a Tk program (its source, with `root` already made) in its own process."""
        source = f"import tkinter as tk\nroot = tk.Tk()\n{program}\nroot.mainloop()\n"
        return self.spawn(sys.executable, "-c", source)

    def wait_ready(self) -> None:
        """Wait until clients can connect: the display number is announced a little earlier."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            probe = subprocess.run(["xdpyinfo"], env=self.env, capture_output=True)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError(f"Xvfb {self.name} accepted no client within {DEADLINE_S} s")

    def xdotool(self, *args: str) -> str:
        done = subprocess.run(
            ["xdotool", *args], env=self.env, capture_output=True, text=True, timeout=DEADLINE_S
        )
        if done.returncode != 0:
            raise AssertionError(
                f"xdotool {args} failed on {self.env['DISPLAY']!r}: {done.stderr.strip()}"
            )
        return done.stdout.strip()

    def window(self, name: str) -> str:
        """The id of the visible window called `name`, waiting for it to be mapped."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            found = subprocess.run(
                ["xdotool", "search", "--onlyvisible", "--name", f"^{name}$"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            if found.stdout.strip():
                return found.stdout.split()[0]
            time.sleep(0.1)
        raise AssertionError(f"no window named {name!r} appeared within {DEADLINE_S} s")

    def pointer(self) -> tuple[int, int]:
        fields = dict(
            part.split(":") for part in self.xdotool("getmouselocation").split() if ":" in part
        )
        return int(fields["x"]), int(fields["y"])

    def capture(self, *, with_cursor: bool = False) -> Image.Image:
        with mss.MSS(display=self.name, with_cursor=with_cursor) as grabber:
            shot = grabber.grab(grabber.monitors[1])
            return Image.frombytes("RGB", shot.size, shot.bgra, "raw", "BGRX")

    def settled(self) -> Image.Image:
        """A capture once two in a row are identical (windows have finished drawing)."""
        deadline = time.monotonic() + DEADLINE_S
        last = self.capture()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.capture()
            if now.tobytes() == last.tobytes():
                return now
            last = now
        raise AssertionError(f"the screen kept changing for {DEADLINE_S} s")

    def until(
        self, predicate: Callable[[Image.Image], bool], what: str, **capture: bool
    ) -> Image.Image:
        """Capture until `predicate` holds; fails naming `what` after the deadline."""
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            image = self.capture(**capture)
            if predicate(image):
                return image
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen within {DEADLINE_S} s")

    def close_windows(self) -> None:
        for child in self.children:
            child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        self.children.clear()


@pytest.fixture(scope="module")
def xvfb() -> Iterator[XDisplay]:
    """A fresh Xvfb screen; fails (not skips) when the X tools are missing: CI must run these."""
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(
            f"missing {', '.join(missing)}; run `make test` or "
            "`apt-get install xvfb xterm xdotool x11-utils`"
        )
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        # -noreset: without it the server resets whenever its last client leaves, dropping
        # connections made meanwhile and putting the pointer back in the middle.
        [
            "Xvfb",
            "-displayfd",
            str(write_end),
            "-noreset",
            "-nolisten",
            "tcp",
            "-screen",
            "0",
            "x".join(map(str, SCREEN)) + "x24",
        ],
        pass_fds=(write_end,),
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    # Read the whole line: closing the pipe before Xvfb wrote its newline kills it (EPIPE).
    announced = b""
    try:
        while not announced.endswith(b"\n"):
            chunk = os.read(read_end, 64)
            if not chunk:
                break
            announced += chunk
    finally:
        os.close(read_end)
    number = announced.decode().strip()
    if not number:
        server.kill()
        pytest.fail("Xvfb did not start (no display number reported)")
    display = XDisplay(f":{number}")
    try:
        display.wait_ready()
        yield display
    finally:
        display.close_windows()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            print(f"Xvfb {display.name} (pid {server.pid}) ignored SIGTERM; killing it")
            server.kill()
            server.wait()


@pytest.fixture
def desktop(xvfb: XDisplay) -> Iterator[XDisplay]:
    """The display with the pointer parked and every window of the test closed afterwards."""
    xvfb.xdotool("mousemove", "1000", "20")
    try:
        yield xvfb
    finally:
        xvfb.close_windows()
