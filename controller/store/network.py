"""The requests each task's sandbox made through the egress proxy (network "allowlist")."""

from __future__ import annotations

from dataclasses import asdict

from sqlalchemy import insert, select

from controller.store.db import Database
from controller.store.events import EventLog
from controller.store.models import NetworkRequest
from sandbox.egress import EgressRecord

INSERT_REQUEST = insert(NetworkRequest)
# A refusal's reason is kept whole up to this; a proxy never writes more, a bug might.
MAX_REASON_CHARS = 2000


class NetworkLog:
    """Appends and reads a task's request records; one row per request, in arrival order.

    Given the event log, each request is also a `task.network` event, so a console or phone
    watching the task sees a refusal as it happens.
    """

    def __init__(self, db: Database, events: EventLog | None = None) -> None:
        self.db = db
        self.events = events

    def add(self, task_id: int, record: EgressRecord, *, thread_id: int | None = None) -> None:
        with self.db.write() as session:
            if self.events is not None:
                self.events.append(
                    session,
                    "task.network",
                    asdict(record),
                    thread_id=thread_id,
                    task_id=task_id,
                )
            session.connection().execute(
                INSERT_REQUEST,
                {
                    "task_id": task_id,
                    "at": record.time,
                    "domain": record.domain[:255],
                    "port": record.port,
                    "method": record.method[:16],
                    "allowed": record.allowed,
                    "reason": record.reason[:MAX_REASON_CHARS],
                    "bytes_up": record.bytes_up,
                    "bytes_down": record.bytes_down,
                    "status": record.status,
                },
            )

    def for_task(self, task_id: int) -> list[NetworkRequest]:
        query = (
            select(NetworkRequest)
            .where(NetworkRequest.task_id == task_id)
            .order_by(NetworkRequest.id)
        )
        with self.db.read() as session:
            return list(session.scalars(query))
