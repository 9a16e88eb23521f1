"""`dispatch run`: a task file's tasks in fresh sandboxes, in process, with a policy for a person.

The run is the controller without its HTTP server: the same checks at submission, the same
worker, sandboxes, agent loop and approval gate, on a temporary data directory (or the one
given). Nobody can answer an approval, so settings say `headless`: every `ask` of the policy is
a deny, the default is deny, and a denial ends its task (`denied`) once the model has heard why.

Each task ends in one of four results, and the run's exit code is the worst of them:

    passed   the task succeeded                                           0
    failed   it failed on its own (non-zero exit, timeout, max steps...)  1
    denied   the policy refused an action; the reason names the rule      2
    error    the machine failed it (sandbox, display, model API)          4

Usage and configuration mistakes (the task file, the policy, a missing key) exit 3 before any
task runs; a signal from the CI system interrupts the run and removes its sandboxes (130 for
SIGINT, 143 for SIGTERM).
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from computer_use.approval.policy import Policy
from computer_use.errors import PolicyError
from controller.api.submissions import AgentTaskCreate
from controller.errors import ApiError, InsufficientStorage
from controller.headless.headstart import HeadStart
from controller.headless.taskfile import FileTask, TaskFile
from controller.headless.writes import planted_link
from controller.settings import FolderGrant, Settings
from sandbox import EngineUnavailable, ImageMissing, SandboxError

if TYPE_CHECKING:
    from controller.service import Controller
    from controller.store.models import Device, TaskStatus

log = logging.getLogger(__name__)
# How often the run looks at its task when no task ended meanwhile (an agent task's look also
# reads all its steps): its progress lines come up to this late, its end at once.
POLL_S = 0.1
DONE = {"succeeded", "failed", "cancelled", "interrupted"}  # TaskStatus values


class RunExit(enum.IntEnum):
    OK = 0  # every task passed
    FAILED = 1  # a task failed
    DENIED = 2  # the policy denied an action (the first such task is named)
    CONFIG = 3  # the task file, the policy or a setting is wrong; nothing ran
    INFRASTRUCTURE = 4  # the engine, an image, the display, the model API, or the report failed
    INTERRUPTED = 130  # SIGINT (Ctrl-C)
    TERMINATED = 143  # SIGTERM from the CI system


class Result(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    DENIED = "denied"
    ERROR = "error"
    NOT_RUN = "not_run"


class RunError(Exception):
    """The run cannot start; `code` is its exit code, the message says how to fix it."""

    def __init__(self, message: str, code: RunExit) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class TaskReport:
    """One task as the run reports it; every text already masked."""

    name: str
    kind: str
    result: Result
    status: str
    outcome: str | None = None
    exit_code: int | None = None
    reason: str | None = None
    duration_s: float = 0.0
    output: str = ""
    final_answer: str | None = None
    steps: list[dict[str, Any]] = field(default_factory=list)
    screenshots: dict[str, Path] = field(default_factory=dict)
    task_id: int | None = None


@dataclass
class RunReport:
    taskfile: Path
    tasks: list[TaskReport]
    exit_code: RunExit
    duration_s: float
    data_dir: Path | None = None

    @property
    def headline(self) -> str:
        counts = {r: sum(t.result is r for t in self.tasks) for r in Result}
        parts = [f"{n} {r.value.replace('_', ' ')}" for r, n in counts.items() if n]
        first_denied = next((t for t in self.tasks if t.result is Result.DENIED), None)
        tail = f"; first denied: {first_denied.name}" if first_denied else ""
        return f"{', '.join(parts)} in {self.duration_s:.1f} s{tail} (exit {int(self.exit_code)})"


# progress(task index, task name, what happened): a line of progress for people.
Progress = Callable[[int, str, str], None]


def load_policy(path: Path) -> dict[str, Any]:
    """A policy file (JSON, YAML or TOML) in the approval policy's format, checked.

    Raises:
        RunError: CONFIG, naming the file and what is wrong.
    """
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise RunError(f"{path}: cannot read the policy ({exc})", RunExit.CONFIG) from None
    if not isinstance(data, dict):
        raise RunError(
            f'{path}: a policy is a table like {{"default": "deny", "rules": [...]}}',
            RunExit.CONFIG,
        )
    try:
        Policy.parse(data, where=str(path))
    except PolicyError as exc:
        raise RunError(str(exc), RunExit.CONFIG) from None
    return data


def run_settings(
    base: Settings,
    taskfile: TaskFile,
    *,
    data_dir: Path,
    policy: dict[str, Any] | None,
    timeout_s: float | None,
) -> Settings:
    """The controller's settings for this run: the task file's folders are its grants."""
    named = [
        (Path(os.path.abspath(os.path.expanduser(folder.path))), folder.mode)
        for task in taskfile.tasks
        for folder in task.body.folders
    ]
    writable = [Path(os.path.realpath(path)) for path, mode in named if mode == "rw"]
    grants: dict[Path, str] = {}
    for path, mode in named:
        # Resolved once, here, as the config file's grants are when loaded: a folder named
        # through a symlink is granted as the folder it is now; but not through a symlink a
        # task could have left (in a workspace kept from an earlier run) to move the grant.
        planted = planted_link(path, writable)
        if planted is not None:
            link, root = planted
            raise RunError(
                f"{taskfile.path}: folder {path} is named through the symlink {link}, in {root}, "
                "a folder this task file grants read-write (a task could have made it); name "
                "the folder itself, or remove the link",
                RunExit.CONFIG,
            )
        real = Path(os.path.realpath(path))
        grants[real] = "rw" if mode == "rw" else grants.get(real, "ro")
    settings = replace(
        base,
        # No device can subscribe to Web Push without the HTTP server, so a run has nobody to
        # push to; not starting it spares making a VAPID key and loading pywebpush and aiohttp.
        # ntfy and the webhook still tell of the run's tasks.
        notify=replace(base.notify, webpush=replace(base.notify.webpush, enabled=False)),
        data_dir=data_dir,
        database_url=None,
        folders=tuple(FolderGrant(path, mode) for path, mode in grants.items()),
        policy=policy if policy is not None else base.policy,
        headless=True,
        max_concurrent_tasks=1,
        audit_mask=taskfile.secrets,
    )
    if timeout_s is not None:
        settings = replace(
            settings,
            default_task_timeout_s=timeout_s,
            max_task_timeout_s=max(settings.max_task_timeout_s, timeout_s),
        )
    return settings


def _needs_docker(task: FileTask) -> bool:
    body = task.body
    if not isinstance(body, AgentTaskCreate):
        return True
    tools = set(body.tools)
    return bool(tools & {"bash", "edit", "browser"}) or (
        "computer" in tools and body.display == "sandbox"
    )


def _needs_desktop(task: FileTask) -> bool:
    body = task.body
    return isinstance(body, AgentTaskCreate) and (
        "browser" in body.tools or ("computer" in body.tools and body.display == "sandbox")
    )


def preflight(settings: Settings, taskfile: TaskFile) -> None:
    """The engine answers and the images are built, before any task is queued.

    Raises:
        RunError: INFRASTRUCTURE, saying how to fix it.
    """
    if settings.sandbox_backend != "docker" or not any(map(_needs_docker, taskfile.tasks)):
        return
    from sandbox import docker as docker_backend

    images = [settings.sandbox_image]
    if any(map(_needs_desktop, taskfile.tasks)):
        images.append(settings.desktop_image)
    try:
        client = docker_backend.connect()
        for image in images:
            if not client.images.list(name=image):
                raise ImageMissing(f"the image {image!r} is not built; run `dispatch images build`")
    except (EngineUnavailable, ImageMissing) as exc:
        raise RunError(str(exc), RunExit.INFRASTRUCTURE) from None


@contextmanager
def host_display(settings: Settings, taskfile: TaskFile) -> Iterator[Settings]:
    """`display: host` without a display: an Xvfb of our own for the run, stopped after it."""
    wanted = any(
        isinstance(t.body, AgentTaskCreate)
        and t.body.display == "host"
        and "computer" in t.body.tools
        for t in taskfile.tasks
    )
    if not wanted or settings.host_display:
        yield settings
        return
    if os.environ.get("DISPLAY"):
        yield replace(settings, host_display=os.environ["DISPLAY"])
        return
    if shutil.which("Xvfb") is None:
        raise RunError(
            "a task wants display: host, no DISPLAY is set and Xvfb is not installed; install "
            "xvfb (apt-get install xvfb) or use display: sandbox",
            RunExit.INFRASTRUCTURE,
        )
    read_end, write_end = os.pipe()
    server = subprocess.Popen(
        ["Xvfb", "-displayfd", str(write_end), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_end)
    try:
        with os.fdopen(read_end) as announced:
            number = announced.readline().strip()
        if not number.isdigit():
            raise RunError("Xvfb did not start for display: host", RunExit.INFRASTRUCTURE)
        yield replace(settings, host_display=f":{number}")
    finally:
        server.terminate()
        server.wait(timeout=10)


class HeadlessRun:
    """One `dispatch run`: prepare, run every task in order, report."""

    def __init__(
        self,
        taskfile: TaskFile,
        settings: Settings,
        *,
        progress: Progress,
        stop: threading.Event,
        artifacts: Path | None = None,
        template_dir: Path | None = None,
        head: HeadStart | None = None,
    ) -> None:
        """`head`: the first task's sandbox, started already; the caller closes it."""
        self.taskfile = taskfile
        self.head = head
        self.template_dir = template_dir
        self.settings = settings
        self.progress = progress
        self.stop = stop
        self.artifacts = artifacts
        self.signal_exit: RunExit | None = None

    def run(self) -> RunReport:
        """Raises: RunError (CONFIG or INFRASTRUCTURE) before any task ran."""
        # The controller loads here, not when this module does: SQLAlchemy takes longer to load
        # than a container to start, and the head start's sandbox starts meanwhile.
        import sandbox
        from controller.execution.submission import submit
        from controller.headless import template
        from controller.service import Controller

        started = time.monotonic()
        database = self.settings.sqlite_path
        if self.template_dir is not None and database is not None:
            template.prepare(database, self.template_dir)  # else the controller migrates
        factory = sandbox.create if self.head is None else self.head.factory(sandbox.create)
        controller = Controller(self.settings, factory=factory)
        controller.start()
        try:
            owner = controller.auth.authenticate(controller.owner_token)
            self._check_all(controller, owner)
            ids: list[int] = []
            for task in self.taskfile.tasks:
                try:
                    ids.append(submit(task.body, controller, owner).id)
                except ApiError as exc:  # the disk filled since _check_all, say
                    raise self._refused(task, exc) from None
            reports = self._wait(controller, ids)
        finally:
            controller.stop()
        exit_code = self.signal_exit or _worst(reports)
        return RunReport(
            self.taskfile.path,
            reports,
            exit_code,
            time.monotonic() - started,
            self.settings.data_dir,
        )

    def _check_all(self, controller: Controller, owner: Device) -> None:
        """Every submission check, for every task, before the first one is queued."""
        from controller.execution.submission import checked

        for task in self.taskfile.tasks:
            try:
                checked(task.body, self.settings, owner)
                controller.disk.refuse_if_low()
            except ApiError as exc:
                raise self._refused(task, exc) from None

    def _refused(self, task: FileTask, exc: ApiError) -> RunError:
        """A task the controller would not queue: the file is wrong, or the disk is full."""
        where = f"{self.taskfile.path}:{task.line}" if task.line else self.taskfile.path
        code = RunExit.INFRASTRUCTURE if isinstance(exc, InsufficientStorage) else RunExit.CONFIG
        return RunError(f"{where}: task {task.name!r}: {self.taskfile.mask(str(exc))}", code)

    def _wait(self, controller: Controller, ids: list[int]) -> list[TaskReport]:
        reports: list[TaskReport] = []
        for index, (task, task_id) in enumerate(zip(self.taskfile.tasks, ids, strict=True)):
            seen_status, seen_steps = "", 0
            while True:
                ended = controller.runner.ended
                if self.stop.is_set():
                    self.signal_exit = self.signal_exit or RunExit.TERMINATED
                    controller.runner.cancel(task_id)
                    break
                row = controller.tasks.get(task_id)
                if row.status.value != seen_status:
                    seen_status = row.status.value
                    self.progress(index, task.name, seen_status)
                if row.kind.value == "agent":
                    steps = controller.tasks.steps(task_id)
                    for step in steps[seen_steps:]:
                        # Masked before _step_line shortens it: a cut could split a secret.
                        clean = _masked(step, self.taskfile.mask)
                        self.progress(index, task.name, _step_line(clean))
                    seen_steps = len(steps)
                if row.status.value in DONE:
                    break
                # Woken as soon as a task ends; else a look every so often, for the progress
                # lines and for a signal from the CI system.
                controller.runner.wait_ended(ended, POLL_S)
            reports.append(self._report(controller, task, task_id))
        return reports

    def _report(self, controller: Controller, task: FileTask, task_id: int) -> TaskReport:
        row = controller.tasks.get(task_id)
        mask = self.taskfile.mask
        output = mask("".join(chunk.text for chunk in controller.tasks.output(task_id)))
        steps = [_masked(step, mask) for step in controller.tasks.steps(task_id)]
        duration = (row.finished_at or time.time()) - (row.started_at or row.created_at)
        screenshots = {
            ref: controller.blobs.path(ref)
            for step in steps
            for result in step.get("results", [])
            for ref in result.get("images", [])
        }
        return TaskReport(
            name=task.name,
            kind=row.kind.value,
            result=_result(row.status, row.outcome),
            status=row.status.value,
            outcome=row.outcome,
            exit_code=row.exit_code,
            reason=mask(row.reason) if row.reason else None,
            duration_s=max(0.0, duration) if row.started_at else 0.0,
            output=output,
            final_answer=mask(row.final_answer) if row.final_answer else None,
            steps=steps,
            screenshots=screenshots,
            task_id=task_id,
        )


