"""Threads: named, ordered histories of messages and tasks."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from controller.errors import Conflict, NotFound, Unprocessable
from controller.store.db import Database
from controller.store.devices import still_valid
from controller.store.events import EventLog
from controller.store.models import Message, Task, Thread

MAX_NAME_CHARS = 100
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_THREAD = "default"


def check_name(name: str) -> str:
    """A thread name as stored: trimmed, 1-100 characters, no control characters.

    Raises:
        Unprocessable: it is blank, too long, or has control characters.
    """
    name = name.strip()
    if not name or len(name) > MAX_NAME_CHARS or CONTROL.search(name):
        raise Unprocessable(
            f"thread name {name[:120]!r} is not allowed; use 1-{MAX_NAME_CHARS} characters "
            "without control characters",
            code="invalid_thread_name",
        )
    return name


# Built once: SQLAlchemy then reuses the compiled form instead of rebuilding it per call.
NEXT_POSITION = (
    update(Thread)
    .where(Thread.id == bindparam("thread"))
    .values(item_count=Thread.item_count + 1)
    .returning(Thread.item_count)
)
THREAD_BY_NAME = select(Thread.id).where(Thread.name == bindparam("name"))


def next_position(session: Session, thread_id: int) -> int:
    """Hand out the thread's next history position (atomic, also on PostgreSQL)."""
    count = session.connection().execute(NEXT_POSITION, {"thread": thread_id}).scalar_one()
    return int(count) - 1


@dataclass(frozen=True)
class History:
    thread: Thread
    messages: list[Message]
    tasks: list[Task]


class ThreadStore:
    def __init__(self, db: Database, events: EventLog) -> None:
        self.db = db
        self.events = events

    def create(self, name: str, *, device_id: int | None = None) -> Thread:
        """Create a thread for `device_id` (checked again in the transaction).

        Raises:
            Conflict: a thread has that name.
            Unprocessable: the name is bad.
            Unauthorized: `device_id` was revoked after its request was let in.
        """
        name = check_name(name)
        with self.db.write() as session:
            if device_id is not None:
                still_valid(session, device_id)
            if session.scalars(select(Thread).where(Thread.name == name)).first() is not None:
                raise Conflict(
                    f"a thread named {name!r} exists; pick another name or submit to it",
                    code="thread_exists",
                )
            return self._insert(session, name)

    def get_or_create(self, session: Session, name: str) -> int:
        """The id of the thread called `name`, created if new, in the caller's transaction."""
        name = check_name(name)
        thread_id = session.connection().execute(THREAD_BY_NAME, {"name": name}).scalar()
        return thread_id if thread_id is not None else self._insert(session, name).id

    def _insert(self, session: Session, name: str) -> Thread:
        thread = Thread(name=name, created_at=time.time(), item_count=0)
        session.add(thread)
        session.flush()
        self.events.append(session, "thread.created", {"name": name}, thread_id=thread.id)
        return thread

    def all(self) -> list[Thread]:
        with self.db.read() as session:
            return list(session.scalars(select(Thread).order_by(Thread.id)))

    def get(self, thread_id: int) -> Thread:
        with self.db.read() as session:
            thread = session.get(Thread, thread_id)
        if thread is None:
            raise NotFound(f"no thread {thread_id}; list threads with GET /api/v1/threads")
        return thread

    def history(self, thread_id: int) -> History:
        """The thread with its messages and tasks, each in position order.

        Raises:
            NotFound: no such thread.
        """
        with self.db.read() as session:
            thread = session.get(Thread, thread_id)
            if thread is None:
                raise NotFound(f"no thread {thread_id}; list threads with GET /api/v1/threads")
            messages = session.scalars(
                select(Message).where(Message.thread_id == thread_id).order_by(Message.position)
            )
            tasks = session.scalars(
                select(Task).where(Task.thread_id == thread_id).order_by(Task.position)
            )
            return History(thread=thread, messages=list(messages), tasks=list(tasks))

    def add_message(
        self, thread_id: int, author: str, text: str, *, device_id: int | None = None
    ) -> Message:
        """Add a message from `device_id` (checked again in the transaction), shown as `author`.

        Raises:
            NotFound: there is no such thread.
            Unauthorized: `device_id` was revoked after its request was let in.
        """
        with self.db.write() as session:
            if device_id is not None:
                still_valid(session, device_id)
            if session.get(Thread, thread_id) is None:
                raise NotFound(f"no thread {thread_id}; list threads with GET /api/v1/threads")
            message = Message(
                thread_id=thread_id,
                position=next_position(session, thread_id),
                created_at=time.time(),
                author=author,
                text=text,
                device_id=device_id,
            )
            session.add(message)
            session.flush()
            data: dict[str, Any] = {
                "message_id": message.id,
                "author": author,
                "device_id": device_id,
                "text": text,
            }
            self.events.append(session, "thread.message", data, thread_id=thread_id)
            return message
