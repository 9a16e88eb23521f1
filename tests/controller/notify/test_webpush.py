"""Web Push end to end: a device subscribes over the API, the controller encrypts each
notification for it with pywebpush, and a push service stand-in on loopback checks the VAPID
signature and decrypts the payload with the subscription's private key."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Api
from harness import pair_device, push_service_fixture, start_api_fixture  # noqa: F401
from receivers import PushService, wait_until

from controller.store.approvals import NewApproval

RUNNING = ["stream", "400", "0.05"]  # the fake sandbox prints for 20 s
CLICK = "Click 'Send' at (812, 430)"


def request_approval(api: Api, task_id: int, description: str = CLICK) -> int:
    api.wait_task(task_id, ["running"])
    approval = api.controller.approvals.request(
        NewApproval(
            task_id=task_id,
            tool="computer",
            member="left_click",
            input={"coordinate": [812, 430]},
            screen_input={"coordinate": [812, 430]},
            description=description,
            model_reason="The draft is ready.",
            policy_rule=None,
            screenshot_png=None,
            annotated_png=None,
        )
    )
    return approval.id


def subscribe(api: Api, headers: dict[str, str], subscription: dict[str, Any]) -> dict[str, Any]:
    response = api.client.post("/api/v1/push/subscriptions", headers=headers, json=subscription)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_an_approval_request_and_a_finished_task_reach_the_phone_encrypted(
    start_api: Callable[..., Api], push_service: PushService
) -> None:
    api = start_api()
    _, phone = pair_device(api)
    subscribe(api, phone, push_service.browser("phone").subscription())
    key = api.client.get("/api/v1/push/key", headers=phone).json()["public_key"]

    task = api.submit(RUNNING, thread="mail")
    approval_id = request_approval(api, task["id"])
    pushes = wait_until(lambda: push_service.received("phone"), 10, "the approval's push")
    payload = pushes[0]
    assert payload["event"] == "approval.requested"
    assert payload["url"] == f"{api.controller.settings.url}/approvals/{approval_id}"
    assert payload["thread"] == {"id": task["thread_id"], "name": "mail"}
    assert payload["task"]["id"] == task["id"]
    approval = api.get(f"/api/v1/approvals/{approval_id}").json()
    assert payload["approval"]["description"] == "Click 'Send' at (812, 430)"
    assert payload["approval"]["expires_at"] == api.controller.approvals.get(approval_id).expires_at
    assert approval["state"] == "pending"
    assert payload["title"] == "Approval needed · mail"
    assert "Click 'Send' at (812, 430)" in payload["body"] and "expires" in payload["body"]
    # Signed with the key the browser subscribed with; the push service may hold it for a
    # phone that is offline, and replaces an undelivered copy with the same Topic.
    push = push_service.pushes[0]
    assert push.vapid_key == key
    assert push.claims["sub"] == "mailto:dispatch@localhost"
    assert push.headers["topic"] == f"dispatch-{payload['event_id']}"
    assert push.headers["urgency"] == "high"

    api.post(f"/api/v1/tasks/{task['id']}/cancel")
    done = api.submit(["echo", "hi"], thread="mail")
    api.wait_task(done["id"])
    finished = wait_until(
        lambda: [p for p in push_service.received("phone") if p["event"] == "task.succeeded"],
        10,
        "the finished task's push",
    )
    assert finished[0]["url"] == (
        f"{api.controller.settings.url}/threads/{done['thread_id']}#task-{done['id']}"
    )
    assert finished[0]["task"] == {"id": done["id"], "status": "succeeded", "summary": "echo hi"}
    # A cancelled task is the person's own doing: no notification.
    assert [p["event"] for p in push_service.received("phone")] == [
        "approval.requested",
        "task.succeeded",
    ]
    wait_until(
        lambda: api.controller.notify.store.subscriptions(2)[0].last_sent_at, 10, "last_sent_at"
    )
    assert not push_service.errors


def test_a_subscription_the_push_service_says_is_gone_is_removed(
    start_api: Callable[..., Api], push_service: PushService
) -> None:
    api = start_api()
    _, phone = pair_device(api)
    _, tablet = pair_device(api, "tablet")
    gone = subscribe(api, phone, push_service.browser("phone").subscription())
    subscribe(api, tablet, push_service.browser("tablet").subscription())
    push_service.status["phone"] = 410

    task = api.submit(["echo", "hi"])
    api.wait_task(task["id"])
    wait_until(lambda: push_service.received("tablet"), 10, "the tablet's push")
    wait_until(
        lambda: api.client.get("/api/v1/push/subscriptions", headers=phone).json() == [],
        10,
        "the gone subscription to be removed",
    )
    rows = {r.target: r for r in api.controller.notify.store.rows()}
    assert rows[str(gone["id"])].sent_at is None and rows[str(gone["id"])].dropped_at is not None
    assert rows[str(gone["id"])].attempts == 1  # 410 is final: not retried
    assert len(api.client.get("/api/v1/push/subscriptions", headers=tablet).json()) == 1


def test_revoking_a_device_removes_its_subscriptions_and_it_gets_nothing_more(
    start_api: Callable[..., Api], push_service: PushService
) -> None:
    api = start_api()
    phone_id, phone = pair_device(api)
    _, tablet = pair_device(api, "tablet")
    subscribe(api, phone, push_service.browser("phone").subscription())
    subscribe(api, tablet, push_service.browser("tablet").subscription())

    assert api.delete(f"/api/v1/devices/{phone_id}").status_code == 200
    assert api.controller.notify.store.subscriptions(phone_id) == []
    task = api.submit(["echo", "after"])
    api.wait_task(task["id"])
    wait_until(lambda: push_service.received("tablet"), 10, "the tablet's push")
    assert push_service.received("phone") == []
    # A revoked token cannot subscribe again.
    again = api.client.post(
        "/api/v1/push/subscriptions",
        headers=phone,
        json=push_service.browser("phone2").subscription(),
    )
    assert again.status_code == 401


def test_a_test_push_reaches_this_device_only(
    start_api: Callable[..., Api], push_service: PushService
) -> None:
    api = start_api()
    _, phone = pair_device(api)
    _, tablet = pair_device(api, "tablet")
    no_subscription = api.client.post("/api/v1/push/test", headers=phone)
    assert no_subscription.status_code == 409
    assert "subscribe first" in no_subscription.json()["error"]["message"]
    mine = subscribe(api, phone, push_service.browser("phone").subscription())
    subscribe(api, tablet, push_service.browser("tablet").subscription())

    response = api.client.post("/api/v1/push/test", headers=phone)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "results": [{"subscription_id": mine["id"], "delivered": True, "error": None}]
    }
    assert push_service.received("phone")[0]["event"] == "test"
    assert push_service.received("tablet") == []


def test_subscriptions_belong_to_their_device(
    start_api: Callable[..., Api], push_service: PushService
) -> None:
    api = start_api()
    _, phone = pair_device(api)
    _, tablet = pair_device(api, "tablet")
    browser = push_service.browser("phone")
    first = subscribe(api, phone, browser.subscription())
    # Subscribing the same endpoint again (the page reloaded) keeps one subscription.
    assert subscribe(api, phone, browser.subscription())["id"] == first["id"]
    listed = api.client.get("/api/v1/push/subscriptions", headers=phone).json()
    assert [s["id"] for s in listed] == [first["id"]]
    assert listed[0]["endpoint_origin"] == push_service.url
    # Another device cannot see or remove it; the owner can remove it.
    assert api.client.get("/api/v1/push/subscriptions", headers=tablet).json() == []
    url = f"/api/v1/push/subscriptions/{first['id']}"
    assert api.client.delete(url, headers=tablet).status_code == 404
    assert api.client.delete(url, headers=phone).status_code == 204
    assert api.client.delete(url, headers=phone).status_code == 404


def test_bad_subscriptions_are_refused_naming_the_fix(
    start_api: Callable[..., Api], push_service: PushService
) -> None:
    api = start_api(notify="")
    _, phone = pair_device(api)
    good = push_service.browser("phone").subscription()

    def refused(subscription: dict[str, Any]) -> str:
        response = api.client.post("/api/v1/push/subscriptions", headers=phone, json=subscription)
        assert response.status_code == 422, response.text
        message: str = response.json()["error"]["message"]
        return message

    assert "allow_http_endpoints" in refused(good)  # http:// is for a push service on loopback
    https = {**good, "endpoint": "https://push.example.com/x"}
    assert "p256dh" in refused({**https, "keys": {**good["keys"], "p256dh": "AAAA"}})
    assert "auth" in refused({**https, "keys": {**good["keys"], "auth": "!!"}})
    assert "endpoint" in refused({**https, "endpoint": "file:///etc/passwd"})
    assert api.controller.notify.store.subscriptions(2) == []


def test_the_vapid_key_is_made_once_and_kept_private(
    start_api: Callable[..., Api], workspace: Path
) -> None:
    api = start_api()
    key = api.get("/api/v1/push/key").json()["public_key"]
    path = workspace / "data" / "vapid_private_key.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key not in path.read_text()  # the file holds the private key, PEM
    api.client.close()
    again = start_api()
    assert again.get("/api/v1/push/key").json()["public_key"] == key


def test_web_push_can_be_turned_off(start_api: Callable[..., Api]) -> None:
    api = start_api(notify="[notify.webpush]\nenabled = false\n")
    response = api.get("/api/v1/push/key")
    assert response.status_code == 409
    assert "[notify.webpush]" in response.json()["error"]["message"]


def test_the_default_vapid_contact_is_one_pywebpush_signs_for_a_controller_with_a_port() -> None:
    from py_vapid import _check_sub

    from controller.notify.webpush import default_subject

    # `dispatch tls init`'s usual address: https with an IP and a port.
    for url in ("https://192.168.1.20:8420", "https://dispatch.example.com/", "http://x:1"):
        assert _check_sub(default_subject(url)), url
    assert default_subject("https://192.168.1.20:8420") == "https://192.168.1.20"
