"""The console in real Chromium at a phone's viewport (390x844), against a real `dispatch serve`
over HTTPS with `dispatch tls init`'s certificate: pairing, threads, tasks, approvals from the
card, two devices, revocation, and cross-site requests.

A screenshot of every page is saved under test-artifacts/console/ (`console-*.png`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import wait_until
from console_live import Console, Phones, open_chromium, start_console

from computer_use.testing.fake_model import FakeModel, Reply, ToolCall

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture
def console(
    request: pytest.FixtureRequest, workspace: Path, fake_model: FakeModel
) -> Iterator[Console]:
    """The controller; `@pytest.mark.approval_timeout_s(N)` shortens how long a request waits."""
    marker = request.node.get_closest_marker("approval_timeout_s")
    env = {"ANTHROPIC_BASE_URL": fake_model.url, "ANTHROPIC_API_KEY": "test-key"}
    if marker is not None:
        env["DISPATCH_APPROVAL_TIMEOUT_S"] = str(marker.args[0])
    yield from start_console(workspace, extra_env=env)


@pytest.fixture
def phones(console: Console) -> Iterator[Phones]:
    yield from open_chromium(console)


def expect_text(page: Any, selector: str, text: str, timeout_s: float = 20) -> None:
    page.locator(selector).filter(has_text=text).first.wait_for(timeout=timeout_s * 1000)


def new_thread(page: Any, name: str) -> int:
    page.fill("#new-thread-name", name)
    page.click("form[data-form=new-thread] button[type=submit]")
    page.wait_for_url(re.compile(r"/threads/\d+$"))
    return int(page.url.rsplit("/", 1)[1])


def send(page: Any, text: str, kind: str = "command", rw_folder: str | None = None) -> int:
    """Send a task from the thread page's composer; its id, once its card is shown."""
    before = page.locator("article.task").count()
    page.check(f"form[data-form=submit-task] input[name=kind][value={kind}]")
    if rw_folder is not None:
        page.click("form[data-form=submit-task] details.options summary")
        page.check(f"input[name=folder][value='{rw_folder}']")
        box = page.locator("input[name=folder]")
        index = [box.nth(i).get_attribute("value") for i in range(box.count())].index(rw_folder)
        page.select_option(f"select[name=mode-{index}]", "rw")
    page.fill("#task-text", text)
    page.click("form[data-form=submit-task] button[type=submit]")
    wait_until(lambda: page.locator("article.task").count() > before, 20, "the new task card")
    return int(page.locator("article.task").last.get_attribute("data-task-id"))


def card(page: Any, task_id: int) -> Any:
    return page.locator(f"#task-{task_id}")


def wait_status(page: Any, task_id: int, status: str, timeout_s: float = 30) -> None:
    page.wait_for_selector(f"#task-{task_id}[data-status={status}]", timeout=timeout_s * 1000)


def test_pair_then_run_a_command_watch_its_output_and_cancel_another(
    console: Console, phones: Phones
) -> None:
    # `dispatch serve` on 127.0.0.1 said plainly that a phone cannot open its address.
    assert (
        "names this machine's loopback address; a phone cannot open it" in console.log.read_text()
    )
    page = phones.new_page()
    page.goto(f"{console.url}/pair?code={console.pairing_code()}")
    assert page.evaluate("window.isSecureContext")  # HTTPS with the local CA's certificate
    console.shot(page, "pair")
    page.fill("input[name=device_name]", "phone")
    page.click("button[type=submit]")
    page.wait_for_url(f"{console.url}/")
    cookie = next(c for c in page.context.cookies() if c["name"] == "dispatch_session")
    assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
    assert "dispatch_session" not in page.evaluate("document.cookie")  # no script can read it
    console.shot(page, "threads-empty")

    thread_id = new_thread(page, "errands")
    task_id = send(page, "echo hello from the phone")
    wait_status(page, task_id, "succeeded")
    expect_text(page, f"#task-{task_id} pre.output", "hello from the phone")
    assert "done" in card(page, task_id).locator(".status").inner_text()

    long_id = send(page, "sleep 120")
    wait_status(page, long_id, "running")
    card(page, long_id).locator("button[data-action=cancel]").click()
    wait_status(page, long_id, "cancelled")
    assert console.task(long_id)["status"] == "cancelled"
    card(page, task_id).locator("button[data-action=retry]").click()  # the first, again
    page.wait_for_selector(f"#task-{long_id + 1}[data-status=succeeded]")
    assert console.task(long_id + 1)["retry_of"] == task_id
    console.shot(page, "thread")

    page.goto(f"{console.url}/")
    row = page.locator(f"li.thread[data-thread-id='{thread_id}']")
    assert "done" in row.inner_text() and "3 tasks" in row.inner_text()
    console.shot(page, "threads")
    for name in ("settings", "memory", "approvals"):
        page.goto(f"{console.url}/{name}")
        console.shot(page, name)
    page.set_viewport_size({"width": 1280, "height": 800})  # and at a desktop's width
    page.goto(f"{console.url}/threads/{thread_id}")
    assert page.locator("nav.tabs").bounding_box()["y"] < 200  # the tabs move to the top
    console.shot(page, "thread-desktop")


