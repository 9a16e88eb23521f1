"""A browser task's approval, end to end: the real client and tool runner against the scripted fake
API, Chromium in a real desktop container, and a click request that shows the person the page,
where the click lands and on which URL, through the HTTP API a phone reads."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest
from conftest import Api, wait_until
from PIL import Image, ImageChops
from test_agent_tasks import submit_agent

from computer_use.testing.fake_model import FakeModel, Reply, ToolCall

pytestmark = [pytest.mark.docker, pytest.mark.browser]

PAGE_URL = "http://localhost:8000/"
PAGE = (
    "<title>Invoice</title><body style='margin:0;background:#fff'>"
    "<button style='position:absolute;left:100px;top:200px;width:160px;height:40px;"
    "background:rgb(220,0,0);border:0' onclick=\"document.body.append('Paid')\">Pay</button>"
)
SERVE = (
    f"mkdir -p /tmp/site && cat > /tmp/site/index.html <<'EOF'\n{PAGE}\nEOF\n"
    "(cd /tmp/site && python3 -m http.server 8000 >/dev/null 2>&1 &) && "
    "for i in $(seq 50); do curl -s localhost:8000 >/dev/null && break; sleep 0.1; done"
)


def png(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def test_a_browser_click_request_shows_the_page_the_marker_and_the_tab_url(
    make_agent_api: Callable[..., Api], fake_model: FakeModel
) -> None:
    api = make_agent_api(real_sandbox=True, sandbox_backend="docker")
    fake_model.add(
        Reply(tool_calls=[ToolCall("bash", {"command": SERVE}, toolset=None)]),
        Reply(tool_calls=[ToolCall("navigate", {"url": PAGE_URL}, toolset="browser")]),
        Reply(
            text="Paying the invoice.",
            tool_calls=[
                ToolCall(
                    "left_click", {"target": {"type": "coordinate", "x": 180, "y": 220}}, "browser"
                )
            ],
        ),
        Reply(tool_calls=[ToolCall("get_page_text", {}, toolset="browser")]),
        Reply(text="Paid."),
    )
    task = submit_agent(
        api, "Pay the invoice", tools=["bash", "browser"], allowed_domains=["localhost"]
    )
    api.wait_task(task["id"], ("waiting_for_approval",), timeout_s=180)
    opening = api.get("/api/v1/approvals?state=pending").json()[0]
    assert opening["member"] == "navigate"
    api.post(f"/api/v1/approvals/{opening['id']}/decision", json={"decision": "approve"})

    def click_pending() -> dict[str, object] | None:
        pending = api.get("/api/v1/approvals?state=pending").json()
        return pending[0] if pending and pending[0]["member"] == "left_click" else None

    listed = wait_until(click_pending, 120, "the click's approval request")
    request = api.get(f"/api/v1/approvals/{listed['id']}").json()
    # Which page the click happens on, in the request and in its words.
    assert request["screen_input"]["tab_url"] == PAGE_URL
    assert request["description"] == f"Click at (180, 220) on {PAGE_URL}"
    # The screenshot is the page (the red button under the click), the annotated copy marks it.
    assert request["screenshot_url"] and request["annotated_url"]
    shot = png(api.get(request["screenshot_url"]).content)
    assert shot.size == (1280, 800)
    red = shot.getpixel((120, 208))
    assert isinstance(red, tuple) and red[0] > 180 and red[1] < 60, red
    marked = png(api.get(request["annotated_url"]).content)
    box = ImageChops.difference(shot, marked).getbbox()
    assert box is not None and box[0] <= 180 < box[2] and box[1] <= 220 < box[3]

    api.post(f"/api/v1/approvals/{request['id']}/decision", json={"decision": "approve"})
    done = api.wait_task(task["id"], timeout_s=180)
    assert done["status"] == "succeeded", done
    tools = [s for s in done["steps"] if s["kind"] == "tools"]
    assert "Paid" in tools[3]["results"][0]["text"]
