"""Approval requests: an action a person must approve, the screenshot they judge, their decision.

    pending ──decide──▶ approved | denied
       ├──expires_at──▶ expired     (counts as denied)
       └──void────────▶ void        (screen changed, task cancelled, controller restarted)

A request is stored, with its task moved to `waiting_for_approval` and an `approval.requested`
event, in one transaction; a decision likewise moves the task back to `running` and publishes
`approval.decided`. Only a pending request that has not expired can be decided, exactly once:
a second decision, a late one, or one for a voided request is refused and changes nothing.

The agent's thread blocks in `wait()` until the request is final. Decisions made in this
process wake it at once; the database is also re-read twice a second, which covers decisions
made by another controller sharing the database and cancellations.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from controller.errors import Conflict, NotFound
from controller.store.blobs import BlobStore
from controller.store.db import Database
from controller.store.devices import still_valid
from controller.store.events import EventLog
from controller.store.models import ACTIVE, Approval, ApprovalState, Task, TaskStatus

POLL_S = 0.5
# How long a decision or an image request waits for a request's images to be stored (they
# follow the announcement by tens of milliseconds) before it is refused.
IMAGES_WAIT_S = 5.0


@dataclass(frozen=True)
class NewApproval:
    """What the agent asks a person to decide."""

    task_id: int
    tool: str
    member: str
    input: dict[str, Any]
    screen_input: dict[str, Any]
    description: str
    model_reason: str
    policy_rule: str | None
    screenshot_png: bytes | None
    annotated_png: bytes | None
    replaces: int | None = None
    # The images are still being made: the request is announced without them, and
    # `attach_images` stores them (until then it cannot be decided).
    images_follow: bool = False


def images_pending(approval_id: int) -> Conflict:
    """The refusal of a decision (or an image) while a request's images are being stored."""
    return Conflict(
        f"the screenshot of approval request {approval_id} is still being stored; try again in "
        "a moment",
        code="approval_images_pending",
    )


def approval_event(approval: Approval) -> dict[str, Any]:
    return {
        "approval_id": approval.id,
        "state": approval.state.value,
        "tool": approval.tool,
        "member": approval.member,
        "description": approval.description,
        "expires_at": approval.expires_at,
        "decided_by": approval.decided_by,
        "reason": approval.decision_reason,
    }


