"""Real X displays for the `display` tests: an Xvfb server per test and the probe window.

Helpers, not fixtures, so any test module (and later the gate's tests) can start a screen of the
size it needs; the fixtures that use them clean up and print what they started when a test fails.
"""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from anthropic.types.beta import BetaToolUseBlock
from Xlib import display as xdisplay

PROBE_APP = Path(__file__).with_name("probe_app.py")
START_DEADLINE_S = 30.0
EVENT_DEADLINE_S = 20.0


class Xvfb:
    """A running Xvfb server with a screen of `width`x`height` at 24 bits."""

    def __init__(self, width: int, height: int) -> None:
        if shutil.which("Xvfb") is None:
            pytest.skip(
                "Xvfb is not installed: run `make test` (it installs xvfb) or apt-get install xvfb"
            )
        self.width, self.height = width, height
        read_end, write_end = os.pipe()
        # -displayfd: Xvfb picks a free display number itself and writes it once it accepts
        # connections, so parallel test runs never race for a number. -noreset: without it the
        # server resets (pointer back to the centre) whenever its last client disconnects.
        self.process = subprocess.Popen(
            [
                "Xvfb",
                "-displayfd",
                str(write_end),
                "-screen",
                "0",
                f"{width}x{height}x24",
                "-nolisten",
                "tcp",
                "-noreset",
            ],
            pass_fds=(write_end,),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        os.close(write_end)
        try:
            number = _read_line(read_end, START_DEADLINE_S)
        finally:
            os.close(read_end)
        if not number.strip().isdigit():
            self.close()
            pytest.fail(f"Xvfb {width}x{height} did not start (pid {self.process.pid}): {number!r}")
        self.name = f":{number.strip()}"
        self.env = {**os.environ, "DISPLAY": self.name}

    def pointer(self) -> tuple[int, int]:
        """Where the X server says the pointer is, read independently of the code under test."""
        connection = xdisplay.Display(self.name)
        try:
            reply = connection.screen().root.query_pointer()
            return reply.root_x, reply.root_y
        finally:
            connection.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __repr__(self) -> str:
        return f"Xvfb({self.name}, {self.width}x{self.height}, pid {self.process.pid})"


def _read_line(fd: int, deadline_s: float) -> str:
    data = b""
    end = time.monotonic() + deadline_s
    while not data.endswith(b"\n") and time.monotonic() < end:
        ready, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, 64)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


@contextmanager
def xvfb(width: int, height: int) -> Iterator[Xvfb]:
    server = Xvfb(width, height)
    try:
        yield server
    except BaseException:
        print(f"display test failed on {server!r}")
        raise
    finally:
        server.close()


def wait_for(check: Callable[[], Any], what: str, deadline_s: float = EVENT_DEADLINE_S) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` at the deadline."""
    end = time.monotonic() + deadline_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {deadline_s:.0f} s waiting for {what}")
        time.sleep(0.05)


class ProbeApp:
    """The probe window (probe_app.py) on `server`, and the events it logged."""

    def __init__(self, server: Xvfb, events: Path) -> None:
        self.events_path = events
        self.process = subprocess.Popen(
            [sys.executable, str(PROBE_APP), str(events), str(server.width), str(server.height)],
            env=server.env,
        )
        wait_for(lambda: self.of("ready"), "the probe window to be ready", START_DEADLINE_S)

    def events(self) -> list[dict[str, Any]]:
        if not self.events_path.exists():
            return []
        lines = self.events_path.read_text().splitlines()
        # The last line may be half written.
        return [json.loads(line) for line in lines if line.endswith("}")]

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [event for event in self.events() if event["type"] == kind]

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_ids = itertools.count(1)


def tool_use(name: str, **input: Any) -> BetaToolUseBlock:
    """A `tool_use` block as the model sends it, for `toolset.tool_result` (the SDK's pipeline)."""
    return BetaToolUseBlock(
        id=f"toolu_{next(_ids):04d}",
        type="tool_use",
        name=name,
        input=input,
        toolset_name="computer",
    )
