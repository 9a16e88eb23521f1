"""Wall time of `dispatch run` on a one-command task file, against `docker run` of that command.

Prints, over N runs of each (interleaved), the median and p95 of:
  baseline  `docker run --rm --network none IMAGE sh -c 'echo hi'`
  run       `dispatch run tasks.yaml` with one command task running the same command, end to
            end: a new Python process, a temporary data directory and database, the task
            queued, run in a fresh hardened sandbox, reported, everything removed; the
            template database already in the cache (`$XDG_CACHE_HOME/dispatch`), as on any
            machine after its first run
  run-cold  the same with an empty cache each time (a CI job that keeps no cache): the
            template database is made first
and the ratio of the medians (goal: at most 1.5x). Every run's JSON result is checked (passed,
output `hi`), so a run that fails fast cannot pass for a fast one.

Two parts of `run` are also measured alone, to show where its floor is:
  imports   a new Python process that loads what a command run loads (the controller, its
            store on SQLAlchemy, docker-py, pydantic) and ends, doing nothing else
  imports-min  the same for the least any run of this design loads: the command line, the
            task file's models (pydantic), the sandbox's spec, docker-py and the audit log,
            without the controller and its database
  sandbox   the run's hardened sandbox driven from this (warm) process: start, exec the
            command, remove; the engine's share of a run
The project's own modules are compiled first (`compileall`, as `make` does at install), so a
shell with PYTHONDONTWRITEBYTECODE set does not measure compiling them on every run.
Usage: python bench/headless.py [--runs 10]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sandbox import SandboxSpec, create
from sandbox.base import DEFAULT_IMAGE

COMMAND = ["sh", "-c", "echo hi"]
ROOT = Path(__file__).resolve().parent.parent
# What a run of one command task loads, and nothing done with it.
IMPORTS = (
    "import gc, controller.cli.run, controller.headless.runner, controller.service, "
    "controller.execution.submission, controller.headless.template, sandbox.docker; gc.freeze()"
)
IMPORTS_MIN = (
    "import gc, controller.cli.run, controller.headless.taskfile, controller.execution.spec, "
    "sandbox.docker, computer_use.audit.chain; gc.freeze()"
)


def p95(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def timed(command: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {done.returncode}:\n{done.stderr}")
    if "--json" in command:
        (task,) = json.loads(done.stdout)["tasks"]
        assert (task["result"], task["output"]) == ("passed", "hi\n"), task
    else:
        assert done.stdout == "hi\n", done.stdout
    return elapsed


def sandbox_alone(image: str) -> float:
    """Start the run's sandbox, exec the command in it, remove it: seconds."""
    started = time.perf_counter()
    box = create("docker", SandboxSpec(image=image, deadline_s=600))
    box.start()
    try:
        result = box.exec(COMMAND)
    finally:
        box.stop()
    elapsed = time.perf_counter() - started
    assert result.stdout == b"hi\n", result
    return elapsed


def imports_alone(env: dict[str, str], imports: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", imports], env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    args = parser.parse_args()
    docker_cli = shutil.which("docker")
    if docker_cli is None:
        sys.exit("the docker CLI is needed for the baseline; install docker.io")
    for package in ("controller", "sandbox", "computer_use"):
        compileall.compile_dir(ROOT / package, quiet=1)
    with tempfile.TemporaryDirectory(prefix="bench-headless-") as tmp:
        tasks = Path(tmp) / "tasks.yaml"
        tasks.write_text(f"tasks:\n  - name: hello\n    command: {COMMAND!r}\n".replace("'", '"'))
        # No config file of this machine's: the run is what a CI job would see.
        config = str(Path(tmp) / "config")
        env = {**os.environ, "XDG_CONFIG_HOME": config, "XDG_CACHE_HOME": str(Path(tmp) / "cache")}
        baseline = [docker_cli, "run", "--rm", "--network", "none", args.image, *COMMAND]
        run = [sys.executable, "-m", "controller", "run", str(tasks), "--json"]
        timed(baseline, env), timed(run, env)  # warm the page cache, the image, the template
        sandbox_alone(args.image)  # and this process's docker client
        samples: dict[str, list[float]] = {
            "baseline": [],
            "run": [],
            "run-cold": [],
            "imports": [],
            "imports-min": [],
            "sandbox": [],
        }
        for index in range(args.runs):
            samples["baseline"].append(timed(baseline, env))
            samples["run"].append(timed(run, env))
            cold = {**env, "XDG_CACHE_HOME": str(Path(tmp) / f"cold-{index}")}
            samples["run-cold"].append(timed(run, cold))
            samples["imports"].append(imports_alone(env, IMPORTS))
            samples["imports-min"].append(imports_alone(env, IMPORTS_MIN))
            samples["sandbox"].append(sandbox_alone(args.image))
    base = statistics.median(samples["baseline"])
    print(f"{'case':11} {'median':>9} {'p95':>9} {'vs baseline':>12}   ({args.runs} runs each)")
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"{name:11} {median * 1000:7.0f}ms {p95(values) * 1000:7.0f}ms {median / base:11.2f}x"
        )


if __name__ == "__main__":
    main()
