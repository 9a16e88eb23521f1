"""Review 9 (low): a cancelled task does not name the repositories its stop renamed aside.

On a cancel, `Handle.kill`'s stop() runs the stop-time search; the runner merges
`git_quarantined_at_stop` into `result` (controller/execution/worker.py:444-451), but
`_finish` (worker.py:618-626) ends a cancelled task with a fixed reason that drops
`result.git_quarantined` / `setid_stripped`. The person is never told that
`x/.git.dispatch-quarantine-1` is there, nor to check it.
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


def test_r9_a_cancelled_task_names_what_its_stop_renamed_aside(
    make_api: Callable[..., Api], workspace: Path
) -> None:
    for folder in (workspace / "projects", workspace / "projects" / "app"):
        os.chown(folder, *OWNER)
    api = make_api(real_sandbox=True, sandbox_backend="docker")
    app = workspace / "projects" / "app"
    task = api.submit(
        ["sh", "-c", f"git init -q {app}/x && touch {app}/ready && sleep 300"],
        folders=[{"path": str(app), "mode": "rw"}],
    )
    wait_until(lambda: (app / "ready").exists() or None, 60, "the task to plant its repository")
    api.post(f"/api/v1/tasks/{task['id']}/cancel")
    done = api.wait_task(task["id"], timeout_s=60)
    assert not (app / "x" / ".git").exists()  # renamed aside, as it should be
    text = json.dumps({k: done.get(k) for k in ("reason", "error", "output")})
    assert "quarantine" in text or f"{app}/x/.git" in text, (
        f"the task ended {done['status']!r} without naming {app}/x/.git, renamed aside: "
        f"{ {k: done.get(k) for k in ('status', 'reason', 'error')} }"
    )
