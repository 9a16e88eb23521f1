"""Review 8 (hostile; failed before its fix).

when a task is cancelled (or timed out by the runner, or stopped for a full
disk), the search at stop runs in `Handle.kill` (controller/execution/worker.py:184-188), whose
`except sandbox.SandboxError: log.exception(...)` swallows SetidScanIncomplete and
GitScanIncomplete. The runner's own `box.stop()` afterwards is a no-op (`_git_known` is None),
so the task ends as plain "cancelled": nothing in its record says that part of its
read-write folder was not searched for setuid files or planted repositories (nor which
were stripped or renamed aside at that stop: `at_stop` raised before they were assigned).

The task here leaves an entry past PATH_MAX (the setuid search cannot lstat it, even as root).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.controller.conftest import Api, wait_until

pytestmark = pytest.mark.docker
OWNER = (4321, 4321)

SCRIPT = (
    "D=$(head -c 200 /dev/zero | tr '\\0' d); i=0; "
    "while [ $i -lt 19 ]; do mkdir $D && cd $D || exit 9; i=$((i+1)); done; "
    "touch $(head -c 250 /dev/zero | tr '\\0' s); "
    "touch {app}/ready; sleep 300"
)


def test_r8_a_cancelled_task_says_its_folders_were_not_all_searched(
    make_api: Callable[..., Api], workspace: Path
) -> None:
    for folder in (workspace / "projects", workspace / "projects" / "app"):
        os.chown(folder, *OWNER)
    api = make_api(real_sandbox=True, sandbox_backend="docker")
    app = workspace / "projects" / "app"
    task = api.submit(
        ["sh", "-c", SCRIPT.format(app=app)], folders=[{"path": str(app), "mode": "rw"}]
    )
    wait_until(lambda: (app / "ready").exists() or None, 60, "the task to leave its entry")
    api.post(f"/api/v1/tasks/{task['id']}/cancel")
    done = api.wait_task(task["id"], timeout_s=60)
    text = json.dumps(done)
    assert "could not" in text or "setuid" in text, (
        f"the task ended {done['status']!r} with no word of the unsearched entry: "
        f"{ {k: done.get(k) for k in ('status', 'reason', 'error')} }"
    )
