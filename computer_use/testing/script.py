"""The fake Messages API's script: the turns a test gives it, and what a scripted turn sees.

See `computer_use.testing.fake_model` for the server that replays them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from PIL import Image, ImageChops


class FakeModelError(AssertionError):
    """The script and the requests disagreed: a test bug or an agent bug, never a flaky network."""


@dataclass(frozen=True)
class ToolCall:
    """One `tool_use` block: `name` is the member, `toolset` the family (None for a plain tool)."""

    name: str
    input: Mapping[str, Any] = field(default_factory=dict)
    toolset: str | None = "computer"
    id: str | None = None


@dataclass(frozen=True)
class Reply:
    """One model reply. `stop_reason` defaults to `tool_use` when there are tool calls."""

    text: str | None = None
    tool_calls: Sequence[ToolCall] = ()
    stop_reason: str | None = None
    input_tokens: int = 100
    output_tokens: int = 20
    delay_s: float = 0.0

    def resolved_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if self.tool_calls else "end_turn"


FaultKind = Literal["rate_limited", "overloaded", "server_error", "unauthorized", "reset"]

# status, error type, message: the API's own wording where it has one.
FAULTS: dict[str, tuple[int, str, str]] = {
    "rate_limited": (
        429,
        "rate_limit_error",
        "Number of request tokens has exceeded your rate limit.",
    ),
    "overloaded": (529, "overloaded_error", "Overloaded"),
    "server_error": (500, "api_error", "Internal server error"),
    "unauthorized": (401, "authentication_error", "invalid x-api-key"),
}


@dataclass(frozen=True)
class Fault:
    """An injected failure that takes the place of one reply."""

    kind: FaultKind
    retry_after_s: float | None = None
    delay_s: float = 0.0

    @classmethod
    def rate_limited(cls, retry_after_s: float = 0.0) -> Fault:
        return cls("rate_limited", retry_after_s=retry_after_s)

    @classmethod
    def overloaded(cls) -> Fault:
        return cls("overloaded")

    @classmethod
    def server_error(cls) -> Fault:
        return cls("server_error")

    @classmethod
    def unauthorized(cls) -> Fault:
        return cls("unauthorized")

    @classmethod
    def connection_reset(cls) -> Fault:
        """A TCP reset: after `message_start` and part of a text block when streaming."""
        return cls("reset")


@dataclass(frozen=True)
class ModelRequest:
    """What a scripted callable sees: the conversation as the model would see it."""

    index: int
    body: Mapping[str, Any]
    messages: Sequence[Mapping[str, Any]]
    system: Any
    tools: Sequence[Mapping[str, Any]]

    def tool_results(self) -> list[Mapping[str, Any]]:
        """The `tool_result` blocks of the newest user message."""
        for message in reversed(self.messages):
            if message.get("role") == "user":
                return [b for b in blocks(message) if b.get("type") == "tool_result"]
        return []


Turn = Reply | Fault | Callable[[ModelRequest], Reply]


def blocks(message: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content or [] if isinstance(b, Mapping)]


# -- computing a click from the screenshot the model received -------------------------------------


def newest_screenshot(messages: Sequence[Mapping[str, Any]]) -> Image.Image:
    """The newest base64 image in the conversation (inside tool results or not), decoded."""
    for message in reversed(messages):
        for block in reversed(blocks(message)):
            for image in reversed(_images(block)):
                return Image.open(io.BytesIO(base64.b64decode(image["source"]["data"]))).convert(
                    "RGB"
                )
    raise FakeModelError("the conversation holds no image: did the agent send a screenshot?")


def _images(block: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    if block.get("type") == "image" and block.get("source", {}).get("type") == "base64":
        return [block]
    if block.get("type") == "tool_result" and isinstance(block.get("content"), list):
        return [
            b for inner in block["content"] if isinstance(inner, Mapping) for b in _images(inner)
        ]
    return []


def centre_of_largest_region(
    image: Image.Image, rgb: tuple[int, int, int], *, tolerance: int = 0
) -> tuple[int, int]:
    """The centre of the bounding box of the largest 4-connected region of colour `rgb`.

    Pillow has no connected-component labelling, so this walks the mask once (breadth first);
    screenshots in tests are small and the walk touches only matching pixels.
    """
    rgb_image = image.convert("RGB")
    width, height = rgb_image.size
    mask = Image.new("L", rgb_image.size, 255)
    for band, wanted in zip(rgb_image.split(), rgb, strict=True):
        lut = [255 if abs(value - wanted) <= tolerance else 0 for value in range(256)]
        mask = ImageChops.darker(mask, band.point(lut))  # a pixel-wise AND of 0/255 masks
    bbox = mask.getbbox()
    if bbox is None:
        raise FakeModelError(f"no pixel of colour {rgb} (tolerance {tolerance}) in the screenshot")
    data = bytearray(mask.tobytes())
    best: tuple[int, int, int, int, int] | None = None  # size, x0, y0, x1, y1
    x_min, y_min, x_max, y_max = bbox
    for y in range(y_min, y_max):
        for x in range(x_min, x_max):
            if not data[y * width + x]:
                continue
            data[y * width + x] = 0
            queue = [(x, y)]
            size, x0, y0, x1, y1 = 0, x, y, x, y
            while queue:
                px, py = queue.pop()
                size += 1
                x0, y0, x1, y1 = min(x0, px), min(y0, py), max(x1, px), max(y1, py)
                for nx, ny in ((px + 1, py), (px - 1, py), (px, py + 1), (px, py - 1)):
                    if 0 <= nx < width and 0 <= ny < height and data[ny * width + nx]:
                        data[ny * width + nx] = 0
                        queue.append((nx, ny))
            if best is None or size > best[0]:
                best = (size, x0, y0, x1, y1)
    assert best is not None
    _, x0, y0, x1, y1 = best
    return (x0 + x1) // 2, (y0 + y1) // 2


def click_largest_region(
    rgb: tuple[int, int, int],
    *,
    member: str = "left_click",
    toolset: str = "computer",
    text: str | None = None,
) -> Callable[[ModelRequest], Reply]:
    """A scripted turn clicking the centre of the largest `rgb` region of the newest screenshot."""

    def turn(request: ModelRequest) -> Reply:
        x, y = centre_of_largest_region(newest_screenshot(request.messages), rgb)
        return Reply(
            text=text, tool_calls=[ToolCall(member, {"coordinate": [x, y]}, toolset=toolset)]
        )

    return turn
