"""Review 2: a decision that lands after the task was cancelled is still accepted.

`TaskStore.cancel` only sets `cancel_requested`; the pending request stays pending until the
agent's `wait()` polls (every 0.5 s, longer on a loaded machine) and voids it. `decide()` does
not look at the task, so an approval in that window is accepted (200, "approved") and the
gate then runs the action of a task the person already cancelled.
"""

from __future__ import annotations

from conftest import Api
from test_approvals_api import pending_request


def test_review2_an_approval_after_cancel_is_refused(api: Api) -> None:
    task_id, approval_id = pending_request(api)
    assert api.post(f"/api/v1/tasks/{task_id}/cancel").status_code in (200, 202)
    late = api.post(f"/api/v1/approvals/{approval_id}/decision", json={"decision": "approve"})
    # Fails today: 200 and the request is "approved".
    assert late.status_code == 409, late.json()
