"""How long a screenshot takes from the X server to a model-ready image (scaled and encoded).

Starts its own Xvfb at each size, fills the screen with terminals full of anti-aliased text (a
screen of text is the hard case for image codecs; a flat desktop is much cheaper), then times, over
N captures of each (interleaved, in one process):
  grab      mss reading the pixels only: the floor, what any capture pays
  jpeg      `X11Screen.capture()` as the toolset uses it: grab + scale + JPEG q85 (the default)
  png       the same with PNG (compress level 1)
  webp      the same with WebP (q85, fastest method)
and prints each one's median and p95, the image size sent and the encoded bytes.
Usage: python bench/screenshot.py [--runs 100] [--sizes 1280x800 1920x1080]
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from computer_use.screen.base import Encoding
from computer_use.screen.x11 import X11Screen


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


@contextmanager
def xvfb(width: int, height: int) -> Iterator[str]:
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
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
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    # Read up to the newline: Xvfb writes the number and the newline separately, and dies if the
    # pipe is closed between the two.
    data = b""
    deadline = time.monotonic() + 30
    while not data.endswith(b"\n") and time.monotonic() < deadline:
        ready, _, _ = select.select([read_end], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(read_end, 32) if ready else b""
        if not chunk:
            break
        data += chunk
    os.close(read_end)
    number = data.decode().strip()
    clients: list[subprocess.Popen[bytes]] = []
    try:
        if not number.isdigit():
            sys.exit(f"Xvfb {width}x{height} did not start")
        display = f":{number}"
        env = {**os.environ, "DISPLAY": display}
        # Four terminals tiling the screen, each printing text that fills it.
        columns, rows = width // 2 // 7, height // 2 // 15
        for index in range(4):
            x, y = (index % 2) * width // 2, (index // 2) * height // 2
            clients.append(
                subprocess.Popen(
                    [
                        "xterm",
                        "-fa",
                        "DejaVu Sans Mono",
                        "-fs",
                        "9",
                        "-geometry",
                        f"{columns}x{rows}+{x}+{y}",
                        "-bg",
                        ["white", "black", "#202840", "#f8f4e8"][index],
                        "-fg",
                        ["black", "#c0ffc0", "white", "#403020"][index],
                        "-e",
                        "sh",
                        "-c",
                        "ls -la /usr/lib /usr/share /usr/bin; sleep 3600",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        time.sleep(3)  # let the terminals draw; nothing is timed yet
        yield display
    finally:
        for client in clients:
            client.terminate()
            client.wait()
        server.terminate()
        server.wait()


def measure(display: str, runs: int) -> dict[str, Any]:
    screens = {
        name: X11Screen(display, encoding=Encoding(format=name))  # type: ignore[arg-type]
        for name in ("jpeg", "png", "webp")
    }
    grabber = screens["jpeg"]

    def grab() -> None:
        mss = grabber._mss()
        mss.grab(mss.monitors[0])

    cases: dict[str, Callable[[], object]] = {
        "grab": grab,
        **{name: screen.capture for name, screen in screens.items()},
    }
    for action in cases.values():  # warm up: open mss, load codecs
        for _ in range(3):
            action()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(runs):
        for name, action in cases.items():
            started = time.perf_counter()
            action()
            samples[name].append(time.perf_counter() - started)
    sizes = {name: len(screen.capture().data) for name, screen in screens.items()}
    shot = screens["jpeg"].capture().shot_size
    for screen in screens.values():
        screen.close()
    return {"samples": samples, "bytes": sizes, "shot": shot}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--sizes", nargs="+", default=["1280x800", "1920x1080"])
    args = parser.parse_args()
    for tool in ("Xvfb", "xterm", "xdotool"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is needed: apt-get install xvfb xterm xdotool (or run `make test`)")
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        with xvfb(width, height) as display:
            result = measure(display, args.runs)
        shot = result["shot"]
        print(
            f"\nscreen {width}x{height} -> model image {shot.width}x{shot.height}, {args.runs} runs"
        )
        print(f"{'case':<6}{'median ms':>11}{'p95 ms':>9}{'bytes':>10}")
        for name, values in result["samples"].items():
            size_bytes = result["bytes"].get(name, width * height * 4)
            print(
                f"{name:<6}{statistics.median(values) * 1000:>11.1f}"
                f"{p95(values) * 1000:>9.1f}{size_bytes:>10}"
            )


if __name__ == "__main__":
    main()