class ApprovalStore:
    """Creates, decides, expires and waits for approval requests."""

    def __init__(
        self,
        db: Database,
        events: EventLog,
        blobs: BlobStore,
        *,
        timeout_s: float,
        on_task_state: Callable[[Any, Task], None],
    ) -> None:
        """Args:
        timeout_s: how long a request waits for a decision before it expires.
        on_task_state: appends a task's `task.state` event inside a transaction.
        """
        self.db = db
        self.events = events
        self.blobs = blobs
        self.timeout_s = timeout_s
        self.images_wait_s = IMAGES_WAIT_S
        self._on_task_state = on_task_state
        self._changed = threading.Condition()
        # Counts wake-ups, so that one between a waiter's read and its wait is not lost.
        self._generation = 0

    # --- reading -------------------------------------------------------------------------

    def get(self, approval_id: int) -> Approval:
        """Raises: NotFound."""
        with self.db.read() as session:
            approval = session.get(Approval, approval_id)
        if approval is None:
            raise NotFound(
                f"no approval request {approval_id}; list them with `dispatch approvals`"
            )
        return approval

    def search(
        self, *, state: ApprovalState | None = None, task_id: int | None = None, limit: int = 100
    ) -> list[Approval]:
        """Newest first."""
        query = select(Approval)
        if state is not None:
            query = query.where(Approval.state == state)
        if task_id is not None:
            query = query.where(Approval.task_id == task_id)
        with self.db.read() as session:
            return list(session.scalars(query.order_by(Approval.id.desc()).limit(limit)))

    # --- changing ------------------------------------------------------------------------

    def request(self, new: NewApproval, now: float | None = None) -> Approval:
        """Store a pending request (its images first, unless they follow) and mark its task
        waiting.

        Raises:
            Conflict: the task is no longer active (it was cancelled meanwhile).
        """
        now = time.time() if now is None else now
        screenshot, annotated = (
            (None, None)
            if new.images_follow
            else self._put_images(new.screenshot_png, new.annotated_png)
        )
        with self.db.write() as session:
            task = session.get(Task, new.task_id)
            if task is None or not task.status.active or task.cancel_requested:
                raise Conflict(
                    f"task {new.task_id} is no longer running; nothing to approve",
                    code="task_not_running",
                )
            approval = Approval(
                task_id=new.task_id,
                tool=new.tool,
                member=new.member,
                input=new.input,
                screen_input=new.screen_input,
                description=new.description,
                model_reason=new.model_reason,
                policy_rule=new.policy_rule,
                screenshot=screenshot,
                annotated=annotated,
                images_ready=not new.images_follow,
                state=ApprovalState.PENDING,
                created_at=now,
                expires_at=now + self.timeout_s,
                replaces=new.replaces,
            )
            session.add(approval)
            session.flush()
            self._set_task(session, task, TaskStatus.WAITING_FOR_APPROVAL)
            self._event(session, "approval.requested", approval, task)
        return approval

    def attach_images(self, approval_id: int, screenshot: bytes, annotated: bytes) -> None:
        """Store the images of a request announced without them; it can be decided from now.

        They are kept whatever became of the request meanwhile: what was asked stays on record.
        """
        shot_sha, marked_sha = self._put_images(screenshot, annotated)
        with self.db.write() as session:
            approval = session.get(Approval, approval_id)
            if approval is not None:
                approval.screenshot, approval.annotated = shot_sha, marked_sha
                approval.images_ready = True
        self._wake()

    def with_images(self, approval_id: int, wait_s: float | None = None) -> Approval:
        """The request once its images are stored, or once it has ended without them.

        Raises:
            NotFound: no such request.
            Conflict: its images were still not stored after `wait_s` (`images_wait_s`).
        """
        deadline = time.monotonic() + (self.images_wait_s if wait_s is None else wait_s)
        while True:
            seen = self._generation
            approval = self.get(approval_id)
            if approval.images_ready or approval.state.final:
                return approval
            left = deadline - time.monotonic()
            if left <= 0:
                raise images_pending(approval_id)
            # Woken by `attach_images` in this process; another controller sharing the
            # database is seen by asking again.
            self._sleep(seen, min(left, 0.05))

    def decide(
        self,
        approval_id: int,
        *,
        approve: bool,
        device_id: int | None,
        reason: str | None = None,
        now: float | None = None,
    ) -> Approval:
        """Approve or deny a pending request, once.

        Raises:
            NotFound: no such request.
            Conflict: it was already decided, expired or voided (nothing changes).
        """
        # Nobody can have judged a request whose screenshot is not stored yet.
        self.with_images(approval_id)
        now = time.time() if now is None else now
        with self.db.write() as session:
            if device_id is not None:
                # A decision whose body arrived after its device was revoked is refused.
                still_valid(session, device_id)
            approval = session.get(Approval, approval_id)
            if approval is None:
                raise NotFound(
                    f"no approval request {approval_id}; list them with `dispatch approvals`"
                )
            if approval.state is ApprovalState.PENDING and now >= approval.expires_at:
                self._finish(session, approval, ApprovalState.EXPIRED, now, None, None)
            task = session.get(Task, approval.task_id)
            if approval.state is ApprovalState.PENDING and (task is None or task.cancel_requested):
                # Serialised with the cancel's own transaction: an approval can never land after it
                # (the request itself is voided by the cancel route and the agent's wait).
                raise Conflict(
                    f"task {approval.task_id} was cancelled; approval request {approval_id} can no "
                    "longer be decided",
                    code="approval_void",
                )
            if approval.state is not ApprovalState.PENDING:
                raise Conflict(
                    f"approval request {approval_id} is already {approval.state.value}; it can "
                    "no longer be decided",
                    code=f"approval_{approval.state.value}",
                )
            if not approval.images_ready:
                raise images_pending(approval_id)
            state = ApprovalState.APPROVED if approve else ApprovalState.DENIED
            self._finish(session, approval, state, now, device_id, reason)
        self._wake()
        return approval

    def void(self, approval_id: int, why: str) -> None:
        """End a pending request that may no longer be acted on (e.g. the screen changed)."""
        with self.db.write() as session:
            approval = session.get(Approval, approval_id)
            if approval is not None and approval.state is ApprovalState.PENDING:
                self._finish(session, approval, ApprovalState.VOID, time.time(), None, why)
        self._wake()

    def void_for_task(self, task_id: int, why: str) -> int:
        """Void a task's pending requests (it was cancelled); returns how many."""
        with self.db.write() as session:
            pending = list(
                session.scalars(
                    select(Approval).where(
                        Approval.task_id == task_id, Approval.state == ApprovalState.PENDING
                    )
                )
            )
            for approval in pending:
                self._finish(session, approval, ApprovalState.VOID, time.time(), None, why)
        self._wake()
        return len(pending)

    def recover(self) -> int:
        """At start-up, after the tasks' recovery: expire every pending request whose task is no
        longer running (a dead controller's, now interrupted). Returns how many.

        On a shared PostgreSQL database the tasks of other controllers are still running, and
        their requests stay pending: their controllers are alive and waiting for a decision.
        """
        still_running = select(Task.id).where(Task.status.in_(ACTIVE))
        with self.db.write() as session:
            result = session.execute(
                update(Approval)
                .where(Approval.state == ApprovalState.PENDING)
                .where(Approval.task_id.not_in(still_running))
                .values(
                    state=ApprovalState.EXPIRED,
                    decided_at=time.time(),
                    decision_reason="the controller stopped before a decision; the task was "
                    "interrupted and the action never ran",
                )
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def wait(self, approval_id: int, *, cancelled: Callable[[], bool]) -> Approval:
        """Block until the request is final: decided, expired (marked here), or voided.

        A `cancelled()` task voids its request and returns it voided.
        """
        while True:
            seen = self._generation
            approval = self.get(approval_id)
            if approval.state.final:
                return approval
            now = time.time()
            if now >= approval.expires_at:
                with self.db.write() as session:
                    row = session.get(Approval, approval_id)
                    if row is not None and row.state is ApprovalState.PENDING:
                        self._finish(session, row, ApprovalState.EXPIRED, now, None, None)
                continue
            if cancelled():
                self.void(approval_id, "the task was cancelled")
                continue
            self._sleep(seen, min(POLL_S, max(approval.expires_at - now, 0.01)))

    def _put_images(
        self, screenshot: bytes | None, annotated: bytes | None
    ) -> tuple[str | None, str | None]:
        """Store a request's two images side by side (each waits for its own fsync), before the
        transaction that names them: a request is never visible before its images are durable."""
        if not (screenshot and annotated) or screenshot == annotated:
            # One image, or the same one twice (stored once: it is named by its hash).
            return (
                self.blobs.put(screenshot) if screenshot else None,
                self.blobs.put(annotated) if annotated else None,
            )
        with ThreadPoolExecutor(max_workers=1) as pool:
            second = pool.submit(self.blobs.put, annotated)
            return self.blobs.put(screenshot), second.result()

    # --- inside transactions -------------------------------------------------------------

    def _finish(
        self,
        session: Any,
        approval: Approval,
        state: ApprovalState,
        now: float,
        device_id: int | None,
        reason: str | None,
    ) -> None:
        approval.state = state
        approval.decided_at = now
        approval.decided_by = device_id
        approval.decision_reason = reason
        task = session.get(Task, approval.task_id)
        if task is not None and task.status is TaskStatus.WAITING_FOR_APPROVAL:
            self._set_task(session, task, TaskStatus.RUNNING)
        self._event(session, "approval.decided", approval, task)

    def _set_task(self, session: Any, task: Task, status: TaskStatus) -> None:
        task.status = status
        self._on_task_state(session, task)

    def _event(self, session: Any, kind: str, approval: Approval, task: Task | None) -> None:
        self.events.append(
            session,
            kind,
            approval_event(approval),
            thread_id=task.thread_id if task is not None else None,
            task_id=approval.task_id,
        )

    def _sleep(self, seen: int, timeout_s: float) -> None:
        """Wait for a wake-up after the one numbered `seen` (at once if one came since)."""
        with self._changed:
            self._changed.wait_for(lambda: self._generation != seen, timeout_s)

    def _wake(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()
