"""The console's audit trail, live screen, resumed stream and notification settings in real
Chromium at a phone's viewport, against a real `dispatch serve` over HTTPS.

An agent task drives a real Xvfb standing in for the owner's screen (`display: "host"`) through
the real client and tool runner against the scripted fake Messages API, so the live screen and
the audit's screenshots are real captures. Screenshots of the pages go to test-artifacts/console/.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import http_ece
import pytest
from conftest import wait_until
from console_live import Console, Phones, open_chromium, start_console
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from test_console_browser import card, expect_text, new_thread, send, wait_status

from computer_use.audit.chain import AUDIT_FOLDER, LOG_NAME
from computer_use.audit.export import verify_export
from computer_use.testing.fake_model import (
    FakeModel,
    ModelRequest,
    Reply,
    ToolCall,
    centre_of_largest_region,
    newest_screenshot,
)
from tests.computer_use.xdisplay import ProbeApp, Xvfb, xvfb

pytestmark = [pytest.mark.browser, pytest.mark.slow]
BLUE = (0x30, 0x60, 0xC0)  # probe_app.BUTTON_COLOUR
WEBHOOK_SECRET = "hook-secret-never-shown"


@pytest.fixture
def console(workspace: Path, fake_model: FakeModel) -> Iterator[Console]:
    env = {"ANTHROPIC_BASE_URL": fake_model.url, "ANTHROPIC_API_KEY": "test-key"}
    yield from start_console(workspace, extra_env=env)


@pytest.fixture
def phones(console: Console) -> Iterator[Phones]:
    yield from open_chromium(console)


# --- an agent task on the host display -----------------------------------------------------


@pytest.fixture
def screen(tmp_path: Path) -> Iterator[tuple[Xvfb, ProbeApp]]:
    with xvfb(1024, 768) as server:
        app = ProbeApp(server, tmp_path / "events.jsonl")
        try:
            yield server, app
        finally:
            app.close()


@pytest.fixture
def desktop_console(
    workspace: Path, fake_model: FakeModel, screen: tuple[Xvfb, ProbeApp]
) -> Iterator[Console]:
    env = {
        "ANTHROPIC_BASE_URL": fake_model.url,
        "ANTHROPIC_API_KEY": "test-key",
        "DISPATCH_HOST_DISPLAY": screen[0].name,
    }
    yield from start_console(workspace, extra_env=env)


@pytest.fixture
def desktop_phones(desktop_console: Console) -> Iterator[Phones]:
    yield from open_chromium(desktop_console)


def click_button(request: ModelRequest) -> Reply:
    x, y = centre_of_largest_region(newest_screenshot(request.messages), BLUE, tolerance=40)
    return Reply(
        text="Pressing the button.",
        tool_calls=[ToolCall("left_click", {"coordinate": [x, y]}, toolset="computer")],
    )


def pending(page: Any, task_id: int, member_text: str) -> Any:
    """The task card's pending request whose action names `member_text`."""
    found = card(page, task_id).locator("section.approval[data-state=pending]")
    found.filter(has_text=member_text).first.wait_for(timeout=60_000)
    return found.filter(has_text=member_text).first


def approve_until(console: Console, page: Any, task_id: int, text: str) -> Any:
    """Approve the task's other requests (the policy may ask before a screenshot) from the
    owner's side, until the phone shows a request for `text`; that request's card."""
    script = f"""[...document.querySelectorAll(
        '#task-{task_id} section.approval[data-state=pending]')]
        .map(s => [s.dataset.approvalId, s.querySelector('.action').textContent])"""
    approved: set[str] = set()

    def next_request() -> Any:
        for approval_id, action in page.evaluate(script):
            if text in action:
                return page.locator(f"#approval-{approval_id}")
            if approval_id not in approved:
                approved.add(approval_id)
                console.owner.post(
                    f"/api/v1/approvals/{approval_id}/decision", json={"decision": "approve"}
                )
        return None

    return wait_until(next_request, 60, f"a request for {text!r}")


