"""The notification outbox and the Web Push subscriptions it fans out to.

An event that notifies (an approval request; a task that succeeded, failed or was interrupted)
gets its outbox rows in its own transaction (`on_event`, an `EventLog` watcher): one per
notifier, and one per subscription for Web Push, leased to this process's sender and handed
to it once the transaction commits. Later tries, and rows whose sender died, are claimed
(`claim`), which pushes their `next_at` one lease ahead; each row is marked sent, retried or
dropped. A row marked
sent is never sent again, so after a restart only the rows never marked are. The one window
left: a controller killed after a receiver accepted a message but before the mark committed
sends it again (at least once, never lost); for that case every message carries its event id
(Web Push as its Topic, which makes the push service replace an undelivered copy; the webhook
as X-Dispatch-Delivery). A row leased by a dead sender is tried again when the lease runs out,
or at once when a single controller (SQLite) restarts.
"""

from __future__ import annotations

import logging
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from controller.errors import NotFound
from controller.notify.base import Message
from controller.store.db import Database
from controller.store.devices import still_valid
from controller.store.models import Device, Notification, PushSubscription, Task, Thread

log = logging.getLogger(__name__)

# How long a claimed row is left to its sender before another try may take it.
LEASE_S = 60.0
SUMMARY_CHARS = 120
DETAIL_CHARS = 300
# task.state statuses that notify, as the event names of controller.notify.config.NOTIFY_EVENTS.
NOTIFYING_STATUSES = {"succeeded", "failed", "interrupted"}
INSERT_NOTIFICATION = insert(Notification).returning(Notification.id)


@dataclass(frozen=True)
class Route:
    """A notifier as the outbox sees it: which events it takes, one row or one per device."""

    name: str
    events: tuple[str, ...]
    fan_out: bool


def clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def task_summary(task: Task) -> str:
    """A task in a few words: its prompt, or its command line."""
    if task.agent and task.agent.get("prompt"):
        return clip(str(task.agent["prompt"]), SUMMARY_CHARS)
    return clip(shlex.join(str(part) for part in task.command), SUMMARY_CHARS)


def utc_clock(at: float) -> str:
    return time.strftime("%H:%M UTC", time.gmtime(at))


def build_message(
    session: Session,
    base_url: str,
    event_id: int,
    kind: str,
    data: dict[str, Any],
    thread_id: int | None,
    task_id: int | None,
) -> Message | None:
    """The notification for an event, or None for events that do not notify."""
    if kind == "approval.requested":
        event = kind
    elif kind == "task.state" and data.get("status") in NOTIFYING_STATUSES:
        event = f"task.{data['status']}"
    else:
        return None
    task = session.get(Task, task_id) if task_id is not None else None
    thread = session.get(Thread, thread_id) if thread_id is not None else None
    if task is None or thread is None:
        return None
    summary = task_summary(task)
    task_info = {"id": task.id, "status": task.status.value, "summary": summary}
    thread_info = {"id": thread.id, "name": thread.name}
    task_url = f"{base_url}/threads/{thread.id}#task-{task.id}"
    if event == "approval.requested":
        description = clip(str(data.get("description", "")), DETAIL_CHARS)
        expires_at = float(data["expires_at"])
        return Message(
            event=event,
            event_id=event_id,
            title=f"Approval needed · {thread.name}",
            body=f"Task {task.id}: {description} (expires {utc_clock(expires_at)})",
            url=f"{base_url}/approvals/{data['approval_id']}",
            created_at=time.time(),
            thread=thread_info,
            task=task_info,
            approval={
                "id": data["approval_id"],
                "description": description,
                "expires_at": expires_at,
            },
        )
    status = data["status"]
    detail = {
        "succeeded": task.final_answer or "",
        "failed": data.get("reason") or task.outcome or "",
        "interrupted": data.get("reason") or "",
    }[status]
    if not detail and data.get("exit_code") is not None:
        detail = f"exit code {data['exit_code']}"
    body = f"Task {task.id}: {summary}"
    if detail:
        body += f" — {clip(detail, DETAIL_CHARS)}"
    return Message(
        event=event,
        event_id=event_id,
        title=f"Task {task.id} {status} · {thread.name}",
        body=body,
        url=task_url,
        created_at=time.time(),
        thread=thread_info,
        task=task_info,
    )


