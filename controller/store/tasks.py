"""Task records: submission, the state machine, per-thread claiming, and crash recovery.

    queued ──claim──▶ running ──▶ succeeded | failed | cancelled | interrupted
       └──cancel, or its device revoked──▶ cancelled

Every transition is one transaction that also appends a `task.state` event. A task is claimed
only when it is the oldest queued task of its thread and no task of that thread is running, so
a thread's tasks run strictly in submission order while threads run side by side.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, exists, func, insert, select, update
from sqlalchemy.orm import Session, aliased

from controller.errors import Conflict, NotFound
from controller.store.db import Database
from controller.store.devices import still_valid
from controller.store.events import EventLog
from controller.store.models import ACTIVE, Device, Event, Task, TaskKind, TaskStatus, Thread
from controller.store.threads import ThreadStore, next_position
from sandbox import Mount, Network

RUNNER = socket.gethostname()
# Built once: SQLAlchemy then reuses the compiled form instead of rebuilding it per call.
INSERT_TASK = insert(Task).returning(Task.id)
# How much of an earlier command's output an agent task of the same thread is shown.
CONTEXT_OUTPUT_CHARS = 1500


def interrupted_reason(task_id: int) -> str:
    return (
        "the controller stopped unexpectedly (killed or crashed) while this task was running; "
        "its output up to then is kept and it was not run again: run "
        f"`dispatch retry {task_id}` to queue it again"
    )


def revoked_reason(device: Device) -> str:
    # Only queued work goes with the token: a running task was already accepted and started,
    # and is left to finish (or to be cancelled by the owner) like any other.
    return (
        f"cancelled before it started: device {device.name!r} (id {device.id}) that submitted "
        "it was revoked"
    )


def shutdown_reason(task_id: int) -> str:
    return (
        "the controller was shut down while this task was running; its output up to then is "
        f"kept: run `dispatch retry {task_id}` to queue it again"
    )


@dataclass(frozen=True)
class NewTask:
    """A submission whose values are already checked (folders against the grants)."""

    thread: str
    command: Sequence[str]
    mounts: Sequence[Mount]
    network: Network
    timeout_s: float
    kind: TaskKind = TaskKind.COMMAND
    # Agent tasks: prompt, tools, display, max_steps, model, policy, allowed_domains.
    agent: Mapping[str, Any] | None = None
    # Network ALLOWLIST: the domains, presets already expanded.
    allow: Sequence[str] = ()
    isolation: str = "container"


@dataclass(frozen=True)
class OutputChunk:
    stream: str
    text: str


class TaskStore:
    """Reads and changes tasks; `on_queued` is called after a commit that queued work."""

    def __init__(
        self,
        db: Database,
        events: EventLog,
        threads: ThreadStore,
        on_queued: Callable[[], None] = lambda: None,
        runner: str = RUNNER,
    ) -> None:
        self.db = db
        self.events = events
        self.threads = threads
        self.on_queued = on_queued
        # Called with each task accepted (submitted or retried), after its commit: the audit log.
        self.on_submitted: Callable[[Task], None] = lambda task: None
        self.runner = runner
        self.submitted = 0

    # --- reading -------------------------------------------------------------------------

    def get(self, task_id: int) -> Task:
        """Raises: NotFound."""
        with self.db.read() as session:
            task = session.get(Task, task_id)
        if task is None:
            raise NotFound(f"no task {task_id}; list tasks with `dispatch tasks`")
        return task

    def search(
        self,
        *,
        thread_id: int | None = None,
        status: TaskStatus | None = None,
        limit: int = 100,
        before_id: int | None = None,
    ) -> list[Task]:
        """Newest first."""
        query = select(Task)
        if thread_id is not None:
            query = query.where(Task.thread_id == thread_id)
        if status is not None:
            query = query.where(Task.status == status)
        if before_id is not None:
            query = query.where(Task.id < before_id)
        with self.db.read() as session:
            return list(session.scalars(query.order_by(Task.id.desc()).limit(limit)))

    def output(self, task_id: int) -> list[OutputChunk]:
        """Everything the task printed, consecutive chunks of one stream merged."""
        query = (
            select(Event.data)
            .where(Event.task_id == task_id, Event.kind == "task.output")
            .order_by(Event.id)
        )
        chunks: list[OutputChunk] = []
        with self.db.read() as session:
            for data in session.scalars(query):
                if chunks and chunks[-1].stream == data["stream"]:
                    chunks[-1] = OutputChunk(data["stream"], chunks[-1].text + data["text"])
                else:
                    chunks.append(OutputChunk(data["stream"], data["text"]))
        return chunks

    def counts(self) -> dict[TaskStatus, int]:
        with self.db.read() as session:
            rows = session.execute(select(Task.status, func.count()).group_by(Task.status))
            found = {status: int(n) for status, n in rows}
        return {status: found.get(status, 0) for status in TaskStatus}

    # --- changing ------------------------------------------------------------------------

    def submit(
        self, new: NewTask, *, device_id: int | None = None, retry_of: int | None = None
    ) -> Task:
        """Queue a task at the end of its thread (created if new)."""
        values: dict[str, Any] = {
            "kind": new.kind,
            "command": list(new.command),
            "folders": [{"path": str(m.host), "mode": m.mode} for m in new.mounts],
            "network": new.network.value,
            "network_allow": list(new.allow) if new.network is Network.ALLOWLIST else None,
            "isolation": new.isolation,
            "timeout_s": new.timeout_s,
            "status": TaskStatus.QUEUED,
            "created_at": time.time(),
            "cancel_requested": False,
            "retry_of": retry_of,
            "submitted_by": device_id,
            "agent": dict(new.agent) if new.agent is not None else None,
        }
        # Core statements, not the ORM unit of work: this is the hot path of the API.
        with self.db.write() as session:
            if device_id is not None:
                still_valid(session, device_id)
            values["thread_id"] = self.threads.get_or_create(session, new.thread)
            values["position"] = next_position(session, values["thread_id"])
            inserted = session.connection().execute(INSERT_TASK, values)
            task = Task(id=inserted.scalar_one(), **values)
            self._state_event(session, task)
        self.submitted += 1
        self.on_submitted(task)
        self.on_queued()
        return task

    def retry(self, task_id: int, *, device_id: int | None = None) -> Task:
        """Queue a copy of a finished task at the end of its thread.

        Raises:
            NotFound: no such task.
            Conflict: it is still queued or running.
        """
        old = self.get(task_id)
        if not old.status.terminal:
            raise Conflict(
                f"task {task_id} is {old.status.value}; only a finished task can be retried "
                f"(cancel it first with `dispatch cancel {task_id}`)",
                code="task_not_finished",
            )
        with self.db.read() as session:
            thread = session.get(Thread, old.thread_id)
            assert thread is not None, f"task {task_id} has no thread"
        new = NewTask(
            thread=thread.name,
            command=old.command,
            mounts=[Mount(host=Path(f["path"]), read_only=f["mode"] == "ro") for f in old.folders],
            network=Network(old.network),
            timeout_s=old.timeout_s,
            kind=old.kind,
            agent=old.agent,
            allow=tuple(old.network_allow or ()),
            isolation=old.isolation or "container",
        )
        return self.submit(new, device_id=device_id, retry_of=task_id)

    def cancel_queued(self, task_id: int, *, device_id: int | None = None) -> Task:
        """Cancel the task if it is queued; otherwise mark a running one for cancellation.

        Returns the task as it is after the call (cancelled, or still running with
        `cancel_requested` set, for the runner to kill).

        Raises:
            NotFound: no such task.
            Conflict: it has already finished.
            Unauthorized: `device_id` was revoked after its request was let in.
        """
        now = time.time()
        with self.db.write() as session:
            if device_id is not None:
                still_valid(session, device_id)
            task = session.get(Task, task_id)
            if task is None:
                raise NotFound(f"no task {task_id}; list tasks with `dispatch tasks`")
            if task.status is TaskStatus.QUEUED:
                task.status = TaskStatus.CANCELLED
                task.finished_at = now
                task.reason = "cancelled before it started"
                self._state_event(session, task)
            elif task.status.active:
                task.cancel_requested = True
            else:
                raise Conflict(
                    f"task {task_id} already {task.status.value}; there is nothing to cancel",
                    code="task_finished",
                )
            return task

    def cancel_queued_by(self, session: Session, device: Device, now: float) -> list[int]:
        """In the caller's transaction (a revocation): cancel the queued tasks `device` submitted.

        Returns their ids. Running tasks are left running.
        """
        queued = list(
            session.scalars(
                select(Task)
                .where(Task.submitted_by == device.id, Task.status == TaskStatus.QUEUED)
                .order_by(Task.id)
            )
        )
        cancelled = []
        for task in queued:
            task.status = TaskStatus.CANCELLED
            task.finished_at = now
            task.reason = revoked_reason(device)
            self._state_event(session, task)
            cancelled.append(task.id)
        return cancelled

    def claim_next(self) -> Task | None:
        """Mark the oldest runnable task running and return it (None when nothing can run)."""
        running = aliased(Task)
        earlier = aliased(Task)
        query = (
            select(Task)
            .where(Task.status == TaskStatus.QUEUED)
            .where(
                ~exists().where(
                    and_(running.thread_id == Task.thread_id, running.status.in_(ACTIVE))
                )
            )
            .where(
                ~exists().where(
                    and_(
                        earlier.thread_id == Task.thread_id,
                        earlier.status == TaskStatus.QUEUED,
                        earlier.id < Task.id,
                    )
                )
            )
            .order_by(Task.id)
            .limit(1)
        )
        # Look first without the write lock: most wake-ups find nothing runnable.
        with self.db.read() as session:
            if session.scalars(query.with_only_columns(Task.id)).first() is None:
                return None
        with self.db.write() as session:
            task = session.scalars(query).first()
            if task is None:
                return None
            claimed = session.execute(
                update(Task)
                .where(Task.id == task.id, Task.status == TaskStatus.QUEUED)
                # A reason left by `unclaim` ("waiting for ...") no longer holds.
                .values(
                    status=TaskStatus.RUNNING,
                    started_at=time.time(),
                    runner=self.runner,
                    reason=None,
                )
            )
            if claimed.rowcount != 1:  # type: ignore[attr-defined]
                return None  # another controller took it; the caller asks again
            session.refresh(task)
            self._state_event(session, task)
            return task

    def unclaim(self, task_id: int, *, reason: str | None = None) -> Task | None:
        """Put a claimed task that never started back in the queue, saying why it waits.

        It keeps its id, so it is still the first of its thread to be claimed again. A task
        asked to stop meanwhile (`cancel_requested`) is cancelled instead.
        """
        with self.db.write() as session:
            task = session.get(Task, task_id)
            if task is None or task.status is not TaskStatus.RUNNING:
                return task
            if task.cancel_requested:
                task.status = TaskStatus.CANCELLED
                task.finished_at = time.time()
                task.reason = "cancelled before it started"
            else:
                task.status = TaskStatus.QUEUED
                task.reason = reason
            task.started_at = None
            task.runner = None
            self._state_event(session, task)
            return task

    def set_sandbox(self, task_id: int, sandbox_id: str) -> None:
        with self.db.write() as session:
            session.execute(update(Task).where(Task.id == task_id).values(sandbox_id=sandbox_id))

    def finish(
        self,
        task_id: int,
        status: TaskStatus,
        *,
        exit_code: int | None = None,
        outcome: str | None = None,
        reason: str | None = None,
    ) -> Task:
        """Record how a running task ended."""
        with self.db.write() as session:
            task = session.get(Task, task_id)
            assert task is not None, f"task {task_id} vanished while running"
            task.status = status
            task.finished_at = time.time()
            task.exit_code = exit_code
            task.outcome = outcome
            task.reason = reason
            self._state_event(session, task)
            return task

    def recover(self) -> list[Task]:
        """Mark tasks left `running` by a dead controller as interrupted.

        An SQLite database has one controller, so every running task was its own (even if the
        host was renamed since); a shared PostgreSQL one only gives up this host's tasks.
        """
        query = select(Task).where(Task.status.in_(ACTIVE))
        if not self.db.is_sqlite:
            query = query.where((Task.runner == self.runner) | Task.runner.is_(None))
        with self.db.write() as session:
            stale = list(session.scalars(query))
            for task in stale:
                task.status = TaskStatus.INTERRUPTED
                task.finished_at = time.time()
                task.reason = interrupted_reason(task.id)
                self._state_event(session, task)
            return stale

    def cancel_requested(self, task_ids: Sequence[int]) -> list[int]:
        """Which of these running tasks were asked to stop (possibly by another process)."""
        if not task_ids:
            return []
        with self.db.read() as session:
            return list(
                session.scalars(
                    select(Task.id).where(Task.id.in_(task_ids), Task.cancel_requested.is_(True))
                )
            )

    def append_output(self, task: Task, chunks: Sequence[tuple[str, str]]) -> None:
        """Persist output chunks (stream, text) as `task.output` events, in order."""
        with self.db.write() as session:
            for stream, text in chunks:
                self.events.append(
                    session,
                    "task.output",
                    {"stream": stream, "text": text},
                    thread_id=task.thread_id,
                    task_id=task.id,
                )

    def earlier_in_thread(self, task: Task, limit: int = 20) -> list[dict[str, Any]]:
        """The finished tasks before `task` in its thread, oldest first, each as `{"text"}`:
        an agent's prompt and answer, a command with its result and the end of its output."""
        query = (
            select(Task)
            .where(Task.thread_id == task.thread_id, Task.position < task.position)
            .order_by(Task.position.desc())
            .limit(limit)
        )
        with self.db.read() as session:
            earlier = list(session.scalars(query))
        items = []
        for old in reversed(earlier):
            if not old.status.terminal:
                continue
            ending = old.reason or old.status.value
            if old.kind is TaskKind.AGENT:
                prompt = (old.agent or {}).get("prompt", "")
                answer = old.final_answer or f"(no answer: {ending})"
                text = f"Task {old.id} (agent), asked: {prompt}\nIt answered: {answer}"
            else:
                tail = "".join(c.text for c in self.output(old.id))[-CONTEXT_OUTPUT_CHARS:]
                text = (
                    f"Task {old.id} (command) ran: {' '.join(old.command)}\n"
                    f"It ended {old.status.value} ({ending}); its output ended with:\n{tail}"
                )
            items.append({"text": text})
        return items

    def append_step(self, task: Task, data: dict[str, Any]) -> None:
        """Persist one agent step as a `task.step` event."""
        with self.db.write() as session:
            self.events.append(
                session, "task.step", data, thread_id=task.thread_id, task_id=task.id
            )

    def steps(self, task_id: int) -> list[dict[str, Any]]:
        """An agent task's steps, in order."""
        query = (
            select(Event.data)
            .where(Event.task_id == task_id, Event.kind == "task.step")
            .order_by(Event.id)
        )
        with self.db.read() as session:
            return [dict(data) for data in session.scalars(query)]

    def record_agent_result(
        self,
        task_id: int,
        *,
        final_answer: str | None,
        tokens_in: int,
        tokens_out: int,
        cost_usd: float | None,
    ) -> None:
        """Store what an agent task produced, before its end is recorded."""
        with self.db.write() as session:
            session.execute(
                update(Task)
                .where(Task.id == task_id)
                .values(
                    final_answer=final_answer,
                    tokens_in=tokens_in,
                    tokens_out=tokens_out,
                    cost_usd=cost_usd,
                )
            )

    def state_event(self, session: Session, task: Task) -> None:
        """Append `task`'s `task.state` event to `session`'s transaction."""
        self._state_event(session, task)

    def _state_event(self, session: Session, task: Task) -> None:
        data: dict[str, Any] = {
            "status": task.status.value,
            "exit_code": task.exit_code,
            "outcome": task.outcome,
            "reason": task.reason,
        }
        self.events.append(session, "task.state", data, thread_id=task.thread_id, task_id=task.id)
