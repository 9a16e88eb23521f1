"""Review 10 (hostile; failed before its fix).

a cancelled agent task does not name what its sandbox's stop renamed aside.

`_execute_agent` (controller/execution/worker.py ~566-578) computes `_at_stop(handle.boxes)` but
on `handle.stopping` calls `self._finish(handle, None, ...)`, whose cancelled branch names only
`_left_behind(None)` ("") and `handle.scan_problem`; `stopped.quarantined`/`stopped.stripped`
are dropped. A daemon the agent's bash step left plants a repository after that command's
search; the cancel's stop renames it aside, and the task's end says nothing of it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from computer_use.testing.fake_model import FakeModel, Reply, ToolCall
from tests.controller.conftest import Api, wait_until

pytestmark = pytest.mark.docker
OWNER = (4321, 4321)

DAEMON = (
    "setsid sh -c 'while [ ! -e go ]; do sleep 0.2; done; mkdir -p sub/.git; "
    "touch {app}/ready' >/dev/null 2>&1 </dev/null &"
)


def test_r10_a_cancelled_agent_task_names_what_its_stop_renamed_aside(
    make_agent_api: Callable[..., Api], fake_model: FakeModel, workspace: Path
) -> None:
    for folder in (workspace / "projects", workspace / "projects" / "app"):
        os.chown(folder, *OWNER)
    app = workspace / "projects" / "app"
    api = make_agent_api(real_sandbox=True, sandbox_backend="docker")
    bash = ToolCall("bash", {"command": DAEMON.format(app=app)}, toolset=None)
    memory = ToolCall(
        "memory", {"command": "create", "path": "/memories/x.md", "file_text": "x"}, toolset=None
    )
    fake_model.add(
        Reply(text="Starting.", tool_calls=[bash]),
        Reply(text="Noting.", tool_calls=[memory]),
    )
    response = api.post(
        "/api/v1/tasks",
        json={
            "kind": "agent",
            "prompt": "go",
            "tools": ["bash", "memory"],
            "folders": [{"path": str(app), "mode": "rw"}],
        },
    )
    assert response.status_code == 202, response.text
    task = response.json()
    api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=90)
    request = api.get("/api/v1/approvals?state=pending").json()[0]
    api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
    api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=90)
    request = api.get("/api/v1/approvals?state=pending").json()[0]
    assert request["tool"] == "memory", request
    (app / "go").touch()
    wait_until(lambda: (app / "ready").exists() or None, 60, "the daemon's repository")
    api.post(f"/api/v1/tasks/{task['id']}/cancel")
    done = api.wait_task(task["id"], timeout_s=90)
    assert not (app / "sub" / ".git").exists()  # the stop renamed it aside
    text = json.dumps({k: done.get(k) for k in ("status", "reason", "error")})
    assert "sub/.git" in text, f"the cancelled agent task does not name it: {text}"
