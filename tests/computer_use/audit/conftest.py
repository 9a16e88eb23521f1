"""A real audit log to check and tamper with: two agent tasks and a command task, interleaved,
with real screenshots (PNG and JPEG drawn with Pillow, an annotated copy from the approval
package's own `annotate`)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from computer_use.approval.annotate import annotate, describe
from computer_use.audit.chain import AuditLog
from computer_use.audit.entry import Entry, Kind


def screen(label: str, color: str = "#f4f4f4", fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", (320, 200), color)
    draw = ImageDraw.Draw(image)
    for row in range(0, 200, 20):
        draw.text((10, row), f"{label} - row {row}", "#222")
    draw.rectangle((240, 150, 300, 180), fill="#3060c0")
    out = io.BytesIO()
    image.save(out, format=fmt)
    return out.getvalue()


def annotated(shot: bytes, member: str, input: dict[str, object]) -> bytes:
    with Image.open(io.BytesIO(shot)) as image:
        drawn = annotate(image.convert("RGB"), "computer", member, input)
    out = io.BytesIO()
    drawn.save(out, format="PNG")
    return out.getvalue()


@dataclass
class Built:
    root: Path
    entries: list[Entry]

    @property
    def log_path(self) -> Path:
        return self.root / "chain.jsonl"

    def lines(self) -> list[bytes]:
        return self.log_path.read_bytes().splitlines(keepends=True)

    def write(self, lines: list[bytes]) -> None:
        self.log_path.write_bytes(b"".join(lines))

    def of(self, kind: Kind, task: int | None = None) -> Entry:
        return next(e for e in self.entries if e.kind is kind and task in (None, e.task))


def agent_steps(log: AuditLog, task: int, thread: int, label: str, approve: bool = True) -> None:
    """One agent task: submitted, a model turn, a click asked for, decided, performed, done."""
    seen = screen(f"{label} before", fmt="JPEG")
    log.append(
        Kind.TASK_SUBMITTED,
        task=task,
        thread=thread,
        data={"type": "agent", "request": f"send the {label} report", "by": "phone"},
    )
    log.append(Kind.TASK_STARTED, task=task, thread=thread, data={})
    log.append(
        Kind.MODEL_TURN,
        task=task,
        thread=thread,
        data={"text": f"I will press Send on {label}.", "input_tokens": 812, "output_tokens": 41},
        shots={"seen": log.screenshots.put(seen)},
    )
    action = {"coordinate": [270, 165]}
    judged = screen(f"{label} judged")
    log.append(
        Kind.ACTION_PROPOSED,
        task=task,
        thread=thread,
        data={
            "action_id": f"toolu_{task}_1",
            "tool": "computer",
            "member": "left_click",
            "input": action,
            "description": describe("computer", "left_click", action),
            "reason": "The Send button is at the bottom right.",
        },
        shots={"judged": judged},
    )
    log.append(
        Kind.APPROVAL_REQUESTED,
        task=task,
        thread=thread,
        data={"action_id": f"toolu_{task}_1", "approval_id": task * 10},
        shots={"judged": judged, "annotated": annotated(judged, "left_click", action)},
    )
    log.append(
        Kind.APPROVAL_DECIDED,
        task=task,
        thread=thread,
        data={
            "action_id": f"toolu_{task}_1",
            "approval_id": task * 10,
            "decision": "approved" if approve else "denied",
            "by": "Ann's phone",
            "device": "device 3",
            "reason": None if approve else "not now",
        },
    )
    if approve:
        log.append(
            Kind.ACTION_PERFORMED,
            task=task,
            thread=thread,
            data={"action_id": f"toolu_{task}_1", "outcome": "done", "result": "clicked"},
            shots={"after": screen(f"{label} after", "#e0ffe0")},
        )
    log.append(
        Kind.TASK_FINISHED,
        task=task,
        thread=thread,
        data={"status": "succeeded", "reason": "the report was sent"},
    )


def build(root: Path) -> Built:
    with AuditLog.open(root) as log:
        log.append(
            Kind.TASK_SUBMITTED,
            task=1,
            thread=1,
            data={"type": "command", "request": "make test", "by": "owner"},
        )
        agent_steps(log, 2, 2, "March")
        log.append(
            Kind.SANDBOX_COMMAND,
            task=1,
            thread=1,
            data={"command": ["make", "test"], "exit_code": 0, "outcome": "succeeded"},
        )
        agent_steps(log, 3, 2, "April", approve=False)
        log.append(
            Kind.TASK_FINISHED, task=1, thread=1, data={"status": "succeeded", "reason": "exit 0"}
        )
        log.flush()
    with AuditLog.open(root) as log:
        entries = list(log.entries())
    return Built(root, entries)


@pytest.fixture
def built(tmp_path: Path) -> Iterator[Built]:
    yield build(tmp_path / "data" / "audit")
