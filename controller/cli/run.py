"""`dispatch run TASKFILE`: run a task file headlessly, for CI (see controller/headless)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import click

EXIT_CODES = """\b
Exit codes:
  0    every task succeeded
  1    a task failed
  2    the policy denied an action (the first such task is named)
  3    the task file, the policy or a setting is wrong; nothing ran
  4    infrastructure: the Docker engine, an image, the display or the model API;
       or the report or artifacts could not be written
  130  interrupted (SIGINT); 143 terminated (SIGTERM); sandboxes are removed either way
"""


class Progress:
    """One updating line on a terminal; plain lines otherwise (CI logs)."""

    def __init__(self, total: int, *, live: bool, quiet: bool) -> None:
        self.total = total
        self.live = live
        self.quiet = quiet
        self.started = time.monotonic()
        self._width = 0

    def __call__(self, index: int, name: str, what: str) -> None:
        if self.quiet:
            return
        elapsed = time.monotonic() - self.started
        line = f"[{index + 1}/{self.total}] {name}: {what} ({elapsed:.1f} s)"
        line = "".join(c if c.isprintable() else "?" for c in line)
        if self.live:
            width = shutil.get_terminal_size().columns - 1
            shown = line[:width]
            click.echo("\r" + shown.ljust(self._width), nl=False, err=True)
            self._width = len(shown)
            if what in ("succeeded", "failed", "cancelled", "interrupted"):
                click.echo("", err=True)
                self._width = 0
        else:
            click.echo(line, err=True)


@click.command(epilog=EXIT_CODES)
@click.argument("taskfile", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--policy",
    "policy_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Approval rules (JSON, YAML or TOML); ask is deny here, and the default is deny.",
)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="JUnit XML file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result on stdout.")
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for each task's output, steps and screenshots, and the result.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds each task may run unless it sets timeout_s.",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the run's database here (default: a temporary folder, removed afterwards).",
)
def run(
    taskfile: Path,
    policy_path: Path | None,
    report: Path | None,
    as_json: bool,
    artifacts: Path | None,
    timeout_s: float | None,
    data_dir: Path | None,
) -> None:
    """Run TASKFILE's tasks in fresh sandboxes, with a policy deciding every approval."""
    from controller.errors import ConfigError
    from controller.headless import report as reports
    from controller.headless.headstart import head_start
    from controller.headless.runner import (
        HeadlessRun,
        RunError,
        RunExit,
        host_display,
        load_policy,
        preflight,
        run_settings,
        temporary_data_dir,
    )
    from controller.headless.taskfile import TaskFileError, load
    from controller.headless.writes import UnsafePath, Writer
    from controller.settings import load_settings

    def fail(message: str, code: int) -> None:
        click.echo(f"dispatch run: {message}", err=True)
        sys.exit(code)

    try:
        tasks = load(taskfile.absolute(), os.environ)
        policy = load_policy(policy_path) if policy_path is not None else None
        base = load_settings()
    except TaskFileError as exc:
        fail(str(exc), RunExit.CONFIG)
    except RunError as exc:
        fail(str(exc), exc.code)
    except ConfigError as exc:
        fail(str(exc), RunExit.CONFIG)
    keep = data_dir is not None
    folder = data_dir.absolute() if data_dir is not None else temporary_data_dir()
    stop = threading.Event()
    received: list[int] = []

    def on_signal(number: int, frame: FrameType | None) -> None:
        received.append(number)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    head = None
    try:
        settings = run_settings(base, tasks, data_dir=folder, policy=policy, timeout_s=timeout_s)
        head = head_start(settings, tasks)
        preflight(settings, tasks)
        with host_display(settings, tasks) as settings:
            progress = Progress(len(tasks.tasks), live=sys.stderr.isatty(), quiet=False)
            headless = HeadlessRun(
                tasks,
                settings,
                progress=progress,
                stop=stop,
                template_dir=settings.cache_dir,
                head=head,
            )
            result = headless.run()
        if received:
            result.exit_code = (
                RunExit.INTERRUPTED if received[0] == signal.SIGINT else RunExit.TERMINATED
            )
        # A task may write where these go: see controller/headless/writes.py.
        writer = Writer(grant.path for grant in settings.folders if grant.mode == "rw")
        unwritten = None
        try:
            if report is not None:
                writer.write(report, reports.junit(result))
            if artifacts is not None:
                reports.write_artifacts(result, artifacts, writer)
        except (UnsafePath, OSError, RecursionError) as exc:
            unwritten = f"the report and artifacts were not all written: {exc}"
        if as_json:
            click.echo(json.dumps(reports.as_json(result), indent=2))
        for task in result.tasks:
            line = f"{task.result.value:8} {task.name}"
            if task.reason:
                line += f": {task.reason}"
            click.echo(line, err=True)
        click.echo(result.headline, err=True)
        if unwritten is not None and result.exit_code < RunExit.INFRASTRUCTURE:
            fail(unwritten, RunExit.INFRASTRUCTURE)
        if unwritten is not None:
            click.echo(f"dispatch run: {unwritten}", err=True)
        sys.exit(int(result.exit_code))
    except RunError as exc:
        fail(str(exc), exc.code)
    finally:
        if head is not None:
            head.close()
        for number, handler in previous.items():
            signal.signal(number, handler)
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)
