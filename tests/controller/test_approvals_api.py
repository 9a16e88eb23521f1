"""Approval requests and the agent's memory through the HTTP API (the app in process)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from conftest import Api, LiveServer, wait_until

from controller.store.approvals import NewApproval

PNG = b"\x89PNG\r\n\x1a\n-screenshot-"
ANNOTATED = b"\x89PNG\r\n\x1a\n-annotated-"


def device_headers(api: Api, name: str = "phone") -> dict[str, str]:
    code = api.post("/api/v1/pairing-codes").json()["code"]
    paired = api.client.post("/api/v1/pair", json={"code": code, "device_name": name}).json()
    return {"Authorization": f"Bearer {paired['token']}"}


def pending_request(api: Api, *, images_follow: bool = False) -> tuple[int, int]:
    """A running task with one pending approval request: (task id, approval id); with
    `images_follow`, announced before its images are stored."""
    task = api.submit(["sleep", "30"])
    api.wait_task(task["id"], ("running",))
    approval = api.controller.approvals.request(
        NewApproval(
            task_id=task["id"],
            tool="computer",
            member="left_click",
            input={"coordinate": [400, 300]},
            screen_input={"coordinate": [800, 600]},
            description="Click at (800, 600)",
            model_reason="Pressing Send.",
            policy_rule="default: computer.left_click asks",
            screenshot_png=None if images_follow else PNG,
            annotated_png=None if images_follow else ANNOTATED,
            images_follow=images_follow,
        )
    )
    return task["id"], approval.id


def test_a_request_is_listed_shown_and_decided_once_by_a_device(api: Api) -> None:
    task_id, approval_id = pending_request(api)
    assert api.task(task_id)["status"] == "waiting_for_approval"
    phone = device_headers(api)
    pending = api.get("/api/v1/approvals?state=pending", headers=phone).json()
    assert [a["id"] for a in pending] == [approval_id]
    shown = api.get(f"/api/v1/approvals/{approval_id}", headers=phone).json()
    assert shown["description"] == "Click at (800, 600)"
    assert shown["model_reason"] == "Pressing Send."
    screenshot = api.get(shown["screenshot_url"], headers=phone)
    assert screenshot.headers["content-type"] == "image/png" and screenshot.content == PNG
    assert api.get(shown["annotated_url"], headers=phone).content == ANNOTATED

    decided = api.post(
        f"/api/v1/approvals/{approval_id}/decision", json={"decision": "approve"}, headers=phone
    )
    assert decided.status_code == 200, decided.text
    assert decided.json()["state"] == "approved"
    assert api.task(task_id)["status"] == "running"
    again = api.post(
        f"/api/v1/approvals/{approval_id}/decision", json={"decision": "deny"}, headers=phone
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "approval_approved"
    assert api.get(f"/api/v1/approvals/{approval_id}").json()["state"] == "approved"
    api.post(f"/api/v1/tasks/{task_id}/cancel")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"decision": "yes"}, "decision"),
        ({}, "decision"),
        ({"decision": "deny", "reason": "x" * 2001}, "reason"),
        ({"decision": "approve", "extra": 1}, "extra"),
    ],
)
def test_a_malformed_decision_is_a_422_naming_the_field_and_changes_nothing(
    api: Api, body: dict[str, Any], field: str
) -> None:
    task_id, approval_id = pending_request(api)
    response = api.post(f"/api/v1/approvals/{approval_id}/decision", json=body)
    assert response.status_code == 422
    assert field in response.json()["error"]["message"]
    assert api.get(f"/api/v1/approvals/{approval_id}").json()["state"] == "pending"
    api.post(f"/api/v1/tasks/{task_id}/cancel")


def test_a_revoked_device_cannot_decide(api: Api) -> None:
    task_id, approval_id = pending_request(api)
    phone = device_headers(api)
    device_id = next(d["id"] for d in api.get("/api/v1/devices").json() if d["name"] == "phone")
    assert api.delete(f"/api/v1/devices/{device_id}").status_code == 200
    response = api.post(
        f"/api/v1/approvals/{approval_id}/decision", json={"decision": "approve"}, headers=phone
    )
    assert response.status_code == 401
    assert api.get(f"/api/v1/approvals/{approval_id}").json()["state"] == "pending"
    api.post(f"/api/v1/tasks/{task_id}/cancel")


def test_cancelling_the_task_voids_its_pending_request(api: Api) -> None:
    task_id, approval_id = pending_request(api)
    api.controller.approvals.void_for_task(task_id, "the task was cancelled")
    api.post(f"/api/v1/tasks/{task_id}/cancel")
    assert api.get(f"/api/v1/approvals/{approval_id}").json()["state"] == "void"
    late = api.post(f"/api/v1/approvals/{approval_id}/decision", json={"decision": "approve"})
    assert late.status_code == 409


def test_unknown_requests_and_images_are_404(api: Api) -> None:
    assert api.get("/api/v1/approvals/999").status_code == 404
    assert api.get("/api/v1/approvals/999/screenshot").status_code == 404
    response = api.post("/api/v1/approvals/999/decision", json={"decision": "approve"})
    assert response.status_code == 404


def test_memory_is_listed_read_written_and_deleted(api: Api) -> None:
    assert api.get("/api/v1/memory").json() == []
    written = api.request(
        "PUT", "/api/v1/memory/people/me.md", json={"content": "likes tea"}
    ).json()
    assert written["path"] == "/memories/people/me.md" and written["content"] == "likes tea"
    assert [f["path"] for f in api.get("/api/v1/memory").json()] == ["/memories/people/me.md"]
    assert api.get("/api/v1/memory/people/me.md").json()["content"] == "likes tea"
    assert api.delete("/api/v1/memory/people").status_code == 204
    assert api.get("/api/v1/memory/people/me.md").status_code == 404
    wait_until(lambda: api.get("/api/v1/memory").json() == [], 2, "the memory to be empty")


@pytest.mark.parametrize("path", ["..%2Fetc%2Fpasswd", "a/%2E%2E/%2E%2E/b", "%2E/x", "a%01b"])
def test_memory_paths_that_escape_are_refused(api: Api, path: str) -> None:
    response = api.request("PUT", f"/api/v1/memory/{path}", json={"content": "x"})
    assert response.status_code in (404, 422)
    assert api.get("/api/v1/memory").json() == []


def test_the_effective_default_policy_is_shown(api: Api) -> None:
    shown = api.get("/api/v1/policy").json()
    assert shown["source"] == "default"
    assert shown["sandbox"]["default"] == "ask" and shown["host"]["default"] == "ask"
    sandbox_rules = {(r["tool"], r.get("member")) for r in shown["sandbox"]["rules"]}
    host_rules = {(r["tool"], r.get("member")) for r in shown["host"]["rules"]}
    assert ("computer", "screenshot") in sandbox_rules
    # On the host display approval is the only fence: no computer member is let through.
    assert not any(tool == "computer" for tool, _ in host_rules)


def test_a_request_announced_before_its_images_serves_them_once_stored(api: Api) -> None:
    _, approval_id = pending_request(api, images_follow=True)
    shown = api.get(f"/api/v1/approvals/{approval_id}").json()
    assert shown["images_ready"] is False
    assert shown["annotated_url"] == f"/api/v1/approvals/{approval_id}/annotated"
    # The image route waits for the images instead of answering that there are none.
    attacher = threading.Timer(
        0.3, api.controller.approvals.attach_images, (approval_id, PNG, ANNOTATED)
    )
    attacher.start()
    image = api.get(f"/api/v1/approvals/{approval_id}/annotated")
    attacher.join()
    assert image.status_code == 200 and image.content == ANNOTATED
    assert api.get(f"/api/v1/approvals/{approval_id}").json()["images_ready"] is True


def test_waiting_for_images_holds_no_worker_thread(
    make_live_server: Callable[..., LiveServer],
) -> None:
    # Review 4: 80 devices' image requests waiting for a request's images held the thread pool
    # (40 threads) the synchronous routes run on, and stalled every other request meanwhile.
    live_server = make_live_server(max_connections_per_client=100)
    client = httpx.Client(base_url=live_server.url, headers=live_server.headers, timeout=60)
    task = client.post("/api/v1/tasks", json={"command": ["sleep", "30"]}).json()
    wait_until(lambda: client.get(f"/api/v1/tasks/{task['id']}").json()["status"] == "running")
    approvals = live_server.controller.approvals
    approvals.images_wait_s = 30
    approval = approvals.request(
        NewApproval(
            task_id=task["id"],
            tool="computer",
            member="left_click",
            input={"coordinate": [1, 2]},
            screen_input={"coordinate": [1, 2]},
            description="Click at (1, 2)",
            model_reason="",
            policy_rule=None,
            screenshot_png=None,
            annotated_png=None,
            images_follow=True,
        )
    )
    answers: list[int] = []

    def wait_for_image() -> None:
        with httpx.Client(headers=live_server.headers, timeout=60) as own:
            url = f"{live_server.url}/api/v1/approvals/{approval.id}/annotated"
            answers.append(own.get(url).status_code)

    waiters = [threading.Thread(target=wait_for_image) for _ in range(60)]
    for waiter in waiters:
        waiter.start()
    state = live_server.server.server_state
    wait_until(lambda: len(state.connections) >= 61, what="the 60 image requests to connect")
    # Answered while every image request still waits (before, only once they gave up).
    assert client.get("/api/v1/approvals?state=pending").status_code == 200
    assert answers == []
    approvals.attach_images(approval.id, PNG, ANNOTATED)
    for waiter in waiters:
        waiter.join(60)
    assert answers == [200] * 60
    client.close()
