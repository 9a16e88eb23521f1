"""The Messages API's wire format as the fake speaks it: streamed events, errors, and the 400 for
tool calls and results that do not pair up."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from computer_use.testing.script import blocks


def unpaired_tool_use(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The API's 400 for a conversation whose tool calls and results do not pair up, or None."""
    for index, message in enumerate(messages):
        if message.get("role") != "assistant":
            continue
        calls = [b["id"] for b in blocks(message) if b.get("type") == "tool_use"]
        if not calls or index + 1 == len(messages):
            continue  # the newest reply may end with calls (a resumed `pause_turn`)
        results = {
            b.get("tool_use_id")
            for b in blocks(messages[index + 1])
            if b.get("type") == "tool_result"
        }
        missing = [c for c in calls if c not in results]
        if missing:
            return (
                f"messages.{index + 1}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(missing)}. Each `tool_use` block must have a "
                "corresponding `tool_result` block in the next message."
            )
    known = {b.get("id") for m in messages for b in blocks(m) if b.get("type") == "tool_use"}
    for index, message in enumerate(messages):
        for block in blocks(message):
            if block.get("type") == "tool_result" and block.get("tool_use_id") not in known:
                return (
                    f"messages.{index}: unexpected `tool_use_id` found in `tool_result` blocks: "
                    f"{block.get('tool_use_id')}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
    return None


def error_body(error_type: str, message: str, request_id: str, **details: Any) -> dict[str, Any]:
    error: dict[str, Any] = {"type": error_type, "message": message}
    if details:
        error["details"] = details
    return {"type": "error", "error": error, "request_id": request_id}


def events(message: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The SSE events of one message, each block sent in two deltas as the API splits them."""
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield {"type": "message_start", "message": start}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {"type": "text", "text": ""},
            }
            text = block["text"]
            for part in (text[: len(text) // 2], text[len(text) // 2 :]):
                delta = {"type": "text_delta", "text": part}
                yield {"type": "content_block_delta", "index": index, "delta": delta}
        else:
            yield {
                "type": "content_block_start",
                "index": index,
                "content_block": {**block, "input": {}},
            }
            partial = json.dumps(block["input"])
            for part in (partial[: len(partial) // 2], partial[len(partial) // 2 :]):
                delta = {"type": "input_json_delta", "partial_json": part}
                yield {"type": "content_block_delta", "index": index, "delta": delta}
        yield {"type": "content_block_stop", "index": index}
    yield {
        "type": "message_delta",
        "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": usage["output_tokens"]},
    }
    yield {"type": "message_stop"}
