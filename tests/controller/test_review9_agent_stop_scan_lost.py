"""Review 9 (hostile; failed before its fix).

an agent task's stop-time search problem is lost.

The agent runner stops its sandbox in `closers` (controller/agent/runner.py:312-316), whose
`except Exception: log.exception(...)` swallows GitScanIncomplete/SetidScanIncomplete; and
`_execute_agent` (controller/execution/worker.py) never reads `box.scan_problem_at_stop` (nor
`git_quarantined_at_stop`/`setid_stripped_at_stop`). A daemon the agent's bash step left
behind, acting after the last command's search, leaves an entry past PATH_MAX; the task ends
"succeeded" with no word that its folder was not all searched.
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
    "setsid sh -c '"
    "while [ ! -e go ]; do sleep 0.2; done; "
    'D=$(head -c 200 /dev/zero | tr "\\0" d); i=0; '
    "while [ $i -lt 19 ]; do mkdir $D && cd $D || exit 9; i=$((i+1)); done; "
    'touch $(head -c 250 /dev/zero | tr "\\0" s); touch {app}/ready'
    "' >/dev/null 2>&1 </dev/null &"
)


def test_r9_an_agent_task_says_its_folders_were_not_all_searched_at_stop(
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
        Reply(text="Done."),
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
    for _ in range(2):
        api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=90)
        request = api.get("/api/v1/approvals?state=pending").json()[0]
        if request["tool"] == "memory":
            # The bash step and its search are over: now the daemon acts.
            (app / "go").touch()
            wait_until(lambda: (app / "ready").exists() or None, 60, "the daemon's entry")
        api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
    done = api.wait_task(task["id"], timeout_s=90)
    text = json.dumps({k: done.get(k) for k in ("status", "reason", "error", "final_answer")})
    assert done["status"] != "succeeded" or "could not" in text, (
        f"the agent task ended with no word of the unsearched entry: {text}"
    )
