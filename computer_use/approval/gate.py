"""The approval gate: nothing with an effect runs until the policy allows it or a person, having
seen it, approves it - and the screen still looks as it did when they said yes.

`Confirmer` is the `confirm` hook of the SDK's computer and browser toolsets (and the guard of the
sandbox's bash and edit tools). For each call it asks the policy:

    allow ──▶ run
    deny  ──▶ refused: the model reads which rule denied it
    ask   ──▶ capture the screen, ApprovalGate.request() announces the request (its PNG and
              annotated copy encoding in the background meanwhile) and blocks until
              approved ──▶ capture again, compare with the approved frame (approval.compare)
                           unchanged ──▶ run
                           changed   ──▶ a new request with the new screenshot (at most
                                         `max_reasks` times, then refused with the reason)
              denied    ──▶ refused with the person's reason
              expired   ──▶ refused: no decision in time counts as a denial
              cancelled ──▶ refused: the task is ending

A refusal is a `ToolError`, whose text the SDK hands the model as the tool result; any other
exception (the store failing, a capture failing) makes the SDK fail closed: the call never runs.
The controller implements `ApprovalGate` (store, events, notifications); this module never
imports it.

What is left open: the final capture and the action are milliseconds apart, not atomic; a window
that appears in between is not seen. The approval binds to what the screen showed, not to the
application state behind it.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import io
import os
import struct
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Protocol

from anthropic.tools import ToolError
from PIL import Image

from computer_use.approval.annotate import annotate, describe, escape
from computer_use.approval.compare import (
    DEFAULT_RULES,
    Box,
    CompareRules,
    Point,
    action_targets,
    compare,
)

DEFAULT_TIMEOUT_S = 300.0
DEFAULT_MAX_REASKS = 3
MODEL_REASON_CHARS = 4000
PERSON_REASON_CHARS = 1000
# Fast PNG: the encode sits on the path from the toolset asking to the request being visible.
PNG_COMPRESS_LEVEL = 1
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Rows deflated per call: few calls, and no copy of the whole image.
PNG_ROWS_PER_CHUNK = 32
ENCODER_NICE = 10


# Encodes a request's two images side by side while the request is announced (zlib and most
# of Pillow's drawing run without the GIL).
def _lower_priority() -> None:
    # Linux gives each thread its own nice value: the encoding yields the CPU to the threads
    # announcing the request and serving it.
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ENCODER_NICE)


_ENCODER = ThreadPoolExecutor(
    max_workers=2, thread_name_prefix="approval-images", initializer=_lower_priority
)


class OutcomeKind(enum.StrEnum):
    APPROVED = "approved"
    DENIED = "denied"
    EXPIRED = "expired"
    # The task was cancelled, or its request voided by the controller: the action must not run.
    CANCELLED = "cancelled"


def _frozen(value: Any) -> Any:
    """A deep, read-only copy of JSON-like data: a request cannot change once made."""
    if isinstance(value, Mapping):
        return MappingProxyType({str(k): _frozen(v) for k, v in value.items()})
    if isinstance(value, list | tuple):
        return tuple(_frozen(v) for v in value)
    return copy.deepcopy(value)


def thaw(value: Any) -> Any:
    """Plain dicts and lists again, e.g. to store a request's input as JSON."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thaw(v) for v in value]
    return value


@dataclass(frozen=True)
class ApprovalRequest:
    """An action a person must approve, with everything they need to judge it.

    `input` is what the model sent (screenshot pixels); `screen_input` the same with coordinates
    in screen pixels, the ones the action will use and the annotation shows. `replaces` names the
    approved request this one replaces because the screen changed after it (`replaced_because`).
    Both inputs are read-only copies; `thaw()` gives plain dicts to store as JSON.
    """

    task_id: int
    tool: str
    member: str
    input: Mapping[str, Any]
    screen_input: Mapping[str, Any]
    description: str
    model_reason: str
    policy_rule: str | None
    images: RequestImages | None
    created_at: float
    expires_at: float
    replaces: int | None = None
    replaced_because: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "input", _frozen(self.input))
        object.__setattr__(self, "screen_input", _frozen(self.screen_input))

    @property
    def screenshot_png(self) -> bytes | None:
        """The screenshot the person judges (PNG); waits for its encoding."""
        return self.images.result()[0] if self.images is not None else None

    @property
    def annotated_png(self) -> bytes | None:
        """The same marked with the action (PNG); waits for its encoding."""
        return self.images.result()[1] if self.images is not None else None


