"""Review 4: approval requests on a database several controllers share.

`TaskStore.recover` at a controller's start gives up only its own host's tasks on PostgreSQL;
`ApprovalStore.recover` expired every pending request in the database, the live ones of other
controllers included: a person about to approve on controller A saw the request end when
controller B (re)started, and A's agent was told no decision came within the timeout. Fixed:
it expires only the requests of tasks no longer running, after the tasks' recovery.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from controller.store.approvals import ApprovalStore, NewApproval
from controller.store.blobs import BlobStore
from controller.store.db import Database
from controller.store.events import EventLog
from controller.store.models import ApprovalState, TaskKind, TaskStatus
from controller.store.tasks import NewTask, TaskStore
from controller.store.threads import ThreadStore
from sandbox import Network

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(60)]

PNG = b"\x89PNG\r\n\x1a\nnot really an image, but bytes all the same"


@dataclass
class Controller:
    db: Database
    tasks: TaskStore
    approvals: ApprovalStore


@pytest.fixture
def two(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Controller, Controller]]:
    made = []
    for host in ("host-a", "host-b"):
        db = Database(postgres_url)
        db.migrate()
        events = EventLog(db)
        tasks = TaskStore(db, events, ThreadStore(db, events), runner=host)
        blobs = BlobStore(tmp_path / host / "blobs")
        approvals = ApprovalStore(db, events, blobs, timeout_s=300, on_task_state=tasks.state_event)
        made.append(Controller(db, tasks, approvals))
    yield made[0], made[1]
    for controller in made:
        controller.db.dispose()


def test_a_starting_controller_leaves_another_controllers_requests_pending(
    two: tuple[Controller, Controller],
) -> None:
    a, b = two
    a.tasks.submit(
        NewTask(
            thread="t",
            command=[],
            mounts=(),
            network=Network.NONE,
            timeout_s=600,
            kind=TaskKind.AGENT,
        )
    )
    task = a.tasks.claim_next()
    assert task is not None
    request = a.approvals.request(
        NewApproval(
            task_id=task.id,
            tool="computer",
            member="left_click",
            input={"coordinate": [10, 20]},
            screen_input={"coordinate": [10, 20]},
            description="Click at (10, 20)",
            model_reason="",
            policy_rule=None,
            screenshot_png=PNG,
            annotated_png=PNG + b"annotated",
        )
    )
    # Controller B starts (service.Controller.start: tasks, then approvals).
    assert b.tasks.recover() == []  # A's task is A's: spared
    b.approvals.recover()
    assert a.tasks.get(task.id).status is TaskStatus.WAITING_FOR_APPROVAL
    after = a.approvals.get(request.id)
    print(f"A's request after B started: {after.state.value} ({after.decision_reason})")
    assert after.state is ApprovalState.PENDING
