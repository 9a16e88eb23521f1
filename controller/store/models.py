"""The stored records: devices, pairing codes, threads, messages, tasks and the event log.

Times are seconds since the epoch (float, UTC) so SQLite and PostgreSQL store them alike.
The schema itself is created by the Alembic migrations in `controller/migrations`; these classes
must match them (a test compares the two).
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import JSON, Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.QUEUED, TaskStatus.RUNNING)


class TaskKind(enum.StrEnum):
    COMMAND = "command"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as plain text (no native enum, no CHECK) so later states need no table rewrite.
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,
        length=32,
        values_callable=lambda members: [m.value for m in members],
    )


class Device(Base):
    """A paired client; only the SHA-256 of its token is kept."""

    __tablename__ = "devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    is_owner: Mapped[bool] = mapped_column(default=False)
    # Hostname of the controller an owner token belongs to: rotating it revokes only its own.
    owner_host: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[float]
    last_seen_at: Mapped[float | None]
    revoked_at: Mapped[float | None]


class PairingCode(Base):
    """A one-time code that turns into a device token; only its hash is kept."""

    __tablename__ = "pairing_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float]
    expires_at: Mapped[float]
    used_at: Mapped[float | None]
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))


class Thread(Base):
    """A named conversation; `item_count` hands out positions to its messages and tasks."""

    __tablename__ = "threads"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    created_at: Mapped[float]
    item_count: Mapped[int] = mapped_column(default=0)


class Message(Base):
    __tablename__ = "messages"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id"), index=True)
    position: Mapped[int]
    created_at: Mapped[float]
    author: Mapped[str] = mapped_column(String(100))
    text: Mapped[str] = mapped_column(Text)
    # Who sent it: the name alone is a device's choice. Null for messages from before 0004.
    device_id: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))


class Task(Base):
    """One unit of work; its output lives in the event log (`task.output` events)."""

    __tablename__ = "tasks"
    __table_args__ = (Index("ix_tasks_status_thread", "status", "thread_id", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id"), index=True)
    position: Mapped[int]
    kind: Mapped[TaskKind] = mapped_column(_enum(TaskKind))
    command: Mapped[list[Any]]
    # [{"path": "/abs", "mode": "ro"|"rw"}], already checked against the grants.
    folders: Mapped[list[Any]]
    network: Mapped[str] = mapped_column(String(16))
    timeout_s: Mapped[float]
    status: Mapped[TaskStatus] = mapped_column(_enum(TaskStatus))
    created_at: Mapped[float]
    started_at: Mapped[float | None]
    finished_at: Mapped[float | None]
    exit_code: Mapped[int | None]
    outcome: Mapped[str | None] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    sandbox_id: Mapped[str | None] = mapped_column(String(100))
    # Hostname of the controller that claimed it: recovery only touches its own tasks.
    runner: Mapped[str | None] = mapped_column(String(255))
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    retry_of: Mapped[int | None] = mapped_column(ForeignKey("tasks.id"))
    submitted_by: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))


class Event(Base):
    """The append-only log behind SSE; ids only grow, so `Last-Event-ID` resumes exactly."""

    __tablename__ = "events"
    # AUTOINCREMENT: SQLite must never hand out an id again, or a resuming client skips events.
    __table_args__ = (Index("ix_events_task_id", "task_id", "id"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    created_at: Mapped[float]
    kind: Mapped[str] = mapped_column(String(32))
    thread_id: Mapped[int | None]
    task_id: Mapped[int | None]
    data: Mapped[dict[str, Any]]