class RequestImages:
    """A request's screenshot and its annotated copy, encoded side by side in the background
    once `start()` is called (or on first `result()`): the gate may announce a request first
    and store its images when they are ready (the controller's does, refusing decisions until
    then), so the announcement does not wait for, nor compete with, the encoding."""

    def __init__(
        self, frame: Image.Image, tool: str, member: str, screen_input: Mapping[str, Any]
    ) -> None:
        self._frame = frame
        self._mark = (tool, member, copy.deepcopy(dict(screen_input)))
        self._jobs: tuple[Future[bytes], Future[bytes]] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        with self._lock:
            if self._jobs is None:
                frame, (tool, member, marks) = self._frame, self._mark
                self._jobs = (
                    _ENCODER.submit(png, frame),
                    _ENCODER.submit(lambda: png(annotate(frame, tool, member, marks))),
                )

    def result(self) -> tuple[bytes, bytes]:
        """(screenshot, annotated), once both are encoded; re-raises an encoding's error."""
        self.start()
        assert self._jobs is not None
        return self._jobs[0].result(), self._jobs[1].result()


@dataclass(frozen=True)
class ApprovalOutcome:
    """How a request ended; `reason` is the person's (denials) or the controller's (cancels)."""

    kind: OutcomeKind
    request_id: int | None = None
    reason: str | None = None


class ApprovalGate(Protocol):
    """What the controller implements: store and announce a request, wait for its end."""

    def request(self, req: ApprovalRequest) -> ApprovalOutcome:
        """Block until the request is approved, denied, expired or cancelled.

        `req.images` start encoding when first asked for: a gate may announce the request
        first, but must not let it be decided before its images are stored and shown.
        Raising instead (the store is down, the task is gone) refuses the action.
        """
        ...


@dataclass(frozen=True)
class ToolCall:
    """What the policy judges: the call with its coordinates in screen pixels, and for the
    browser the URL of the tab it acts on (as the SDK last reported it)."""

    tool: str
    member: str
    input: Mapping[str, Any]
    tab_url: str | None = None


class PolicyVerdict(Protocol):
    @property
    def decision(self) -> Any:
        """`allow`, `ask` or `deny` (a string or a string enum)."""

    @property
    def rule_index(self) -> int | None:
        """The matching rule's position, None for the default."""

    @property
    def explanation(self) -> str:
        """Why, in words a person reads."""


class Policy(Protocol):
    def decide(self, call: ToolCall) -> PolicyVerdict:
        """Judge one call."""
        ...


Capture = Callable[[], Image.Image]
ToScreen = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]
StatedReason = Callable[[str | None], str]


def _no_reason(tool_use_id: str | None) -> str:
    return ""


def _same(member: str, input: Mapping[str, Any]) -> Mapping[str, Any]:
    return input


def png(image: Image.Image) -> bytes:
    """`image` as a lossless PNG, made fast: its rows unfiltered, deflated at level 1.

    Pillow's encoder tries each PNG filter on every row and copies the image several times;
    this takes about 2.5 times less (1280x800 of text: 25 ms against 64 ms on a busy 2-core
    machine), for a file of about the same size (a screen is mostly flat).
    """
    if image.mode != "RGB":
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        return buffer.getvalue()
    width, height = image.size
    stride = width * 3
    pixels = memoryview(image.tobytes())
    deflate = zlib.compressobj(PNG_COMPRESS_LEVEL)
    idat: list[bytes] = []
    for top in range(0, height, PNG_ROWS_PER_CHUNK):
        rows: list[bytes | memoryview] = []
        for y in range(top, min(height, top + PNG_ROWS_PER_CHUNK)):
            # Each row is led by its filter type: 0, none.
            rows += (b"\0", pixels[y * stride : (y + 1) * stride])
        idat.append(deflate.compress(b"".join(rows)))
    idat.append(deflate.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(idat))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"… [{len(text) - limit} more]"


