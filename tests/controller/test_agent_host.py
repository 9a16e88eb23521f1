"""An agent task on the host display (`display: "host"`), end to end through the controller.

A real Xvfb stands in for the owner's screen with the probe window on it (tests/computer_use);
the real client and tool runner talk to the scripted fake API. The click runs only after a
person approved it; a request nobody answers expires, counts as a denial, and leaves the window
untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Api
from test_agent_tasks import submit_agent

from computer_use.testing.fake_model import (
    FakeModel,
    ModelRequest,
    Reply,
    ToolCall,
    centre_of_largest_region,
    newest_screenshot,
)
from tests.computer_use.xdisplay import ProbeApp, Xvfb, wait_for, xvfb

pytestmark = pytest.mark.display
BLUE = (0x30, 0x60, 0xC0)  # probe_app.BUTTON_COLOUR
GREEN = (0x20, 0xC0, 0x40)  # probe_app.CLICKED_COLOUR


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[Xvfb, ProbeApp]]:
    with xvfb(1024, 768) as server:
        app = ProbeApp(server, tmp_path / "events.jsonl")
        try:
            yield server, app
        finally:
            app.close()


def decide_next(api: Api, task_id: int, member: str, decision: str = "approve") -> dict:
    """Wait for the task's next pending request, check it is for `member`, and decide it."""
    api.wait_task(task_id, ("waiting_for_approval",), timeout_s=60)
    request: dict = api.get("/api/v1/approvals?state=pending").json()[0]
    assert (request["tool"], request["member"]) == ("computer", member)
    api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": decision})
    return request


def click_button(request: ModelRequest) -> Reply:
    x, y = centre_of_largest_region(newest_screenshot(request.messages), BLUE, tolerance=40)
    return Reply(
        text="Pressing the button.",
        tool_calls=[ToolCall("left_click", {"coordinate": [x, y]}, toolset="computer")],
    )


def saw_green(request: ModelRequest) -> Reply:
    centre_of_largest_region(newest_screenshot(request.messages), GREEN, tolerance=40)
    return Reply(text="Pressed.")


def test_a_click_on_the_host_display_runs_after_approval(
    make_agent_api: Callable[..., Api], fake_model: FakeModel, host: tuple[Xvfb, ProbeApp]
) -> None:
    server, app = host
    api = make_agent_api(host_display=server.name)
    fake_model.add(
        Reply(tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        click_button,
        Reply(tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        saw_green,
    )
    task = submit_agent(api, "Press the button", tools=["computer"], display="host")
    # On the owner's own screen even looking asks (controller.agent.tasks.configured_policy).
    decide_next(api, task["id"], "screenshot")
    api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=60)
    request = api.get("/api/v1/approvals?state=pending").json()[0]
    assert (request["tool"], request["member"]) == ("computer", "left_click")
    assert request["model_reason"] == "Pressing the button."
    # The person judges the host's own screen: the probe window's button is on it.
    assert api.get(request["screenshot_url"]).headers["content-type"] == "image/png"
    assert not app.of("button"), "the click ran before the decision"
    api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
    decide_next(api, task["id"], "screenshot")
    done = api.wait_task(task["id"], timeout_s=60)
    assert done["status"] == "succeeded", done
    assert done["final_answer"] == "Pressed."
    wait_for(lambda: app.of("button"), "the probe window to get the click")


def test_an_unanswered_request_expires_and_the_window_is_untouched(
    make_agent_api: Callable[..., Api], fake_model: FakeModel, host: tuple[Xvfb, ProbeApp]
) -> None:
    server, app = host
    api = make_agent_api(host_display=server.name, approval_timeout_s=2)
    fake_model.add(
        Reply(tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        click_button,
        Reply(text="Nobody answered; I did not press it."),
    )
    task = submit_agent(api, "Press the button", tools=["computer"], display="host")
    decide_next(api, task["id"], "screenshot")
    done = api.wait_task(task["id"], timeout_s=60)
    requests = api.get("/api/v1/approvals").json()
    assert sorted((r["member"], r["state"]) for r in requests) == [
        ("left_click", "expired"),
        ("screenshot", "approved"),
    ]
    tools = [s for s in done["steps"] if s["kind"] == "tools"]
    refused = tools[1]["results"][0]
    assert refused["is_error"] and refused["text"].startswith("No decision within 2 s")
    # The model was told, and the expiry counted as a denial: the button never got the click.
    assert "treated as denied" in str(fake_model.requests[-1].messages[-1])
    assert not app.of("button")
    assert done["final_answer"] == "Nobody answered; I did not press it."


def test_the_audit_log_holds_every_step_with_its_screenshots_and_verifies(
    make_agent_api: Callable[..., Api], fake_model: FakeModel, host: tuple[Xvfb, ProbeApp]
) -> None:
    server, _app = host
    api = make_agent_api(host_display=server.name)
    fake_model.add(
        Reply(tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        click_button,
        Reply(text="Pressed."),
    )
    task = submit_agent(api, "Press the button", tools=["computer"], display="host")
    decide_next(api, task["id"], "screenshot")
    decide_next(api, task["id"], "left_click")
    done = api.wait_task(task["id"], timeout_s=60)
    assert done["status"] == "succeeded", done
    steps = api.get(f"/api/v1/tasks/{task['id']}/audit").json()
    kinds = [s["kind"] for s in steps]
    assert kinds == [
        "task_submitted",
        "task_started",
        "model_turn",
        "action_proposed",
        "approval_requested",
        "approval_decided",
        "action_performed",
        "model_turn",
        "action_proposed",
        "approval_requested",
        "approval_decided",
        "action_performed",
        "model_turn",
        "task_finished",
    ]
    click = [s for s in steps if s["kind"] == "action_proposed"][1]
    assert click["data"]["tool"] == "computer" and click["data"]["member"] == "left_click"
    assert click["data"]["reason"] == "Pressing the button."
    decided = [s for s in steps if s["kind"] == "approval_decided"][1]
    assert decided["data"]["decision"] == "approved" and decided["who"]
    requested = [s for s in steps if s["kind"] == "approval_requested"][1]
    # The screenshot the person judged and its annotated copy, stored by hash, served back.
    judged = api.get(f"/api/v1/audit/screenshots/{requested['shots']['judged']}")
    assert judged.headers["content-type"] == "image/png"
    assert (
        judged.content
        == api.get(f"/api/v1/approvals/{decided['data']['approval_id']}/screenshot").content
    )
    assert "annotated" in requested["shots"]
    shot = next(s for s in steps if s["kind"] == "action_performed")
    assert shot["data"]["outcome"] == "ok" and "after" in shot["shots"]
    report = api.get("/api/v1/audit/verify").json()
    assert report["ok"], report
    head = api.get("/api/v1/audit/head").json()
    assert head["seq"] == steps[-1]["seq"] and head["hash"] == steps[-1]["hash"]
    kept = f"{head['seq']}:{head['hash']}"
    assert api.get("/api/v1/audit/verify", params={"head": kept}).json()["ok"]
