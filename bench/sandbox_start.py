"""How long a sandbox takes to start, run one command and go away, against plain `docker run`.

Prints, over N runs of each (interleaved, in one process), the median and p95 of:
  baseline  `docker run --rm --network none IMAGE true`
  api       our Python API: start + exec(["true"]) + stop
  api+mount the same with one read-only folder granted (adds the mount identity check)
  cli       `dispatch sandbox run -- true`, end to end (a new Python process each time)
and each one's ratio to the baseline. With the libvirt backend installed and its image built,
VM rows follow (over --vm-runs runs, fewer: a cold boot under emulation takes seconds), timed
from start() to the first command's result (stop() is not timed):
  vm-cold     a VM booted from its disk (no saved state)
  vm-restore  a VM restored from the saved booted state (the backend's default)
Usage: python bench/sandbox_start.py [--runs 20] [--vm-runs 5 | --no-vm]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sandbox import SandboxSpec, create
from sandbox.base import DEFAULT_IMAGE
from sandbox.docker import connect
from sandbox.mounts import validate_mount


def timed(action: Callable[[], None]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--vm-runs", type=int, default=5)
    parser.add_argument("--no-vm", action="store_true", help="skip the libvirt rows")
    args = parser.parse_args()
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        sys.exit("the docker CLI is needed for the baseline; install docker.io")
    client = connect()

    def baseline() -> None:
        subprocess.run(
            [docker_cli, "run", "--rm", "--network", "none", args.image, "true"], check=True
        )

    def api() -> None:
        with create("docker", SandboxSpec(image=args.image), client=client) as box:
            assert box.exec(["true"]).ok

    def cli() -> None:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "controller",
                "sandbox",
                "run",
                "--image",
                args.image,
                "--",
                "true",
            ],
            check=True,
        )

    folder = Path(tempfile.mkdtemp(prefix="dispatch-bench-"))
    mount = validate_mount(folder)

    def api_mount() -> None:
        spec = SandboxSpec(image=args.image, mounts=(mount,))
        with create("docker", spec, client=client) as box:
            assert box.exec(["true"]).ok

    cases = {"baseline": baseline, "api": api, "api+mount": api_mount, "cli": cli}
    for action in cases.values():  # warm caches once, untimed
        action()
    samples: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, action in cases.items():
            samples[name].append(timed(action))

    folder.rmdir()
    vm_mode = None if args.no_vm else vm_samples(args.vm_runs, samples)
    base_median = statistics.median(samples["baseline"])
    print(f"sandbox start, {args.runs} runs each, image {args.image}")
    if vm_mode is not None:
        print(f"VM rows: {args.vm_runs} runs each, {vm_mode}")
    print(f"{'case':<11}{'median ms':>11}{'p95 ms':>10}{'ratio':>8}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"{name:<11}{median * 1000:>11.0f}{p95(values) * 1000:>10.0f}"
            f"{median / base_median:>7.2f}x"
        )


def vm_samples(runs: int, samples: dict[str, list[float]]) -> str | None:
    """Add the vm-cold and vm-restore rows; return the acceleration used (None: no libvirt)."""
    try:
        from sandbox.libvirt import LibvirtSandbox
    except ImportError as exc:
        print(f"no VM rows: {exc}; pip install 'dispatch[libvirt]'", file=sys.stderr)
        return None
    virt = "?"

    def first_result(use_saved: bool) -> float:
        nonlocal virt
        box = LibvirtSandbox(SandboxSpec(), use_saved=use_saved)
        try:
            started = time.perf_counter()
            box.start()
            assert box.exec(["true"]).ok
            elapsed = time.perf_counter() - started
            virt = box.virt or "?"
        finally:
            box.stop()
        return elapsed

    first_result(use_saved=True)  # makes the saved state if missing, untimed
    samples["vm-cold"], samples["vm-restore"] = [], []
    for _ in range(runs):
        samples["vm-cold"].append(first_result(use_saved=False))
        samples["vm-restore"].append(first_result(use_saved=True))
    return "KVM" if virt == "kvm" else "TCG emulation (no working KVM)"


if __name__ == "__main__":
    main()
