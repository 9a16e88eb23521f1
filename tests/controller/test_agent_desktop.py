"""An agent task on the desktop sandbox, end to end: the real client and tool runner against the
scripted fake API, a real desktop container, and a click that runs only after a person approved
it on the screenshot they were shown."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from conftest import Api
from test_agent_tasks import submit_agent

from computer_use.testing.fake_model import (
    FakeModel,
    FakeModelError,
    ModelRequest,
    Reply,
    ToolCall,
    centre_of_largest_region,
    newest_screenshot,
)

pytestmark = pytest.mark.docker
RED = (255, 0, 0)
GREEN = (0, 192, 0)
# A window with one red "button" (python-xlib, in the desktop image): a click on it turns it
# green and writes "Send" to /tmp/clicked. The model's bash step writes it; the task's programs
# cannot reach the screen, so the model starts it from the screen's terminal (typing, which the
# person approves), as a program on the screen, the desktop user's.
APP = """
from Xlib import X, display
d = display.Display()
s = d.screen()
w = s.root.create_window(300, 200, 240, 120, 0, s.root_depth, background_pixel=0xFF0000,
                         event_mask=X.ExposureMask | X.ButtonPressMask)
w.map()
d.sync()
while True:
    e = d.next_event()
    if e.type == X.ButtonPress:
        open("/tmp/clicked", "w").write("Send")
        w.change_attributes(background_pixel=0x00C000)
        w.clear_area()
        d.sync()
"""
WRITE_APP = f"cat > /tmp/app.py <<'EOF'\n{APP}\nEOF"
START_APP = ToolCall("type", {"text": "python3 /tmp/app.py &\n"}, toolset="computer")


def approve_until(api: Api, member: str, timeout_s: float = 180) -> dict[str, Any]:
    """Approve the pending requests (the typing that starts the window, asked again if the screen
    changed before it ran) until one for `member` waits; that one, undecided."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for request in api.get("/api/v1/approvals?state=pending").json():
            if request["member"] == member:
                return dict(request)
            api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
        time.sleep(0.2)
    raise AssertionError(f"no {member} request within {timeout_s} s")


class ClickRedOnceShown:
    """A turn: click the red window once a screenshot shows it, else take another screenshot.

    A window takes a moment to show on a busy machine; the model looks until it does, as a model
    would (at most `tries` screenshots).
    """

    def __init__(self, model: FakeModel, tries: int = 50) -> None:
        self.model = model
        self.tries = tries

    def __call__(self, request: ModelRequest) -> Reply:
        try:
            return click_red(request)
        except (FakeModelError, LookupError, ValueError):
            self.tries -= 1
            if self.tries <= 0:
                raise
        self.model.add_next(self)
        return Reply(tool_calls=[ToolCall("screenshot", {}, toolset="computer")])


def click_red(request: ModelRequest) -> Reply:
    x, y = centre_of_largest_region(newest_screenshot(request.messages), RED, tolerance=60)
    return Reply(
        text="Clicking Send.",
        tool_calls=[ToolCall("left_click", {"coordinate": [x, y]}, toolset="computer")],
    )


def saw_green(request: ModelRequest) -> Reply:
    """The last turn: the window shows the click (the model's own screenshot has it green)."""
    centre_of_largest_region(newest_screenshot(request.messages), GREEN, tolerance=60)
    return Reply(text="Sent.")


def bash(command: str) -> ToolCall:
    return ToolCall("bash", {"command": command}, toolset=None)


