"""The browser toolset under the SDK's real tool runner, against a local stand-in Messages API.

The project's scripted fake (`computer_use/testing/fake_model.py`) is being written in another
branch; until it is merged this test carries the smallest stand-in that speaks the non-streaming
wire format: it replays three replies and records what the client sent.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anthropic
import pytest
from anthropic.tools import BetaConfirmContext

from computer_use.browser.domains import AllowedDomains
from computer_use.browser.toolset import CHROMIUM, ChromiumBrowser, LocalChromium
from tests.computer_use.test_browser_site import RESOLVER_RULES, Site, running_site

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium"),
]


@pytest.fixture
def site() -> Iterator[Site]:
    yield from running_site()


class StandInModel:
    """Replays `replies` (lists of content blocks) to `POST /v1/messages`, recording bodies."""

    def __init__(self, replies: list[list[dict[str, Any]]]) -> None:
        self.replies = list(replies)
        self.bodies: list[dict[str, Any]] = []
        model = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                model.bodies.append(body)
                if not model.replies:
                    self._send(
                        500,
                        {
                            "type": "error",
                            "error": {"type": "api_error", "message": "script ran out"},
                        },
                    )
                    return
                content = model.replies.pop(0)
                uses_tools = any(block["type"] == "tool_use" for block in content)
                self._send(
                    200,
                    {
                        "id": f"msg_{len(model.bodies)}",
                        "type": "message",
                        "role": "assistant",
                        "model": body["model"],
                        "content": content,
                        "stop_reason": "tool_use" if uses_tools else "end_turn",
                        "stop_sequence": None,
                        "usage": {"input_tokens": 10, "output_tokens": 5},
                    },
                )

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("x-should-retry", "false")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tool_results(self, request_index: int) -> list[dict[str, Any]]:
        last = self.bodies[request_index]["messages"][-1]
        return [block for block in last["content"] if block["type"] == "tool_result"]


@pytest.fixture
def stand_in() -> Iterator[list[StandInModel]]:
    made: list[StandInModel] = []
    yield made
    for model in made:
        model.server.shutdown()
        model.server.server_close()


def tool_use(index: int, name: str, **input: Any) -> dict[str, Any]:
    return {
        "type": "tool_use",
        "id": f"toolu_{index}",
        "name": name,
        "toolset_name": "browser",
        "input": input,
    }


def test_the_tool_runner_drives_the_browser_and_the_model_hears_the_refusal(
    site: Site,
    stand_in: list[StandInModel],
) -> None:
    model = StandInModel(
        [
            [tool_use(1, "navigate", url=site.url("allowed.test")), tool_use(2, "get_page_text")],
            [tool_use(3, "navigate", url=site.url("other.test", "/secret"))],
            [{"type": "text", "text": "Done: the page says Welcome."}],
        ]
    )
    stand_in.append(model)
    threading.Thread(target=model.server.serve_forever, daemon=True).start()
    asked: list[str] = []

    def confirm(context: BetaConfirmContext) -> bool:
        asked.append(context.member)
        return True

    client = anthropic.Anthropic(api_key="test-key", base_url=model.url, max_retries=0)
    with ChromiumBrowser(
        launcher=LocalChromium(extra_args=[RESOLVER_RULES]),
        allowed_domains=AllowedDomains.parse(["allowed.test"]),
        confirm=confirm,
    ) as browser:
        runner = client.beta.messages.tool_runner(
            model="claude-test",
            max_tokens=1024,
            messages=[{"role": "user", "content": "Read the home page."}],
            tools=[browser],
            max_iterations=5,
            thread=False,
        )
        replies = list(runner)

    assert replies[-1].content[0].text == "Done: the page says Welcome."  # type: ignore[union-attr]
    assert model.bodies[0]["tools"][0]["type"] == "browser_toolset_20260801"
    first = model.tool_results(1)
    assert [r["tool_use_id"] for r in first] == ["toolu_1", "toolu_2"]
    assert not first[0].get("is_error") and not first[1].get("is_error")
    assert "Welcome" in json.dumps(first[1]["content"])
    refused = model.tool_results(2)[0]
    assert refused["is_error"] is True
    assert (
        "is not on this task's allowed domains (allowed: allowed.test); ask the person to add it"
        in (json.dumps(refused["content"]))
    )
    assert asked == ["navigate", "get_page_text"]  # the refused call never reached the person
    assert "other.test" not in site.hosts_seen()