class NotificationStore:
    """Writes the outbox inside events' transactions; claims and settles rows for the sender."""

    def __init__(self, db: Database, base_url: str) -> None:
        self.db = db
        self.base_url = base_url.rstrip("/")
        self.routes: tuple[Route, ...] = ()
        self._added_hooks: list[Callable[[list[int]], None]] = []
        db.on_commit(self._after_commit)

    def on_added(self, hook: Callable[[list[int]], None]) -> None:
        """Call `hook(ids)` after a transaction that added notifications commits; the rows
        are leased to this process's sender already (see `on_event`)."""
        self._added_hooks.append(hook)

    def _after_commit(self, session: Session) -> None:
        added = session.info.pop("notifications_added", None)
        if added:
            for hook in self._added_hooks:
                hook(added)

    # --- inside an event's transaction ---------------------------------------------------

    def on_event(
        self,
        session: Session,
        event_id: int,
        kind: str,
        data: dict[str, Any],
        thread_id: int | None,
        task_id: int | None,
    ) -> None:
        """The `EventLog` watcher: queue the event's notifications in its transaction.

        A failure here is logged and undone alone (a savepoint): it never fails the change the
        event describes.
        """
        if not self.routes or kind not in ("approval.requested", "task.state"):
            return
        # The transaction's own pending changes first: their errors are not ours to swallow.
        session.flush()
        try:
            # A savepoint on the connection, not `session.begin_nested()`: the session's
            # after_commit hooks (which wake the event streams and the sender) fire for a
            # nested session transaction too, before the real commit.
            with session.connection().begin_nested():
                self._queue(session, event_id, kind, data, thread_id, task_id)
        except Exception:
            log.exception(
                "could not queue the notifications of event %s (%s); the event itself is kept",
                event_id,
                kind,
            )

    def _queue(
        self,
        session: Session,
        event_id: int,
        kind: str,
        data: dict[str, Any],
        thread_id: int | None,
        task_id: int | None,
    ) -> None:
        message = build_message(session, self.base_url, event_id, kind, data, thread_id, task_id)
        if message is None:
            return
        rows: list[dict[str, Any]] = []
        now = time.time()
        payload = message.as_json()
        for route in self.routes:
            if message.event not in route.events:
                continue
            targets = [""]
            if route.fan_out:
                targets = [str(i) for i in self._live_subscription_ids(session)]
            rows.extend(
                {
                    "event_id": event_id,
                    "notifier": route.name,
                    "target": target,
                    "payload": payload,
                    "created_at": now,
                    # Leased to this process's sender from the start, and handed to it when
                    # the transaction commits: the first try costs no transaction of its own.
                    "next_at": now + LEASE_S,
                    "attempts": 1,
                }
                for target in targets
            )
        if rows:
            ids = session.connection().execute(INSERT_NOTIFICATION, rows).scalars().all()
            session.info.setdefault("notifications_added", []).extend(ids)

    def _live_subscription_ids(self, session: Session) -> list[int]:
        query = (
            select(PushSubscription.id)
            .join(Device, Device.id == PushSubscription.device_id)
            .where(Device.revoked_at.is_(None))
            .order_by(PushSubscription.id)
        )
        return list(session.scalars(query))

    # --- the sender ----------------------------------------------------------------------

    def claim(self, now: float | None = None, limit: int = 50) -> list[Notification]:
        """Rows due now, each leased to the caller for `LEASE_S` and counted as a try."""
        now = time.time() if now is None else now
        pending = (
            (Notification.sent_at.is_(None))
            & (Notification.dropped_at.is_(None))
            & (Notification.next_at <= now)
        )
        with self.db.write() as session:
            rows = list(
                session.scalars(
                    select(Notification).where(pending).order_by(Notification.id).limit(limit)
                )
            )
            for row in rows:
                row.attempts += 1
                row.next_at = now + LEASE_S
            return rows

    def leased(self, ids: Sequence[int]) -> list[Notification]:
        """Rows just added by this process (already leased to it), still unsent."""
        with self.db.read() as session:
            query = select(Notification).where(
                Notification.id.in_(ids),
                Notification.sent_at.is_(None),
                Notification.dropped_at.is_(None),
            )
            return list(session.scalars(query.order_by(Notification.id)))

    def release_leases(self, now: float | None = None) -> int:
        """Make every unsent row due now: at start-up, when no other sender can hold one (a
        single controller's SQLite database). Returns how many were waiting."""
        now = time.time() if now is None else now
        with self.db.write() as session:
            result = session.execute(
                update(Notification)
                .where(
                    Notification.sent_at.is_(None),
                    Notification.dropped_at.is_(None),
                    Notification.next_at > now,
                )
                .values(next_at=now)
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def next_due(self) -> float | None:
        """When the earliest unsent row is due, or None if there is none."""
        with self.db.read() as session:
            found: float | None = session.scalar(
                select(func.min(Notification.next_at)).where(
                    Notification.sent_at.is_(None), Notification.dropped_at.is_(None)
                )
            )
            return found

    def mark_sent(self, row: Notification, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.db.write() as session:
            session.execute(
                update(Notification)
                .where(Notification.id == row.id)
                .values(sent_at=now, last_error=None)
            )
            if row.notifier == "webpush" and row.target:
                session.execute(
                    update(PushSubscription)
                    .where(PushSubscription.id == int(row.target))
                    .values(last_sent_at=now)
                )

    def retry_later(self, row: Notification, error: str, next_at: float) -> None:
        with self.db.write() as session:
            session.execute(
                update(Notification)
                .where(Notification.id == row.id, Notification.sent_at.is_(None))
                .values(next_at=next_at, last_error=error)
            )

    def drop(self, row: Notification, why: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.db.write() as session:
            session.execute(
                update(Notification)
                .where(Notification.id == row.id, Notification.sent_at.is_(None))
                .values(dropped_at=now, last_error=why)
            )

    def prune(self, before: float) -> int:
        """Forget rows sent or dropped before `before` (they are never sent again anyway)."""
        with self.db.write() as session:
            result = session.execute(
                delete(Notification).where(
                    (Notification.sent_at < before) | (Notification.dropped_at < before)
                )
            )
            return int(result.rowcount)  # type: ignore[attr-defined]

    def rows(self, event_id: int | None = None) -> list[Notification]:
        """The outbox (of one event), oldest first: for tests, metrics and the curious."""
        query = select(Notification).order_by(Notification.id)
        if event_id is not None:
            query = query.where(Notification.event_id == event_id)
        with self.db.read() as session:
            return list(session.scalars(query))

    # --- Web Push subscriptions ----------------------------------------------------------

    def subscribe(self, device_id: int, endpoint: str, p256dh: str, auth: str) -> PushSubscription:
        """Store a device's subscription; the same endpoint again replaces the old keys."""
        with self.db.write() as session:
            still_valid(session, device_id)
            found = session.scalars(
                select(PushSubscription).where(PushSubscription.endpoint == endpoint)
            ).one_or_none()
            if found is None:
                found = PushSubscription(
                    device_id=device_id,
                    endpoint=endpoint,
                    p256dh=p256dh,
                    auth=auth,
                    created_at=time.time(),
                )
                session.add(found)
            else:
                found.device_id, found.p256dh, found.auth = device_id, p256dh, auth
            session.flush()
            return found

    def subscriptions(self, device_id: int) -> list[PushSubscription]:
        with self.db.read() as session:
            query = select(PushSubscription).where(PushSubscription.device_id == device_id)
            return list(session.scalars(query.order_by(PushSubscription.id)))

    def subscription(self, subscription_id: int) -> PushSubscription | None:
        """A subscription whose device is still paired, or None."""
        with self.db.read() as session:
            query = (
                select(PushSubscription)
                .join(Device, Device.id == PushSubscription.device_id)
                .where(PushSubscription.id == subscription_id, Device.revoked_at.is_(None))
            )
            return session.scalars(query).one_or_none()

    def unsubscribe(self, subscription_id: int, device: Device) -> None:
        """Remove a subscription of `device` (the owner may remove any).

        Raises:
            NotFound: no such subscription, or another device's.
        """
        with self.db.write() as session:
            if not device.is_owner:
                still_valid(session, device.id)
            found = session.get(PushSubscription, subscription_id)
            if found is None or (found.device_id != device.id and not device.is_owner):
                raise NotFound(
                    f"no push subscription {subscription_id} for this device; list them with "
                    "GET /api/v1/push/subscriptions"
                )
            self._remove(session, [subscription_id], "the subscription was removed")

    def remove_subscription(self, subscription_id: int, why: str) -> None:
        """Remove a subscription its push service says is gone, with its unsent rows."""
        with self.db.write() as session:
            self._remove(session, [subscription_id], why)

    def purge_revoked(self) -> int:
        """Remove the subscriptions of revoked devices; returns how many."""
        with self.db.write() as session:
            doomed = list(
                session.scalars(
                    select(PushSubscription.id)
                    .join(Device, Device.id == PushSubscription.device_id)
                    .where(Device.revoked_at.is_not(None))
                )
            )
            self._remove(session, doomed, "the device was revoked")
            return len(doomed)

    def _remove(self, session: Session, ids: Sequence[int], why: str) -> None:
        if not ids:
            return
        session.execute(delete(PushSubscription).where(PushSubscription.id.in_(ids)))
        session.execute(
            update(Notification)
            .where(
                Notification.notifier == "webpush",
                Notification.target.in_([str(i) for i in ids]),
                Notification.sent_at.is_(None),
                Notification.dropped_at.is_(None),
            )
            .values(dropped_at=time.time(), last_error=why)
        )
