"""How long a desktop sandbox takes from nothing to its first screenshot, against `docker run`.

Prints, over N runs of each (interleaved, in one process), the median and p95 of:
  baseline  `docker run --rm --network none DESKTOP_IMAGE true` (the same image, no screen)
  desktop   start the hardened sandbox, start Xvfb and openbox, attach the screen agent and
            take the first full screenshot, then remove the sandbox
and the ratio to the baseline. Usage: python bench/desktop_start.py [--runs 10]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

from computer_use.screen.desktop import SandboxDesktop
from sandbox import SandboxSpec, create
from sandbox.docker import connect
from sandbox.images import DESKTOP_IMAGE


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default=DESKTOP_IMAGE)
    args = parser.parse_args()
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        sys.exit("the docker CLI is needed for the baseline; install docker.io")
    client = connect()
    first_screenshot: list[float] = []

    def baseline() -> None:
        subprocess.run(
            [docker_cli, "run", "--rm", "--network", "none", args.image, "true"], check=True
        )

    def desktop() -> None:
        started = time.perf_counter()
        with create("docker", SandboxSpec(image=args.image), client=client) as box:
            screen = SandboxDesktop(box, width=1280, height=800)
            screen.start()
            assert screen.capture().size == (1280, 800)
            first_screenshot.append(time.perf_counter() - started)
            screen.close()

    cases = {"baseline": baseline, "desktop": desktop}
    for action in cases.values():  # warm caches once, untimed
        action()
    first_screenshot.clear()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, action in cases.items():
            samples[name].append(timed(action))

    base_median = statistics.median(samples["baseline"])
    print(f"desktop sandbox start, {args.runs} runs each, image {args.image}, screen 1280x800")
    print(f"{'case':<22}{'median ms':>11}{'p95 ms':>10}{'ratio':>8}")
    rows = {
        "baseline docker run": samples["baseline"],
        "start to 1st screenshot": first_screenshot,
        "... and removal": samples["desktop"],
    }
    for name, values in rows.items():
        median = statistics.median(values)
        print(
            f"{name:<22}{median * 1000:>11.0f}{p95(values) * 1000:>10.0f}"
            f"{median / base_median:>7.2f}x"
        )


if __name__ == "__main__":
    main()
