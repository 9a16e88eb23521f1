"""The controller as one object: database, auth, event log, stores and runner, started in order.

Start-up order matters for "never lose a task": migrate, then mark the tasks a killed
controller left running as interrupted, then remove their leftover sandboxes, and only then
start claiming queued work.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import sandbox
from controller.auth import Auth
from controller.db import Database
from controller.events import EventLog
from controller.settings import Settings
from controller.tasks import TaskStore
from controller.threads import ThreadStore
from controller.worker import Runner, SandboxFactory

log = logging.getLogger(__name__)


@dataclass
class Counters:
    """Process-lifetime figures for /metrics."""

    started_at: float = field(default_factory=time.time)
    interrupted_at_start: int = 0
    orphans_removed: int = 0
    sse_clients: int = 0


class Controller:
    """Everything behind the HTTP API; `start()` before use, `stop()` at the end."""

    def __init__(self, settings: Settings, *, factory: SandboxFactory = sandbox.create) -> None:
        self.settings = settings
        self.db = Database(settings.effective_database_url)
        self.events = EventLog(self.db)
        self.auth = Auth(self.db)
        self.threads = ThreadStore(self.db, self.events)
        self.tasks = TaskStore(self.db, self.events, self.threads)
        self.runner = Runner(settings, self.tasks, factory)
        self.tasks.on_queued = self.runner.wake
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
        self.settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.db.migrate()
        self.owner_token = self.auth.ensure_owner_token(self.settings.data_dir)
        interrupted = self.tasks.recover()
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
        self.db.dispose()
        self.started = False

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
        if removed:
            log.warning("removed %d leftover sandbox(es): %s", len(removed), ", ".join(removed))
        return len(removed)
