"""The approval state machine on a real SQLite database: request, decide once, expire, void."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import wait_until

from controller.errors import Conflict
from controller.store.approvals import ApprovalStore, NewApproval
from controller.store.blobs import BlobStore, digest
from controller.store.db import Database
from controller.store.events import EventLog
from controller.store.models import ApprovalState, Task, TaskKind, TaskStatus
from controller.store.tasks import NewTask, TaskStore
from controller.store.threads import ThreadStore
from sandbox import Network

PNG = b"\x89PNG\r\n\x1a\nnot really an image, but bytes all the same"


@dataclass
class Stores:
    db: Database
    events: EventLog
    tasks: TaskStore
    approvals: ApprovalStore
    blobs: BlobStore


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[Stores]:
    db = Database(f"sqlite:///{tmp_path / 'dispatch.db'}")
    db.migrate()
    events = EventLog(db)
    tasks = TaskStore(db, events, ThreadStore(db, events))
    blobs = BlobStore(tmp_path / "blobs")
    approvals = ApprovalStore(db, events, blobs, timeout_s=30, on_task_state=tasks.state_event)
    yield Stores(db, events, tasks, approvals, blobs)
    db.dispose()


def running_task(stores: Stores) -> Task:
    stores.tasks.submit(
        NewTask(
            thread="t",
            command=[],
            mounts=(),
            network=Network.NONE,
            timeout_s=60,
            kind=TaskKind.AGENT,
        )
    )
    task = stores.tasks.claim_next()
    assert task is not None
    return task


def ask(stores: Stores, task: Task, **overrides: object) -> int:
    values: dict[str, object] = {
        "task_id": task.id,
        "tool": "computer",
        "member": "left_click",
        "input": {"coordinate": [10, 20]},
        "screen_input": {"coordinate": [20, 40]},
        "description": "Click at (20, 40)",
        "model_reason": "The Send button is there.",
        "policy_rule": None,
        "screenshot_png": PNG,
        "annotated_png": PNG + b"annotated",
    }
    values.update(overrides)
    return stores.approvals.request(NewApproval(**values)).id  # type: ignore[arg-type]


def kinds(stores: Stores, task_id: int) -> list[tuple[str, str]]:
    found = []
    for event in stores.events.after(0, task_id=task_id, limit=1000):
        state = event.data.get("state") or event.data.get("status")
        found.append((event.kind, state))
    return found


def test_a_request_holds_the_task_and_a_decision_releases_it_once(stores: Stores) -> None:
    task = running_task(stores)
    approval_id = ask(stores, task)
    approval = stores.approvals.get(approval_id)
    assert approval.state is ApprovalState.PENDING
    assert approval.screenshot == digest(PNG)
    assert stores.blobs.get(approval.screenshot) == PNG
    assert stores.tasks.get(task.id).status is TaskStatus.WAITING_FOR_APPROVAL

    decided = stores.approvals.decide(approval_id, approve=True, device_id=None, reason="ok")
    assert decided.state is ApprovalState.APPROVED
    assert stores.tasks.get(task.id).status is TaskStatus.RUNNING
    with pytest.raises(Conflict, match="already approved"):
        stores.approvals.decide(approval_id, approve=False, device_id=None)
    assert stores.approvals.get(approval_id).state is ApprovalState.APPROVED
    assert kinds(stores, task.id)[-4:] == [
        ("task.state", "waiting_for_approval"),
        ("approval.requested", "pending"),
        ("task.state", "running"),
        ("approval.decided", "approved"),
    ]


def test_a_waiting_task_still_holds_its_thread(stores: Stores) -> None:
    task = running_task(stores)
    ask(stores, task)
    stores.tasks.submit(
        NewTask(thread="t", command=["true"], mounts=(), network=Network.NONE, timeout_s=5)
    )
    assert stores.tasks.claim_next() is None


def test_a_late_decision_is_refused_and_the_request_expires(stores: Stores) -> None:
    task = running_task(stores)
    approval_id = ask(stores, task)
    later = time.time() + 31
    with pytest.raises(Conflict, match="already expired"):
        stores.approvals.decide(approval_id, approve=True, device_id=None, now=later)


def test_wait_returns_the_decision_made_on_another_thread(stores: Stores) -> None:
    task = running_task(stores)
    approval_id = ask(stores, task)
    timer = threading.Timer(
        0.2,
        lambda: stores.approvals.decide(approval_id, approve=False, device_id=None, reason="no"),
    )
    timer.start()
    started = time.monotonic()
    final = stores.approvals.wait(approval_id, cancelled=lambda: False)
    assert final.state is ApprovalState.DENIED and final.decision_reason == "no"
    assert time.monotonic() - started < 5


def test_wait_expires_an_unanswered_request(stores: Stores) -> None:
    stores.approvals.timeout_s = 0.3
    task = running_task(stores)
    approval_id = ask(stores, task)
    final = stores.approvals.wait(approval_id, cancelled=lambda: False)
    assert final.state is ApprovalState.EXPIRED
    assert stores.tasks.get(task.id).status is TaskStatus.RUNNING
    with pytest.raises(Conflict, match="already expired"):
        stores.approvals.decide(approval_id, approve=True, device_id=None)


def test_cancelling_voids_the_pending_request(stores: Stores) -> None:
    task = running_task(stores)
    approval_id = ask(stores, task)
    cancelled = threading.Event()
    result: list[ApprovalState] = []
    waiter = threading.Thread(
        target=lambda: result.append(
            stores.approvals.wait(approval_id, cancelled=cancelled.is_set).state
        )
    )
    waiter.start()
    cancelled.set()
    wait_until(lambda: result, 5, "the wait to end")
    assert result == [ApprovalState.VOID]
    with pytest.raises(Conflict, match="already void"):
        stores.approvals.decide(approval_id, approve=True, device_id=None)


def test_a_request_for_a_cancelled_task_is_refused(stores: Stores) -> None:
    task = running_task(stores)
    stores.tasks.cancel_queued(task.id)  # marks the running task for cancellation
    with pytest.raises(Conflict, match="no longer running"):
        ask(stores, task)


def test_recovery_expires_what_a_dead_controller_left_pending(stores: Stores) -> None:
    task = running_task(stores)
    approval_id = ask(stores, task)
    # Still running (another live controller's, say): its request stays pending.
    assert stores.approvals.recover() == 0
    interrupted = stores.tasks.recover()
    assert [t.id for t in interrupted] == [task.id]
    assert stores.tasks.get(task.id).status is TaskStatus.INTERRUPTED
    assert stores.approvals.recover() == 1
    assert stores.approvals.get(approval_id).state is ApprovalState.EXPIRED


def test_a_request_is_visible_only_once_both_its_images_are_stored(
    stores: Stores, tmp_path: Path
) -> None:
    task = running_task(stores)
    before = kinds(stores, task.id)
    visible_while_storing: list[object] = []

    class Watched(BlobStore):
        def put(self, data: bytes) -> str:
            if data.endswith(b"broken"):
                raise OSError(28, "No space left on device")
            sha = super().put(data)
            visible_while_storing.extend(stores.approvals.search(task_id=task.id))
            return sha

    stores.approvals.blobs = Watched(tmp_path / "blobs")
    # The two images are stored side by side: the annotated one failing fails the request,
    # and nothing of it is stored or announced.
    with pytest.raises(OSError, match="No space"):
        ask(stores, task, annotated_png=PNG + b"broken")
    assert stores.approvals.search(task_id=task.id) == []
    assert kinds(stores, task.id) == before

    approval = stores.approvals.get(ask(stores, task))
    assert visible_while_storing == []
    assert stores.blobs.get(approval.screenshot or "") == PNG
    assert stores.blobs.get(approval.annotated or "") == PNG + b"annotated"
    # The same image twice is stored once.
    twice = stores.approvals.get(ask(stores, task, annotated_png=PNG))
    assert twice.screenshot == twice.annotated == digest(PNG)


def test_a_request_announced_before_its_images_cannot_be_decided_until_they_are_stored(
    stores: Stores,
) -> None:
    task = running_task(stores)
    approval_id = ask(stores, task, screenshot_png=None, annotated_png=None, images_follow=True)
    announced = stores.approvals.get(approval_id)
    assert announced.state is ApprovalState.PENDING and not announced.images_ready
    assert announced.screenshot is None
    assert kinds(stores, task.id)[-1] == ("approval.requested", "pending")
    before = kinds(stores, task.id)

    # Nobody has seen it yet: a decision waits for the images, then is refused unchanged.
    stores.approvals.images_wait_s = 0.2
    with pytest.raises(Conflict, match="still being stored") as refused:
        stores.approvals.decide(approval_id, approve=True, device_id=None)
    assert refused.value.code == "approval_images_pending"
    assert stores.approvals.get(approval_id).state is ApprovalState.PENDING
    assert kinds(stores, task.id) == before

    # One waiting for them (the screenshot route) gets them as soon as they are stored.
    attacher = threading.Timer(
        0.3, stores.approvals.attach_images, (approval_id, PNG, PNG + b"annotated")
    )
    attacher.start()
    shown = stores.approvals.with_images(approval_id, wait_s=30)
    attacher.join()
    assert shown.images_ready
    assert stores.blobs.get(shown.screenshot or "") == PNG
    assert stores.blobs.get(shown.annotated or "") == PNG + b"annotated"
    decided = stores.approvals.decide(approval_id, approve=True, device_id=None)
    assert decided.state is ApprovalState.APPROVED


def test_the_gate_announces_a_request_while_its_images_are_encoded(stores: Stores) -> None:
    from computer_use.approval.gate import ApprovalRequest, OutcomeKind
    from controller.agent.runner import StoreGate

    task = running_task(stores)
    release = threading.Event()

    class SlowImages:
        """Encoding that takes as long as the test wants."""

        def start(self) -> None:
            pass

        def result(self) -> tuple[bytes, bytes]:
            assert release.wait(30)
            return PNG, PNG + b"annotated"

    def request(images: object) -> ApprovalRequest:
        return ApprovalRequest(
            task_id=task.id,
            tool="computer",
            member="left_click",
            input={"coordinate": [10, 20]},
            screen_input={"coordinate": [20, 40]},
            description="Click at (20, 40)",
            model_reason="",
            policy_rule="default",
            images=images,  # type: ignore[arg-type]
            created_at=time.time(),
            expires_at=time.time() + 30,
        )

    gate = StoreGate(stores.approvals, cancelled=lambda: False)
    outcomes: list[object] = []
    asker = threading.Thread(target=lambda: outcomes.append(gate.request(request(SlowImages()))))
    asker.start()
    pending = wait_until(lambda: stores.approvals.search(task_id=task.id))
    assert not pending[0].images_ready  # visible, its images still being made
    release.set()
    wait_until(lambda: stores.approvals.get(pending[0].id).images_ready)
    stores.approvals.decide(pending[0].id, approve=True, device_id=None)
    asker.join(30)
    assert outcomes[0].kind is OutcomeKind.APPROVED  # type: ignore[attr-defined]
    assert stores.blobs.get(stores.approvals.get(pending[0].id).screenshot or "") == PNG

    # An encoding that fails withdraws the request it announced, and the call never runs.
    class BrokenImages(SlowImages):
        def result(self) -> tuple[bytes, bytes]:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        gate.request(request(BrokenImages()))
    withdrawn = stores.approvals.search(task_id=task.id)[0]
    assert withdrawn.state is ApprovalState.VOID
    assert "could not be stored" in (withdrawn.decision_reason or "")