def _text_of(block: Any, key: str) -> Any:
    return block.get(key) if isinstance(block, Mapping) else getattr(block, key, None)


def reason_before(content: Sequence[Any], tool_use_id: str | None) -> str:
    """The model's text before the tool_use `tool_use_id` in one assistant message.

    Only the text since the previous tool_use counts: it is what the model said about this
    call. `content` holds the SDK's blocks or their dict form.
    """
    texts: list[str] = []
    for block in content:
        kind = _text_of(block, "type")
        if kind == "text":
            texts.append(str(_text_of(block, "text") or ""))
        elif kind in ("tool_use", "server_tool_use"):
            if _text_of(block, "id") == tool_use_id:
                break
            texts = []
    else:
        return ""
    return "\n".join(t.strip() for t in texts if t.strip())


def _decision(verdict: PolicyVerdict) -> str:
    # Exactly "allow" runs: a misspelt or unexpected answer falls through to a refusal.
    value = verdict.decision
    return str(getattr(value, "value", value))


def _rule(verdict: PolicyVerdict) -> str:
    where = "the default" if verdict.rule_index is None else f"rule {verdict.rule_index}"
    return f"{where}: {verdict.explanation}" if verdict.explanation else where


def _plain_input(value: Any) -> dict[str, Any]:
    """The SDK's parsed input model as the dict the model sent."""
    if hasattr(value, "model_dump"):
        dumped = value.model_dump(by_alias=True, exclude_none=True, mode="json")
        return dict(dumped)
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"cannot read a tool input of type {type(value).__name__}")


