"""The event log: every task state change and output chunk, in order, for SSE clients.

Events are rows with increasing ids written in the same transaction as the change they
describe, so a stream that resumes after `Last-Event-ID: N` reads `id > N` from the table and
sees neither a gap nor a repeat. Ids must also *commit* in increasing order for that to hold:
write transactions are serialised, on SQLite and on PostgreSQL (see `controller.store.db`). An
in-process signal wakes waiting streams as soon as a transaction with events commits; streams
also re-read the table every second, which covers events written by another controller sharing
the database.

A stream is for one device and ends once that device is revoked, before it sends anything more.

Watchers (`watch`) see every event inside its transaction: the notification outbox is written
there, so an event and its notifications commit together or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

import anyio.to_thread
from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from controller.store.db import Database
from controller.store.models import Event

PAGE_SIZE = 500
POLL_S = 1.0
KEEPALIVE_S = 15.0
RETRY_MS = 2000
INSERT_EVENT = insert(Event)


class Holder(Protocol):
    """Who a stream is for (`controller.auth.DeviceWatch`); it ends once they are revoked."""

    def due(self) -> bool:
        """Cheap: whether `revoked` should be asked now."""
        ...

    def revoked(self) -> bool:
        """Whether access was withdrawn; may block on the database."""
        ...


# (session, event id, kind, data, thread id, task id), called inside the event's transaction.
Watcher = Callable[[Session, int, str, dict[str, Any], int | None, int | None], None]


# Events that carry the audit chain's head: a device that keeps the newest one can later prove
# that the log was cut or rewritten (`GET /api/v1/audit/verify?head=SEQ:HASH`).
HEAD_EVENTS = frozenset({"approval.decided", "task.state"})


class EventLog:
    """Appends events inside write transactions and streams them as Server-Sent Events."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed: asyncio.Event | None = None
        self.closed = False
        self.published = 0
        self._watchers: list[Watcher] = []
        # The audit chain's head, added to the events a device keeps it from (see HEAD_EVENTS).
        self.audit_head: Callable[[], dict[str, Any] | None] = lambda: None
        db.on_commit(self._after_commit)

    def watch(self, watcher: Watcher) -> None:
        """Call `watcher` for every event appended, inside the transaction that appends it."""
        self._watchers.append(watcher)

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind to the web server's loop, where the streams wait."""
        self._loop = loop
        self._changed = asyncio.Event()
        self.closed = False

    def append(
        self,
        session: Session,
        kind: str,
        data: dict[str, Any],
        *,
        thread_id: int | None = None,
        task_id: int | None = None,
    ) -> None:
        """Add an event to `session`'s transaction; streams wake when it commits."""
        if kind in HEAD_EVENTS:
            head = self.audit_head()
            if head is not None:
                data = {**data, "audit_head": head}
        session.info["events_added"] = True
        inserted = session.connection().execute(
            INSERT_EVENT,
            {
                "created_at": time.time(),
                "kind": kind,
                "thread_id": thread_id,
                "task_id": task_id,
                "data": data,
            },
        )
        if self._watchers:
            event_id = inserted.inserted_primary_key[0]  # type: ignore[index]
            for watcher in self._watchers:
                watcher(session, event_id, kind, data, thread_id, task_id)

    def _after_commit(self, session: Session) -> None:
        if session.info.pop("events_added", False):
            self.published += 1
            self.notify()

    def notify(self) -> None:
        """Wake every waiting stream; safe from any thread."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        # The loop may close between the check and the call.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        # Each waiter holds the Event that was current when it last read the table; setting it
        # and starting a fresh one means no wake-up between a read and a wait is ever missed.
        if self._changed is not None:
            self._changed.set()
        self._changed = asyncio.Event()

    def close(self) -> None:
        """End every stream (on shutdown)."""
        self.closed = True
        self.notify()

    def after(
        self, last_id: int, task_id: int | None = None, limit: int = PAGE_SIZE
    ) -> list[Event]:
        """Events with id > `last_id` (of one task, if given), oldest first."""
        query = select(Event).where(Event.id > last_id)
        if task_id is not None:
            query = query.where(Event.task_id == task_id)
        with self.db.read() as session:
            return list(session.scalars(query.order_by(Event.id).limit(limit)))

    def last_id(self) -> int:
        with self.db.read() as session:
            return session.scalar(select(func.max(Event.id))) or 0

    async def stream(
        self, last_id: int, task_id: int | None = None, *, holder: Holder | None = None
    ) -> AsyncIterator[str]:
        """Yield SSE frames for events after `last_id`, until the server stops or `holder` is
        revoked."""
        yield f"retry: {RETRY_MS}\n\n"
        quiet_since = time.monotonic()
        while not self.closed:
            changed = self._changed
            # Checked before every read, so nothing committed after a revocation reaches it.
            if (
                holder is not None
                and holder.due()
                and await anyio.to_thread.run_sync(holder.revoked)
            ):
                return
            rows = await anyio.to_thread.run_sync(self.after, last_id, task_id)
            for row in rows:
                last_id = row.id
                yield format_sse(row)
            if len(rows) == PAGE_SIZE:
                continue
            if rows:
                quiet_since = time.monotonic()
            if changed is None:
                await asyncio.sleep(POLL_S)
                continue
            try:
                await asyncio.wait_for(changed.wait(), timeout=POLL_S)
            except TimeoutError:
                if time.monotonic() - quiet_since > KEEPALIVE_S:
                    quiet_since = time.monotonic()
                    # A comment line: keeps proxies from closing the connection, and lets the
                    # server notice a client that went away.
                    yield ": keepalive\n\n"


def event_payload(row: Event) -> dict[str, Any]:
    return {
        "id": row.id,
        "kind": row.kind,
        "created_at": row.created_at,
        "thread_id": row.thread_id,
        "task_id": row.task_id,
        "data": row.data,
    }


def format_sse(row: Event) -> str:
    body = json.dumps(event_payload(row), separators=(",", ":"))
    return f"id: {row.id}\nevent: {row.kind}\ndata: {body}\n\n"
