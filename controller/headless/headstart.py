"""A head start for `dispatch run`: the first task's sandbox starts while the controller loads.

A run knows its first task as soon as it has read the task file, but loading the controller
(SQLAlchemy above all) takes longer than starting a container. So the sandbox a first command
task needs is started on a thread at once, and the runner is given a factory that hands it
over when it asks for that task's sandbox.

It is handed over only if the spec the runner computed itself, from the stored task and with
the folders checked again, is the spec it was started with (labels aside: the task's id is not
known before it is stored), and only while the container still runs and was started at most
`HANDOVER_MAX_S` ago: its own deadline counts from its start, and must stay later than the
runner's timeout. Any other case (another spec, a container gone or old, a failed start, a run
that ends first) and the container is removed; the runner then makes its own sandbox as always,
and reports any error itself. So a head start can save time but never change what runs or
where. Nothing of the task's runs in the sandbox before the runner's exec.

Only for the Docker backend (whose `start()` on a started sandbox does nothing), a command
task, and no egress proxy (network `allowlist` needs its request log attached first).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import sandbox
from controller.api.submissions import TaskCreate
from controller.errors import ApiError
from controller.execution.folders import check_folders, plan_folders
from controller.execution.spec import command_spec
from controller.headless.taskfile import TaskFile
from controller.settings import Settings
from sandbox import Network, Sandbox, SandboxError, SandboxSpec
from sandbox.base import DEADLINE_GRACE_S

log = logging.getLogger(__name__)

SandboxFactory = Callable[[str, SandboxSpec], Sandbox]
# The oldest head start handed over: its deadline then still falls at least half the grace
# after the runner's own timeout (which reports a timeout properly) would.
HANDOVER_MAX_S = DEADLINE_GRACE_S / 2


def _comparable(spec: SandboxSpec) -> tuple[SandboxSpec, tuple[tuple[int, int] | None, ...]]:
    # A mount's identity (the folder's device and inode when it was checked) is left out of
    # Mount's equality, so it is compared here: a folder replaced since is another folder.
    return dataclasses.replace(spec, labels={}), tuple(m.identity for m in spec.mounts)


class HeadStart:
    """One sandbox started ahead of its task; `factory` hands it over, `close` removes it."""

    def __init__(
        self, backend: str, spec: SandboxSpec, *, create: SandboxFactory = sandbox.create
    ) -> None:
        if backend != "docker" or spec.network is Network.ALLOWLIST:
            raise ValueError("a head start is for a docker sandbox without an egress proxy")
        self.backend = backend
        self.spec = spec
        self.handed_over = False
        self._create = create
        self._box: Sandbox | None = None
        self._started_at = 0.0  # time.monotonic() as its start began
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._start, name="head-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        box: Sandbox | None = None
        self._started_at = time.monotonic()
        try:
            box = self._create(self.backend, self.spec)
            box.start()
        except Exception as exc:  # the runner starts its own and reports what fails there
            log.info("the head start's sandbox did not start (%s); the task starts its own", exc)
            if box is not None:
                _remove(box)
            return
        with self._lock:
            self._box = box

    def take(self, backend: str, spec: SandboxSpec) -> Sandbox | None:
        """The started sandbox if `spec` is the one it was started with, once; else None."""
        self._thread.join()
        with self._lock:
            box, self._box = self._box, None
        if box is None:
            return None
        if backend != self.backend or _comparable(spec) != _comparable(self.spec):
            log.info("the task's sandbox differs from the head start's; it starts its own")
            _remove(box)
            return None
        age_s = time.monotonic() - self._started_at
        if age_s > HANDOVER_MAX_S or not _running(box):
            log.info(
                "the head start's sandbox is gone or %.0f s old; the task makes its own", age_s
            )
            _remove(box)
            return None
        self.handed_over = True
        return box

    def factory(self, make: SandboxFactory) -> SandboxFactory:
        """`make`, except that the first sandbox of the head start's spec is the started one."""

        def make_or_take(backend: str, spec: SandboxSpec) -> Sandbox:
            box = self.take(backend, spec)
            return box if box is not None else make(backend, spec)

        return make_or_take

    def close(self) -> None:
        """Remove the sandbox unless it was handed over (its runner removes it then)."""
        self._thread.join()
        with self._lock:
            box, self._box = self._box, None
        if box is not None:
            _remove(box)


def _running(box: Sandbox) -> bool:
    """Whether the sandbox still runs (killed meanwhile: by the OOM killer, a `docker rm -f`)."""
    is_running = getattr(box, "is_running", None)
    return bool(is_running()) if is_running is not None else False


def _remove(box: Sandbox) -> None:
    try:
        box.stop()
    except Exception:  # the engine lost: `dispatch sandbox prune` removes it later
        log.exception("could not remove the head start's sandbox %s", box.id)


def head_start(settings: Settings, taskfile: TaskFile) -> HeadStart | None:
    """Start the first task's sandbox now, if it is a command in a plain Docker sandbox.

    Its spec is made as the runner will make it from the stored task (`command_spec`); the
    runner uses it only if the two are equal (see headstart.py). A task that would be refused
    at submission gets none: its errors are reported the usual way.
    """
    body = taskfile.tasks[0].body
    if (
        not isinstance(body, TaskCreate)
        or body.isolation != "container"
        or settings.sandbox_backend != "docker"
        or not isinstance(body.network, str)
        or Network(body.network) is Network.ALLOWLIST
    ):
        return None
    timeout_s = body.timeout_s if body.timeout_s is not None else settings.default_task_timeout_s
    try:
        mounts = check_folders(((f.path, f.mode) for f in body.folders), settings)
        plan = plan_folders(((str(m.host), m.mode) for m in mounts), settings)
    except (ApiError, SandboxError, OSError):
        return None  # the submission checks report it
    spec = command_spec(
        settings, plan, network=Network(body.network), allow=(), timeout_s=timeout_s, labels={}
    )
    return HeadStart(settings.sandbox_backend, spec)