@dataclass
class Confirmer:
    """The `confirm` hook for one toolset of one task (see the module docstring).

    Args:
        task_id: the task the requests belong to.
        tool: the toolset's name (`computer`, `browser`), used by `__call__`.
        policy: decides allow / ask / deny per call.
        gate: the controller's approval requests.
        capture: the screen as the person would see it; None for tools off any screen.
        to_screen: maps the model's input to screen pixels (the screen driver's scaling).
        stated_reason: the model's text before the call, given the tool_use id.
        pointer: where the pointer is, when the captures may show it.
        panels: the screen's panels (the strips outside the window manager's work area), where
            small changes do not void an approval; none known, none ignored.
        timeout_s: how long a request waits (`approval_timeout_s`), for its expiry and message.
        max_reasks: new requests after approvals voided by a screen change, before refusing.
    """

    task_id: int
    tool: str
    policy: Policy
    gate: ApprovalGate
    capture: Capture | None = None
    to_screen: ToScreen = _same
    stated_reason: StatedReason = _no_reason
    pointer: Callable[[], Point] | None = None
    panels: Callable[[], Sequence[Box]] | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    max_reasks: int = DEFAULT_MAX_REASKS
    rules: CompareRules = DEFAULT_RULES
    clock: Callable[[], float] = field(default=time.time)

    def __call__(self, ctx: Any) -> bool:
        """The SDK's hook: True runs the call; a ToolError tells the model why it did not.

        It blocks until a decision: give it to synchronous toolsets (or wrap it with
        `asyncio.to_thread` for async ones) so no event loop stalls while a person decides.
        """
        tool_use = getattr(ctx, "tool_use", None)
        self.check(
            self.tool,
            str(ctx.member),
            _plain_input(ctx.input),
            tool_use_id=getattr(tool_use, "id", None),
            tab_url=getattr(ctx, "tab_url", None),
        )
        return True

    def guard(self, tool: str, member: str, input: Mapping[str, Any]) -> None:
        """The sandbox tools' guard: returns to allow, raises ToolError to refuse."""
        self.check(tool, member, input)

    def check(
        self,
        tool: str,
        member: str,
        input: Mapping[str, Any],
        *,
        tool_use_id: str | None = None,
        tab_url: str | None = None,
    ) -> None:
        """Return when the call may run; raise ToolError (the model reads it) when not."""
        screen_input = dict(self.to_screen(member, input)) if self.capture else dict(input)
        # The policy gets its own copy: nothing it does can alter what is approved or run.
        call = ToolCall(tool, member, copy.deepcopy(screen_input), tab_url)
        verdict = self.policy.decide(call)
        decision = _decision(verdict)
        if decision == "allow":
            return
        if decision == "deny":
            raise ToolError(
                f"This action was denied by the policy ({_rule(verdict)}); it was not performed."
            )
        if decision != "ask":
            raise ToolError(
                f"The policy answered {decision!r}, which is not allow, ask or deny; the action "
                "was treated as denied and not performed."
            )
        self._ask(tool, member, input, screen_input, _rule(verdict), tool_use_id)

    def _ask(
        self,
        tool: str,
        member: str,
        input: Mapping[str, Any],
        screen_input: dict[str, Any],
        rule: str,
        tool_use_id: str | None,
    ) -> None:
        # The model's words reach the person escaped (no bidi overrides, no terminal escapes),
        # its paragraphs kept.
        stated = _clip(self.stated_reason(tool_use_id) or "", MODEL_REASON_CHARS)
        model_reason = "\n".join(escape(line) for line in stated.split("\n"))
        description = describe(tool, member, screen_input)
        targets = action_targets(member, screen_input)
        capture = self.capture
        frame = capture() if capture is not None else None
        pointer_then = self.pointer() if self.pointer and frame is not None else None
        replaces: int | None = None
        replaced_because: str | None = None
        for _attempt in range(self.max_reasks + 1):
            now = self.clock()
            request = ApprovalRequest(
                task_id=self.task_id,
                tool=tool,
                member=member,
                input=input,
                screen_input=screen_input,
                description=description,
                model_reason=model_reason,
                policy_rule=rule,
                images=(
                    RequestImages(frame, tool, member, screen_input) if frame is not None else None
                ),
                created_at=now,
                expires_at=now + self.timeout_s,
                replaces=replaces,
                replaced_because=replaced_because,
            )
            outcome = self.gate.request(request)
            if outcome.kind is OutcomeKind.DENIED:
                reason = _clip((outcome.reason or "").strip(), PERSON_REASON_CHARS)
                raise ToolError(
                    f"The person denied this action: {reason or 'no reason given'}. "
                    "It was not performed."
                )
            if outcome.kind is OutcomeKind.EXPIRED:
                raise ToolError(
                    f"No decision within {self.timeout_s:g} s; the action was treated as denied "
                    "and not performed."
                )
            if outcome.kind is not OutcomeKind.APPROVED:
                raise ToolError(
                    "The task was cancelled before this action was approved; it was not performed."
                )
            if frame is None or capture is None:
                return
            # Bound to what was seen: the screen must still look as it did when approved.
            current = capture()
            if current.size != frame.size:
                # The model's coordinates were mapped for the old size: it must look again.
                raise ToolError(
                    f"The screen size changed from {frame.width}x{frame.height} to "
                    f"{current.width}x{current.height} after approval; the action was not "
                    "performed. Take a new screenshot."
                )
            pointers = [p for p in (pointer_then, self.pointer() if self.pointer else None) if p]
            panels = self.panels() if self.panels is not None else ()
            change = compare(
                frame, current, targets, pointers=pointers, panels=panels, rules=self.rules
            )
            if not change.matters:
                return
            frame, pointer_then = current, pointers[-1] if pointers else None
            replaces, replaced_because = outcome.request_id, change.reason
        raise ToolError(
            f"The screen kept changing after each approval ({self.max_reasks + 1} times; last: "
            f"{replaced_because}); the action was not performed."
        )