def test_a_click_on_the_desktop_runs_only_after_approval_and_the_window_shows_it(
    make_agent_api: Callable[..., Api], fake_model: FakeModel
) -> None:
    api = make_agent_api(real_sandbox=True, sandbox_backend="docker")
    fake_model.add(
        Reply(tool_calls=[bash(WRITE_APP)]),
        Reply(text="Opening the dialog.", tool_calls=[START_APP]),
        Reply(tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        ClickRedOnceShown(fake_model),
        Reply(tool_calls=[bash("sleep 0.5; cat /tmp/clicked")]),
        Reply(tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        saw_green,
    )
    task = submit_agent(api, "Send the report", tools=["bash", "computer"], display="sandbox")
    typing = api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=120)
    assert typing["status"] == "waiting_for_approval"
    request = approve_until(api, "left_click")
    assert request["tool"] == "computer"
    assert request["model_reason"] == "Clicking Send."
    assert request["description"].startswith("Click")
    screenshot = api.get(request["screenshot_url"])
    assert screenshot.headers["content-type"] == "image/png"
    assert api.get(request["annotated_url"]).content != screenshot.content
    # Nothing was clicked before the decision.
    assert api.controller.tasks.steps(task["id"])[-1]["kind"] == "model"
    api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
    done = api.wait_task(task["id"], timeout_s=120)
    assert done["status"] == "succeeded", done
    tools = [s for s in done["steps"] if s["kind"] == "tools"]
    assert tools[-3]["results"][0]["is_error"] is False  # the click, after approval
    assert tools[-2]["results"][0]["text"] == "Send"  # the window got it
    # The screenshot the model saw is stored by reference, not in the step.
    shot_step = [s for s in done["steps"] if s["kind"] == "tools"][2]
    assert len(shot_step["results"][0]["images"]) == 1


def test_a_denied_click_leaves_the_window_untouched_and_the_model_hears_why(
    make_agent_api: Callable[..., Api], fake_model: FakeModel
) -> None:
    api = make_agent_api(real_sandbox=True, sandbox_backend="docker")
    fake_model.add(
        Reply(tool_calls=[bash(WRITE_APP)]),
        Reply(tool_calls=[START_APP]),
        Reply(tool_calls=[ToolCall("screenshot", {}, toolset="computer")]),
        ClickRedOnceShown(fake_model),
        Reply(tool_calls=[bash("sleep 0.5; cat /tmp/clicked 2>/dev/null || echo not clicked")]),
        Reply(text="I did not send it."),
    )
    task = submit_agent(api, "Send the report", tools=["bash", "computer"])
    request = approve_until(api, "left_click")
    api.post(
        f"/api/v1/approvals/{request['id']}/decision",
        json={"decision": "deny", "reason": "not yet"},
    )
    done = api.wait_task(task["id"], timeout_s=120)
    tools = [s for s in done["steps"] if s["kind"] == "tools"]
    denied = tools[-2]["results"][0]
    assert denied["is_error"] and "not yet" in denied["text"]
    # The click never happened.
    assert tools[-1]["results"][0]["text"] == "not clicked"


@pytest.mark.browser
def test_a_browser_task_reads_an_allowed_page_after_approval_and_is_refused_elsewhere(
    make_agent_api: Callable[..., Api], fake_model: FakeModel
) -> None:
    api = make_agent_api(real_sandbox=True, sandbox_backend="docker")
    serve = (
        "mkdir -p /tmp/site && echo '<h1>Quarterly report ready</h1>' > /tmp/site/index.html && "
        "(cd /tmp/site && python3 -m http.server 8000 >/dev/null 2>&1 &) && "
        "for i in $(seq 50); do curl -s localhost:8000 >/dev/null && break; sleep 0.1; done"
    )
    fake_model.add(
        Reply(tool_calls=[bash(serve)]),
        Reply(
            text="Opening the report.",
            tool_calls=[ToolCall("navigate", {"url": "http://localhost:8000/"}, toolset="browser")],
        ),
        Reply(tool_calls=[ToolCall("get_page_text", {}, toolset="browser")]),
        Reply(tool_calls=[ToolCall("navigate", {"url": "http://other.test/"}, toolset="browser")]),
        Reply(text="The report is ready."),
    )
    task = submit_agent(
        api,
        "Read the report",
        tools=["bash", "browser"],
        allowed_domains=["localhost"],
        timeout_s=300,
    )
    api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=180)
    request = api.get("/api/v1/approvals?state=pending").json()[0]
    assert request["tool"] == "browser" and request["member"] == "navigate"
    assert "http://localhost:8000/" in request["description"]
    api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
    done = api.wait_task(task["id"], timeout_s=180)
    assert done["status"] == "succeeded", done
    tools = [s for s in done["steps"] if s["kind"] == "tools"]
    assert "Quarterly report ready" in tools[2]["results"][0]["text"]
    refused = tools[3]["results"][0]
    assert refused["is_error"] and "other.test" in refused["text"]
    assert "allowed domains" in refused["text"]
    # The refusal came from the fence, not from a person: only one request was ever made.
    assert len(api.get("/api/v1/approvals").json()) == 1