def bash(command: str) -> ToolCall:
    return ToolCall("bash", {"command": command}, toolset=None)


def test_approve_an_action_from_the_card_and_the_task_finishes(
    console: Console, phones: Phones, fake_model: FakeModel, workspace: Path
) -> None:
    fake_model.add(
        Reply(text="I will list the project first.", tool_calls=[bash("ls -la")]),
        Reply(text="The project has an app folder."),
    )
    page = phones.paired()
    new_thread(page, "project")
    folder = str(workspace / "projects")
    task_id = send(page, "What is in my project?", kind="agent", rw_folder=folder)
    approval = card(page, task_id).locator("section.approval[data-state=pending]")
    approval.wait_for(timeout=60_000)
    assert "ls -la" in approval.locator(".action").inner_text()
    assert "I will list the project first." in approval.inner_text()
    assert re.search(r"\d+:\d\d left", approval.locator("time.countdown").inner_text())
    console.shot(page, "approval-card")
    approval.locator("button[data-action=approve]").click()
    wait_status(page, task_id, "succeeded", 60)
    expect_text(page, f"#task-{task_id} .answer", "The project has an app folder.")
    decided = card(page, task_id).locator("section.approval")
    assert decided.get_attribute("data-state") == "approved"
    assert "Approved by phone" in decided.inner_text()
    assert decided.locator("button[data-action=approve]").count() == 0
    console.shot(page, "task-done")


def test_deny_with_a_reason_reaches_the_model(
    console: Console, phones: Phones, fake_model: FakeModel, workspace: Path
) -> None:
    fake_model.add(
        Reply(text="Cleaning up.", tool_calls=[bash("rm -rf ./*")]),
        Reply(text="Understood, I left your files alone."),
    )
    page = phones.paired()
    new_thread(page, "tidy")
    task_id = send(page, "Tidy up", kind="agent", rw_folder=str(workspace / "projects"))
    approval = card(page, task_id).locator("section.approval[data-state=pending]")
    approval.wait_for(timeout=60_000)
    approval.locator("details.with-reason summary").click()
    approval.locator("textarea").fill("keep my files")
    approval.locator("button[data-action=deny-reason]").click()
    page.wait_for_selector(f"#task-{task_id} section.approval[data-state=denied]")
    assert "keep my files" in card(page, task_id).locator("section.approval").inner_text()
    wait_until(
        lambda: console.task(task_id)["status"] not in ("running", "waiting_for_approval"),
        60,
        "the task to end",
    )
    told = fake_model.message_requests()[1].body["messages"][-1]["content"][0]
    assert told["is_error"] is True and "keep my files" in str(told["content"])
    console.shot(page, "denied")


def test_a_decision_on_one_device_updates_the_other_devices_card(
    console: Console, phones: Phones, fake_model: FakeModel, workspace: Path
) -> None:
    fake_model.add(
        Reply(text="Writing the report.", tool_calls=[bash("echo report > report.txt")]),
        Reply(text="Written."),
    )
    phone = phones.paired("phone")
    tablet = phones.paired("tablet")
    new_thread(phone, "report")
    task_id = send(phone, "Write the report", kind="agent", rw_folder=str(workspace / "projects"))
    tablet.goto(f"{console.url}/approvals")
    inbox_card = tablet.locator("#inbox section.approval[data-state=pending]")
    inbox_card.wait_for(timeout=60_000)  # arrived live: the page was open before the request
    assert tablet.locator("#pending-count").inner_text() == "1"
    console.shot(tablet, "approvals-inbox")
    card(phone, task_id).locator("section.approval button[data-action=approve]").click()
    approval_id = inbox_card.get_attribute("data-approval-id")
    tablet.wait_for_selector(f"#approval-{approval_id}[data-state=approved]")
    updated = tablet.locator(f"#approval-{approval_id}")
    assert "Approved by phone" in updated.inner_text()
    assert updated.locator("button").count() == 0  # it can no longer be decided there
    wait_status(phone, task_id, "succeeded", 60)


