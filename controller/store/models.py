"""The stored records: devices, pairing codes, threads, messages, tasks and the event log.

Times are seconds since the epoch (float, UTC) so SQLite and PostgreSQL store them alike.
The schema itself is created by the Alembic migrations in `controller/migrations`; these classes
must match them (a test compares the two).
"""

from __future__ import annotations

import enum
from typing import Any

from sqlalchemy import JSON, BigInteger, Enum, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class TaskStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    # An agent task whose next action waits for a person's decision; it holds its thread.
    WAITING_FOR_APPROVAL = "waiting_for_approval"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    @property
    def terminal(self) -> bool:
        return self not in (TaskStatus.QUEUED, *ACTIVE)

    @property
    def active(self) -> bool:
        """Claimed by a runner and not finished (running, or waiting for a person)."""
        return self in ACTIVE


ACTIVE = (TaskStatus.RUNNING, TaskStatus.WAITING_FOR_APPROVAL)


class TaskKind(enum.StrEnum):
    COMMAND = "command"
    AGENT = "agent"


class ApprovalState(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    DENIED = "denied"
    # Nobody decided before `expires_at`: counts as denied.
    EXPIRED = "expired"
    # The screen changed after it was approved, the task was cancelled, or the controller
    # restarted before the action ran: it can no longer be decided or acted on.
    VOID = "void"

    @property
    def final(self) -> bool:
        return self is not ApprovalState.PENDING


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
    # Network "allowlist": the domains it may reach (presets already expanded); else null.
    network_allow: Mapped[list[Any] | None]
    # "container" (the sandbox_backend setting) or "vm" (the libvirt backend: its own kernel).
    isolation: Mapped[str] = mapped_column(String(16), default="container")
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
    # Agent tasks: {"prompt", "tools", "display", "max_steps", "model", "policy"}; steps are
    # `task.step` events.
    agent: Mapped[dict[str, Any] | None]
    final_answer: Mapped[str | None] = mapped_column(Text)
    tokens_in: Mapped[int | None]
    tokens_out: Mapped[int | None]
    cost_usd: Mapped[float | None]


class Approval(Base):
    """A request for a person's decision on one action, with the screenshot they judge."""

    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_state", "state", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    tool: Mapped[str] = mapped_column(String(32))
    member: Mapped[str] = mapped_column(String(64))
    # What the model asked for, and the same with coordinates in screen pixels.
    input: Mapped[dict[str, Any]]
    screen_input: Mapped[dict[str, Any]]
    description: Mapped[str] = mapped_column(Text)
    model_reason: Mapped[str] = mapped_column(Text)
    policy_rule: Mapped[str | None] = mapped_column(Text)
    # SHA-256 of the stored PNGs (see `controller.store.blobs`); None for calls off any screen.
    screenshot: Mapped[str | None] = mapped_column(String(64))
    annotated: Mapped[str | None] = mapped_column(String(64))
    # False while the request's images are still being encoded and stored: it is announced
    # first, and cannot be decided until they are there (the person has not seen them yet).
    images_ready: Mapped[bool] = mapped_column(default=True)
    state: Mapped[ApprovalState] = mapped_column(_enum(ApprovalState))
    created_at: Mapped[float]
    expires_at: Mapped[float]
    decided_at: Mapped[float | None]
    decided_by: Mapped[int | None] = mapped_column(ForeignKey("devices.id"))
    decision_reason: Mapped[str | None] = mapped_column(Text)
    # Set when this request replaces one voided by a screen change.
    replaces: Mapped[int | None] = mapped_column(ForeignKey("approvals.id"))


class MemoryFile(Base):
    """One file of the agent's memory (the SDK's memory tool), shared by every thread."""

    __tablename__ = "memory_files"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    path: Mapped[str] = mapped_column(String(512), unique=True)
    content: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[float]


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


class PushSubscription(Base):
    """A browser's Web Push subscription (its PushSubscription JSON), held for one device."""

    __tablename__ = "push_subscriptions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id"), index=True)
    endpoint: Mapped[str] = mapped_column(String(2048), unique=True)
    # The browser's P-256 public key and auth secret (base64url), which encrypt every payload.
    p256dh: Mapped[str] = mapped_column(String(200))
    auth: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[float]
    last_sent_at: Mapped[float | None]


class Notification(Base):
    """The outbox: one row per event and notifier (per subscription for Web Push).

    Written in the event's own transaction, marked `sent_at` once delivered: after a restart
    only rows never marked are sent.
    """

    __tablename__ = "notifications"
    __table_args__ = (
        Index("ix_notifications_due", "sent_at", "next_at"),
        Index("ix_notifications_event", "event_id", "notifier", "target", unique=True),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int]
    notifier: Mapped[str] = mapped_column(String(32))
    # Web Push: the subscription's id; "" for notifiers with one destination.
    target: Mapped[str] = mapped_column(String(32), default="")
    payload: Mapped[dict[str, Any]]
    created_at: Mapped[float]
    # When to try next; a try in progress pushes it one lease ahead, so a sender that died
    # mid-try is retried by the next one.
    next_at: Mapped[float]
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    sent_at: Mapped[float | None]
    # Set when it is given up (gone, expired, or too many tries); never tried again.
    dropped_at: Mapped[float | None]


class NetworkRequest(Base):
    """One request a task's sandbox made through the egress proxy (network "allowlist")."""

    __tablename__ = "network_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id"), index=True)
    at: Mapped[float]
    domain: Mapped[str] = mapped_column(String(255))
    port: Mapped[int]
    method: Mapped[str] = mapped_column(String(16))
    allowed: Mapped[bool]
    reason: Mapped[str] = mapped_column(Text)
    bytes_up: Mapped[int] = mapped_column(BigInteger)
    bytes_down: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[int | None]
