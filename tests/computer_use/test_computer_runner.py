"""The computer toolset driven by the SDK's real tool runner against a local Messages API stub.

The stub is a minimal stand-in (a real HTTP server on loopback speaking the non-streaming wire
format) until the project's scripted fake Messages API is merged; like a model, it finds the
button in the screenshot it was sent and clicks there, so the test proves the image the model
receives and the coordinates it answers in agree with the screen.
"""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anthropic
import pytest
from PIL import Image

from tests.computer_use import probe_app
from tests.computer_use.test_computer_x11 import open_desktop, probe
from tests.computer_use.xdisplay import wait_for

pytestmark = pytest.mark.display


def find_colour(image: Image.Image, hex_colour: str, tolerance: int = 24) -> list[int]:
    """The centre of the pixels of `hex_colour` in `image`, as a model would aim."""
    want = [int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)]
    xs: list[int] = []
    ys: list[int] = []
    width = image.width
    raw = image.convert("RGB").tobytes()
    for index in range(0, len(raw), 3):
        if all(abs(raw[index + c] - want[c]) <= tolerance for c in range(3)):
            xs.append(index // 3 % width)
            ys.append(index // 3 // width)
    assert xs, f"no {hex_colour} pixels in the screenshot"
    return [(min(xs) + max(xs)) // 2, (min(ys) + max(ys)) // 2]


class Stub:
    """Replies: take a screenshot; click the blue button found in it; say done."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    def reply(self, body: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(body)
        turn = len(self.requests)
        if turn == 1:
            content: list[dict[str, Any]] = [
                {"type": "text", "text": "Let me look at the screen."},
                {
                    "type": "tool_use",
                    "id": "toolu_shot",
                    "name": "screenshot",
                    "toolset_name": "computer",
                    "input": {},
                },
            ]
        elif turn == 2:
            image = last_image(body)
            content = [
                {"type": "text", "text": "I will press the blue button."},
                {
                    "type": "tool_use",
                    "id": "toolu_click",
                    "name": "left_click",
                    "toolset_name": "computer",
                    "input": {"coordinate": find_colour(image, probe_app.BUTTON_COLOUR)},
                },
            ]
        else:
            content = [{"type": "text", "text": "Done: the button is pressed."}]
        return {
            "id": f"msg_{turn}",
            "type": "message",
            "role": "assistant",
            "model": "stub-model",
            "content": content,
            "stop_reason": "tool_use" if turn < 3 else "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }


def last_image(body: dict[str, Any]) -> Image.Image:
    for block in body["messages"][-1]["content"]:
        for part in block.get("content", []) if block.get("type") == "tool_result" else []:
            if part.get("type") == "image":
                return Image.open(io.BytesIO(base64.b64decode(part["source"]["data"])))
    raise AssertionError(f"no screenshot in the last message: {json.dumps(body)[:500]}")


@pytest.fixture
def stub() -> Iterator[tuple[Stub, str]]:
    model = Stub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length))
            data = json.dumps(model.reply(body)).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield model, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_the_tool_runner_clicks_the_button_the_model_saw(
    tmp_path: Path, stub: tuple[Stub, str]
) -> None:
    model, base_url = stub
    client = anthropic.Anthropic(api_key="test-key", base_url=base_url, max_retries=0)
    with open_desktop(tmp_path, (1920, 1080), app=True) as desktop:
        runner = client.beta.messages.tool_runner(
            model="stub-model",
            max_tokens=1024,
            messages=[{"role": "user", "content": "Press the blue button."}],
            tools=[desktop.toolset],
            thread=False,
            max_iterations=5,
        )
        final = [message for message in runner][-1]

        wait_for(lambda: probe(desktop).of("button"), "the button's click handler")
        assert final.content[0].type == "text" and final.content[0].text.startswith("Done")
        # What the model was told: the toolset entry, and a screenshot within its limits.
        assert model.requests[0]["tools"][0]["type"] == "computer_toolset_20260801"
        assert last_image(model.requests[1]).size == (1429, 804)
        click_result = model.requests[2]["messages"][-1]["content"][0]
        assert click_result["type"] == "tool_result" and not click_result.get("is_error")
        assert [member for member, _, _ in desktop.confirm.asked] == ["screenshot", "left_click"]