def _result(status: TaskStatus, outcome: str | None) -> Result:
    from controller.store.models import TaskStatus  # loaded with the controller

    if status is TaskStatus.SUCCEEDED:
        return Result.PASSED
    if status is TaskStatus.QUEUED:  # the run was stopped before its turn
        return Result.NOT_RUN
    if outcome == "denied":
        return Result.DENIED
    if status in (TaskStatus.CANCELLED, TaskStatus.INTERRUPTED):
        return Result.ERROR
    # No outcome: the sandbox, its display or its browser failed before the task could run.
    if outcome is None or outcome == "model_unavailable":
        return Result.ERROR
    return Result.FAILED


def _worst(reports: list[TaskReport]) -> RunExit:
    results = {r.result for r in reports}
    if Result.ERROR in results:
        return RunExit.INFRASTRUCTURE
    if Result.DENIED in results:
        return RunExit.DENIED
    if Result.FAILED in results:
        return RunExit.FAILED
    return RunExit.OK


def _step_line(step: Mapping[str, Any]) -> str:
    if step.get("kind") == "model":
        calls = ", ".join(str(c.get("name")) for c in step.get("tool_calls", []))
        return f"step {step.get('index')}: model" + (f" calls {calls}" if calls else " answers")
    if step.get("kind") == "tools":
        errors = [r for r in step.get("results", []) if r.get("is_error")]
        first = str(errors[0].get("text", ""))[:200] if errors else ""
        return f"step {step.get('index')}: tools" + (f" refused: {first}" if errors else " ran")
    return f"step {step.get('index')}: {step.get('kind')}: {str(step.get('text', ''))[:200]}"


def _masked(value: Any, mask: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return mask(value)
    if isinstance(value, list):
        return [_masked(v, mask) for v in value]
    if isinstance(value, Mapping):
        return {_masked(k, mask): _masked(v, mask) for k, v in value.items()}
    return value


def temporary_data_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="dispatch-run-"))


__all__ = [
    "HeadlessRun",
    "Result",
    "RunError",
    "RunExit",
    "RunReport",
    "SandboxError",
    "TaskReport",
    "host_display",
    "load_policy",
    "preflight",
    "run_settings",
    "temporary_data_dir",
]
