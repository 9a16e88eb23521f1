"""The audit log through the controller: command tasks are recorded, retention at start."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Api

from computer_use.audit.chain import AUDIT_FOLDER, AuditLog
from computer_use.audit.entry import Kind
from controller.errors import ConfigError

DAY_S = 24 * 3600


def test_a_command_task_is_in_the_log_from_submission_to_its_end(api: Api) -> None:
    done = api.wait_task(api.submit(["echo", "hi"])["id"])
    steps = api.get(f"/api/v1/tasks/{done['id']}/audit").json()
    assert [s["kind"] for s in steps] == [
        "task_submitted",
        "task_started",
        "sandbox_command",
        "task_finished",
    ]
    assert steps[0]["data"]["request"]["command"] == ["echo", "hi"]
    assert steps[0]["data"]["by"] == "the owner"
    assert steps[2]["data"]["exit_code"] == 0
    assert steps[3]["data"]["status"] == "succeeded"
    assert api.get("/api/v1/audit/verify").json()["ok"]
    # A head that the log does not extend (a rewrite) is named as such.
    forged = f"{steps[-1]['seq']}:{'0' * 64}"
    report = api.get("/api/v1/audit/verify", params={"head": forged}).json()
    assert not report["ok"] and "head" in report["summary"]


def test_screenshots_past_retention_are_removed_at_start_and_verify_still_passes(
    make_api: Callable[..., Api], workspace: Path
) -> None:
    root = workspace / "data" / AUDIT_FOLDER
    old = time.time() - 10 * DAY_S
    with AuditLog.open(root, clock=lambda: old) as log:
        entry = log.append(
            Kind.TASK_STARTED, task=None, thread=None, data={}, shots={"after": b"\x89PNG old"}
        )
    shot = root / "shots"
    assert any(p.is_file() for p in shot.rglob("*"))
    api = make_api(audit_retention_days=3)
    assert not [p for p in shot.rglob("*") if p.is_file()], "the old screenshot was kept"
    report = api.get("/api/v1/audit/verify").json()
    assert report["ok"], report
    assert report["report"]["screenshots_pruned"] == 1 and "pruned" in report["summary"]
    assert entry.seq == 1


def test_a_wrong_retention_stops_start_up_naming_the_setting(
    make_settings: Callable[..., object],
) -> None:
    with pytest.raises(ConfigError, match="audit_retention_days"):
        make_settings(audit_retention_days="-1")


def test_task_state_events_carry_the_chain_head_after_the_entry_they_announce(api: Api) -> None:
    from sqlalchemy import select

    from controller.store.models import Event

    done = api.wait_task(api.submit(["true"])["id"])
    finished = api.get(f"/api/v1/tasks/{done['id']}/audit").json()[-1]
    assert finished["kind"] == "task_finished"
    with api.controller.db.read() as session:
        states = session.scalars(
            select(Event.data).where(Event.task_id == done["id"], Event.kind == "task.state")
        ).all()
    last = states[-1]
    assert last["status"] == "succeeded"
    # The head a device receives with "succeeded" already covers the task's finish.
    assert last["audit_head"] == {"seq": finished["seq"], "hash": finished["hash"]}
