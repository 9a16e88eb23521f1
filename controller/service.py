"""The controller as one object: database, auth, event log, stores and runner, started in order.

Start-up order matters for "never lose a task": migrate, then mark the tasks a killed
controller left running as interrupted, then remove their leftover sandboxes, and only then
start claiming queued work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sandbox
from computer_use.audit.retention import prune as prune_screenshots
from computer_use.errors import AuditError
from controller.agent.services import AgentServices
from controller.audit import AuditTrail
from controller.auth import Auth
from controller.errors import ConfigError
from controller.execution.disk import DiskGuard
from controller.execution.worker import Runner, SandboxFactory
from controller.notify.service import Notifications
from controller.settings import Settings
from controller.store.approvals import ApprovalStore
from controller.store.blobs import BlobStore
from controller.store.db import Database
from controller.store.events import EventLog
from controller.store.memory import MemoryStore
from controller.store.models import Task
from controller.store.tasks import TaskStore
from controller.store.threads import ThreadStore

log = logging.getLogger(__name__)

# The files SQLite keeps next to the database.
SQLITE_SIDES = ("-wal", "-shm", "-journal")


@dataclass
class Counters:
    """Process-lifetime figures for /metrics."""

    started_at: float = field(default_factory=time.time)
    interrupted_at_start: int = 0
    orphans_removed: int = 0
    sse_clients: int = 0


def make_private(data_dir: Path, database: Path | None) -> None:
    """Make the data directory (0700) and the SQLite files (0600) this user's alone.

    `mkdir(mode=...)` leaves an existing folder as it was, and SQLite creates its file with the
    umask's mode (and its -wal/-shm files with the database file's), so both are set here.

    Raises:
        ConfigError: the modes cannot be set (the folder or file belongs to someone else).
    """
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if stat.S_IMODE(data_dir.stat().st_mode) != 0o700:
            data_dir.chmod(0o700)
        # A missing folder is left for the database to report, with the setting to fix.
        if database is None or not database.parent.is_dir():
            return
        os.close(os.open(database, os.O_WRONLY | os.O_CREAT, 0o600))
        for path in (
            database,
            *(database.with_name(database.name + side) for side in SQLITE_SIDES),
        ):
            with contextlib.suppress(FileNotFoundError):
                if stat.S_IMODE(path.stat().st_mode) != 0o600:
                    path.chmod(0o600)
    except OSError as exc:
        raise ConfigError(
            f"cannot make {exc.filename or data_dir} private to this user ({exc.strerror}); "
            "choose a data directory (--data-dir) and database_url that you own"
        ) from None


class Controller:
    """Everything behind the HTTP API; `start()` before use, `stop()` at the end."""

    def __init__(self, settings: Settings, *, factory: SandboxFactory = sandbox.create) -> None:
        self.settings = settings
        self.db = Database(settings.effective_database_url)
        self.events = EventLog(self.db)
        self.auth = Auth(self.db)
        # Open event streams re-check their device as soon as one is revoked.
        self.auth.on_revoke(self.events.notify)
        # Before any store writes events: its outbox is written in their transactions.
        self.notify = Notifications(settings, self.db, self.events, self.auth)
        self.threads = ThreadStore(self.db, self.events)
        self.tasks = TaskStore(self.db, self.events, self.threads)
        self.blobs = BlobStore(settings.data_dir / "blobs")
        self.approvals = ApprovalStore(
            self.db,
            self.events,
            self.blobs,
            timeout_s=settings.approval_timeout_s,
            on_task_state=self.tasks.state_event,
        )
        self.memory = MemoryStore(self.db)
        self.disk = DiskGuard(settings)
        self.audit = AuditTrail(settings.data_dir, mask=settings.audit_mask)
        self.events.audit_head = self.audit.head
        agents = AgentServices(
            settings,
            self.tasks,
            self.approvals,
            self.blobs,
            self.memory,
            audit=self.audit,
            who=self.device_name,
        )
        self.runner = Runner(settings, self.tasks, factory, self.disk, agents, audit=self.audit)
        self.tasks.on_queued = self.runner.wake
        self.tasks.on_submitted = self._audit_submitted
        self.counters = Counters()
        self.owner_token = ""
        self.started = False

    def start(self) -> None:
        """Prepare the store, recover from a crash, and start running tasks.

        Raises:
            ConfigError: the data directory or database cannot be used.
        """
        if self.started:
            return
        make_private(self.settings.data_dir, self.settings.sqlite_path)
        try:
            self.audit.open()
            if self.settings.audit_retention_days is not None:
                pruned = prune_screenshots(self.audit.log, self.settings.audit_retention_days)
                if pruned.files:
                    log.info("audit: removed %d screenshot file(s) past retention", pruned.files)
        except AuditError as exc:
            raise ConfigError(f"{exc}; see `dispatch audit verify --data-dir DIR`") from None
        self.db.migrate()
        self.owner_token = self.auth.ensure_owner_token(self.settings.data_dir)
        # Before recovery, so the tasks it marks interrupted are announced.
        self.notify.start()
        # A request left pending by a dead controller is expired once its task is interrupted,
        # so its action can never run later without a fresh approval.
        interrupted = self.tasks.recover()
        self.approvals.recover()
        self.counters.interrupted_at_start = len(interrupted)
        for task in interrupted:
            log.warning("task %s was running when the controller died: interrupted", task.id)
        self.counters.orphans_removed = self._prune_sandboxes()
        self.runner.start()
        self.started = True

    def stop(self) -> None:
        """Interrupt running tasks (queued ones stay queued) and close the database."""
        self.events.close()
        if self.started:
            self.runner.stop()
        self.notify.stop()
        self.db.dispose()
        self.audit.close()
        self.started = False

    def _audit_submitted(self, task: Task) -> None:
        request: dict[str, Any] = {
            "command": task.command,
            "folders": task.folders,
            "network": task.network,
            "timeout_s": task.timeout_s,
            "retry_of": task.retry_of,
        }
        if task.agent is not None:
            request["agent"] = task.agent
        self.audit.submitted(
            task.id,
            task.thread_id,
            kind=task.kind.value,
            request=request,
            by=self.device_name(task.submitted_by),
        )

    def device_name(self, device_id: int | None) -> str:
        """Who a device is, for the audit log: the owner by role, a device by name and id."""
        if device_id is None:
            return "nobody"
        device = self.auth.devices_by_id([device_id]).get(device_id)
        if device is None:
            return f"device {device_id}"
        return "the owner" if device.is_owner else f"device {device.name!r} (id {device.id})"

    def _prune_sandboxes(self) -> int:
        """Remove sandboxes whose controller died; a missing engine must not stop serving."""
        if self.settings.sandbox_backend != "docker":
            return 0
        try:
            from sandbox import docker as docker_backend

            removed = docker_backend.prune_orphans(docker_backend.connect())
        except (ImportError, sandbox.SandboxError) as exc:
            log.warning("could not look for leftover sandboxes: %s", exc)
            return 0
        except Exception as exc:  # docker-py raises its own errors for a sick engine
            log.warning("could not remove leftover sandboxes: %s", exc)
            return 0
        try:
            removed = [*removed, *sandbox.prune_vms()]
        except Exception as exc:  # libvirt errors are its own; a sick libvirtd must not stop us
            log.warning("could not remove leftover VMs: %s", exc)
        if removed:
            log.warning("removed %d leftover sandbox(es): %s", len(removed), ", ".join(removed))
        return len(removed)