def test_watch_the_screen_zoom_the_request_and_read_the_verified_audit_timeline(
    desktop_console: Console, desktop_phones: Phones, fake_model: FakeModel, tmp_path: Path
) -> None:
    console = desktop_console
    fake_model.add(
        Reply(text="Looking first.", tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        click_button,
        Reply(text="Checking.", tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        Reply(
            text="Clicking the corner.",
            tool_calls=[ToolCall("left_click", {"coordinate": [5, 5]}, toolset="computer")],
        ),
        Reply(text="Pressed."),
    )
    page = desktop_phones.paired("phone")
    new_thread(page, "desk")
    page.check("form[data-form=submit-task] input[name=kind][value=agent]")
    page.click("form[data-form=submit-task] details.options summary")
    page.uncheck("input[name=tool][value=bash]")
    page.check("input[name=tool][value=computer]")
    page.select_option("select[name=display]", "host")
    page.fill("#task-text", "Press the button")
    page.click("form[data-form=submit-task] button[type=submit]")
    page.locator("article.task").first.wait_for()
    task_id = int(page.locator("article.task").first.get_attribute("data-task-id"))

    pending(page, task_id, "screenshot").locator("button[data-action=approve]").click()
    click = pending(page, task_id, "Click")
    screen_img = card(page, task_id).locator("img[data-role=screen]")
    screen_img.wait_for()
    before = screen_img.get_attribute("src")
    # Tap to zoom: the screenshot the request is for, at full size.
    click.locator("img.shot").click()
    zoom = page.locator("dialog#zoom")
    wait_until(lambda: zoom.get_attribute("open") is not None, 10, "the zoomed screenshot")
    assert page.evaluate("document.querySelector('#zoom img').naturalWidth") == 1024
    console.shot(page, "approval-zoom")
    zoom.locator("button").click()
    click.locator("button[data-action=approve]").click()

    # The live screen changes under the phone's eyes: the capture after the click replaces it
    # (the screenshot runs without asking; the next click waits for the phone).
    corner = approve_until(console, page, task_id, "(5, 5)")
    wait_until(lambda: screen_img.get_attribute("src") != before, 30, "the live screen to change")
    page.evaluate("document.querySelector('img[data-role=screen]').scrollIntoView()")
    console.shot(page, "live-screen")
    corner.locator("button[data-action=approve]").click()
    wait_status(page, task_id, "succeeded", 60)

    card(page, task_id).locator("a[data-role=audit]").click()
    page.wait_for_url(f"{console.url}/tasks/{task_id}/audit")
    status = page.locator("[data-role=verification]")
    assert status.get_attribute("data-ok") == "true"
    assert "Verified" in status.inner_text()
    timeline = page.locator("ol.timeline li.entry")
    kinds = [timeline.nth(i).get_attribute("data-kind") for i in range(timeline.count())]
    assert kinds[0] == "task_submitted" and kinds[-1] == "task_finished"
    assert kinds.count("approval_decided") >= 3 and kinds.count("action_performed") == 4
    decisions = page.locator("[data-role=decision]")
    assert decisions.count() == kinds.count("approval_decided")
    said = [decisions.nth(i).inner_text() for i in range(decisions.count())]
    # The click the phone approved: who, and on which device.
    assert any("Approved by device 'phone' (id " in line for line in said), said
    thumbs = page.locator("img.thumb")
    assert thumbs.count() >= 5  # judged + annotated per request, the screens after
    for i in range(thumbs.count()):  # loaded lazily, as each scrolls into view
        thumbs.nth(i).scroll_into_view_if_needed()
    wait_until(
        lambda: page.evaluate(
            "[...document.querySelectorAll('img.thumb')].every(i => i.naturalWidth > 0)"
        ),
        20,
        "every thumbnail to load",
    )
    page.evaluate("window.scrollTo(0, 0)")
    console.shot(page, "audit")
    page.locator("li.entry", has=page.locator("img.thumb")).nth(1).scroll_into_view_if_needed()
    console.shot(page, "audit-screenshots")
    thumbs.nth(2).click()
    wait_until(lambda: zoom.get_attribute("open") is not None, 10, "the zoomed thumbnail")
    zoom.locator("button").click()

    with page.expect_download() as download:
        page.click("a[data-role=export]")
    archive = tmp_path / "export.zip"
    download.value.save_as(archive)
    zipfile.ZipFile(archive).extractall(tmp_path / "export")
    exported = tmp_path / "export" / f"dispatch-audit-task-{task_id}"
    report = verify_export(exported)
    assert report.ok, report.summary()
    assert len(list((exported / "shots").iterdir())) >= 5
    # The device now keeps the head it last saw.
    head = console.owner.get("/api/v1/audit/head").json()
    wait_until(
        lambda: (
            page.evaluate("localStorage.getItem('dispatch.audit.head')")
            == f"{head['seq']}:{head['hash']}"
        ),
        10,
        "the device to keep the head",
    )


# --- the audit head a device keeps ---------------------------------------------------------


def test_a_tampered_audit_log_raises_the_banner_on_every_page(
    console: Console, phones: Phones
) -> None:
    page = phones.paired("phone")
    new_thread(page, "audited")
    first = send(page, "echo first")
    wait_status(page, first, "succeeded")
    thread_url = page.url
    page.goto(f"{console.url}/tasks/{first}/audit")
    assert page.locator("[data-role=verification]").get_attribute("data-ok") == "true"
    head = page.locator("#audit").get_attribute("data-audit-head")
    wait_until(
        lambda: page.evaluate("localStorage.getItem('dispatch.audit.head')") == head,
        10,
        "the device to keep the head",
    )
    kept = head
    assert page.locator("#audit-alarm").is_hidden()

    # Someone with the machine rewrites what the first task ran.
    log = console.data_dir / AUDIT_FOLDER / LOG_NAME
    log.write_bytes(log.read_bytes().replace(b'"first"', b'"FIRST"', 1))

    page.goto(thread_url)  # nothing new yet: the head is the one kept
    assert page.locator("#audit-alarm").is_hidden()
    second = send(page, "echo second")  # the controller's head moves on; the stream says so
    wait_status(page, second, "succeeded")
    alarm = page.locator("#audit-alarm")
    alarm.wait_for(state="visible", timeout=20_000)
    assert "NOT intact" in alarm.inner_text() and "edited" in alarm.inner_text()
    assert kept in alarm.inner_text()
    console.shot(page, "audit-alarm")
    for path in ("/", "/approvals", "/settings"):  # on every page, not only where it was seen
        page.goto(f"{console.url}{path}")
        page.locator("#audit-alarm").wait_for(state="visible", timeout=20_000)
    page.goto(f"{console.url}/tasks/{first}/audit")
    status = page.locator("[data-role=verification]")
    assert status.get_attribute("data-ok") == "false"
    assert "NOT verified" in status.inner_text() and "edited" in status.inner_text()
    console.shot(page, "audit-tampered")
    # The kept head stays what it was: a reload does not make the warning go away.
    assert page.evaluate("localStorage.getItem('dispatch.audit.head')") == kept


# --- the event stream resumes after the phone slept ------------------------------------------


def test_events_missed_while_asleep_and_offline_arrive_without_a_reload(
    console: Console, phones: Phones
) -> None:
    page = phones.paired("phone")
    new_thread(page, "sleepy")
    page.wait_for_selector("#live.on")
    page.evaluate("window.notReloaded = true")
    # The phone sleeps: the page's stream is dropped and the network is gone.
    page.evaluate("stream.close()")
    page.context.set_offline(True)
    task = console.owner.post(
        "/api/v1/tasks", json={"thread": "sleepy", "command": ["echo", "while you slept"]}
    )
    assert task.status_code == 202, task.text
    wait_until(
        lambda: console.task(task.json()["id"])["status"] == "succeeded", 30, "the task to end"
    )
    assert card(page, task.json()["id"]).count() == 0  # nothing reached the sleeping page
    page.context.set_offline(False)  # it wakes up
    wait_status(page, task.json()["id"], "succeeded")
    expect_text(page, f"#task-{task.json()['id']} pre.output", "while you slept")
    assert page.evaluate("window.notReloaded === true")
    page.wait_for_selector("#live.on")


# --- notification settings -----------------------------------------------------------------


class PushAndHookStandIn:
    """A push service on loopback that decrypts each payload as the phone's browser would, and
    a webhook receiver; both keep what they were sent."""

    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.secret = os.urandom(16)
        self.pushed: list[dict[str, Any]] = []
        self.hooked: list[tuple[dict[str, str], bytes]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.path.startswith("/push/"):
                    plain = http_ece.decrypt(
                        body,
                        private_key=owner.key,
                        auth_secret=owner.secret,
                        version="aes128gcm",
                    )
                    owner.pushed.append(json.loads(plain))
                else:
                    owner.hooked.append((dict(self.headers), body))
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def subscription(self) -> dict[str, Any]:
        """What `PushSubscription.toJSON()` gives for a subscription at this push service."""
        point = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        return {
            "endpoint": f"{self.url}/push/phone",
            "expirationTime": None,
            "keys": {"p256dh": b64(point), "auth": b64(self.secret)},
        }


@pytest.fixture
def stand_in() -> Iterator[PushAndHookStandIn]:
    found = PushAndHookStandIn()
    try:
        yield found
    finally:
        found.server.shutdown()


@pytest.fixture
def notify_console(workspace: Path, stand_in: PushAndHookStandIn) -> Iterator[Console]:
    config = (
        "\n[notify.webpush]\nallow_http_endpoints = true\n"
        f'\n[notify.webhook]\nurl = "{stand_in.url}/hook?key=query-secret"\n'
        f'secret = "{WEBHOOK_SECRET}"\n'
    )
    yield from start_console(workspace, config=config)


@pytest.fixture
def notify_phones(notify_console: Console) -> Iterator[Phones]:
    yield from open_chromium(notify_console)


def test_notification_settings_register_the_worker_subscribe_test_and_turn_off(
    notify_console: Console, notify_phones: Phones, stand_in: PushAndHookStandIn
) -> None:
    console = notify_console
    page = notify_phones.paired("phone")
    page.context.grant_permissions(["notifications"], origin=console.url)
    page.goto(f"{console.url}/settings")
    state = page.locator("#push-state")
    wait_until(lambda: state.get_attribute("data-state") != "unknown", 20, "the push state shown")
    assert state.get_attribute("data-state") == "not-subscribed"
    # The service worker is registered for the whole console.
    scope = page.evaluate(
        "navigator.serviceWorker.ready.then(r => r.active && r.scope)",
    )
    assert scope == f"{console.url}/"
    section = page.locator("#notifications")
    assert "/hook" in section.inner_text()
    assert "signed" in section.inner_text()
    assert WEBHOOK_SECRET not in page.content() and "query-secret" not in page.content()

    # Headless Chromium has no push service to subscribe at (Debian's build has no FCM
    # keys, and this machine no network): the button must say so, not fail silently.
    page.click("button[data-action=push-subscribe]")
    error = section.locator(".error")
    subscribed_for_real = False
    try:
        error.wait_for(state="visible", timeout=20_000)
    except Exception:
        subscribed_for_real = True  # a Chromium with a push service reloads the page
    if not subscribed_for_real:
        assert "push service" in error.inner_text(), error.inner_text()
        print(f"this Chromium cannot subscribe: {error.inner_text()}")

    # A subscription at the stand-in push service, posted as the console posts the
    # browser's PushSubscription.toJSON().
    status = page.evaluate(
        """async (subscription) => (await fetch('/api/v1/push/subscriptions', {
            method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json',
                      'X-CSRF-Token': document.querySelector('meta[name=csrf-token]').content},
            body: JSON.stringify(subscription)})).status""",
        stand_in.subscription(),
    )
    assert status == 201
    page.reload()
    row = page.locator("li[data-subscription-id]").last
    assert stand_in.url in row.inner_text()
    page.evaluate("document.getElementById('notifications').scrollIntoView()")
    console.shot(page, "notifications")

    page.click("button[data-action=push-test]")
    results = page.locator("#test-results li")
    wait_until(lambda: results.count() >= 2, 20, "the test's results")
    delivered = {
        results.nth(i).get_attribute("data-channel"): results.nth(i).get_attribute("data-delivered")
        for i in range(results.count())
    }
    assert delivered == {"webpush": "true", "webhook": "true"}, page.locator(
        "#test-results"
    ).inner_text()
    wait_until(lambda: stand_in.pushed and stand_in.hooked, 10, "the test to arrive")
    assert stand_in.pushed[-1]["body"] == "Notifications reach phone."
    headers, body = stand_in.hooked[-1]
    expected = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Dispatch-Signature"] == f"sha256={expected}"
    assert json.loads(body)["event"] == "test"
    page.evaluate("document.getElementById('notifications').scrollIntoView()")
    console.shot(page, "notifications-tested")

    page.click("button[data-action=push-unsubscribe]")
    page.locator("#no-subscriptions").wait_for()  # gone from the controller
    wait_until(lambda: state.get_attribute("data-state") == "not-subscribed", 20, "the push state")