def test_revoking_the_device_signs_it_out_at_once(console: Console, phones: Phones) -> None:
    page = phones.paired("phone")
    page.wait_for_selector("#live.on")  # the event stream is open
    revoked = console.owner.delete(f"/api/v1/devices/{console.device_id('phone')}")
    assert revoked.status_code == 200
    page.wait_for_url(f"{console.url}/pair#signed-out", timeout=10_000)
    assert page.locator("#signed-out").is_visible()
    console.shot(page, "signed-out")
    page.goto(f"{console.url}/settings")  # the dead cookie is refused and dropped
    assert page.url == f"{console.url}/pair#signed-out"
    assert not [c for c in page.context.cookies() if c["name"] == "dispatch_session"]


def test_cross_site_and_tokenless_posts_are_refused(console: Console, phones: Phones) -> None:
    page = phones.paired("phone")
    # The console's own origin, but a request without the CSRF token (what an injected
    # script or a plain form would send): refused.
    status = page.evaluate(
        """async () => (await fetch('/api/v1/threads', {method: 'POST',
            headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({name: 'forged'})})).status"""
    )
    assert status == 403
    # Another site (localhost is another site than 127.0.0.1) posting a form here.
    other = page.context.new_page()
    other.goto(console.url.replace("127.0.0.1", "localhost") + "/pair")
    other.evaluate(
        """(target) => { const f = document.createElement('form'); f.method = 'POST';
            f.action = target; f.enctype = 'text/plain';
            const i = document.createElement('input'); i.name = '{"name":"forged2","x":"';
            i.value = '"}'; f.append(i); document.body.append(f); f.submit(); }""",
        f"{console.url}/api/v1/threads",
    )
    other.wait_for_load_state()
    assert "forged" not in str(console.owner.get("/api/v1/threads").json())


@pytest.mark.approval_timeout_s(8)
def test_an_unanswered_request_expires_live_and_can_no_longer_be_decided(
    console: Console, phones: Phones, fake_model: FakeModel, workspace: Path
) -> None:
    fake_model.add(
        Reply(text="Deleting the cache.", tool_calls=[bash("rm -rf cache")]),
        Reply(text="Nobody answered, so I stopped."),
    )
    page = phones.paired()
    new_thread(page, "cache")
    task_id = send(page, "Clear the cache", kind="agent", rw_folder=str(workspace / "projects"))
    pending = card(page, task_id).locator("section.approval[data-state=pending]")
    pending.wait_for(timeout=60_000)
    approval_id = pending.get_attribute("data-approval-id")
    # The controller expires it (counts as denied) and the card says so, without a reload.
    page.wait_for_selector(f"#approval-{approval_id}[data-state=expired]", timeout=30_000)
    expired = page.locator(f"#approval-{approval_id}")
    assert "nobody decided in time" in expired.inner_text()
    assert expired.locator("button[data-action=approve]").count() == 0
    late = console.owner.post(
        f"/api/v1/approvals/{approval_id}/decision", json={"decision": "approve"}
    )
    assert late.status_code == 409
    wait_until(
        lambda: console.task(task_id)["status"] not in ("running", "waiting_for_approval"),
        60,
        "the task to end",
    )
    console.shot(page, "expired")


def test_memory_is_added_edited_and_deleted_from_its_page(console: Console, phones: Phones) -> None:
    page = phones.paired()
    page.goto(f"{console.url}/memory")
    page.fill("form[data-form=memory-new] input[name=path]", "people/me.md")
    page.fill("form[data-form=memory-new] textarea", "likes tea")
    page.click("form[data-form=memory-new] button[type=submit]")
    saved = page.locator("form[data-form=memory-save][data-path='people/me.md']")
    saved.wait_for()
    assert console.owner.get("/api/v1/memory/people/me.md").json()["content"] == "likes tea"
    saved.locator("textarea").fill("likes green tea")
    saved.locator("button[type=submit]").click()
    expect_text(page, "form[data-form=memory-save] button[type=submit]", "Saved")
    assert console.owner.get("/api/v1/memory/people/me.md").json()["content"] == "likes green tea"
    console.shot(page, "memory-file")
    page.on("dialog", lambda dialog: dialog.accept())
    saved.locator("button[data-action=memory-delete]").click()
    page.locator("p.empty").filter(has_text="remembers nothing").wait_for()
    assert console.owner.get("/api/v1/memory/people/me.md").status_code == 404
