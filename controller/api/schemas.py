"""The JSON shapes of the HTTP API (they generate its OpenAPI document)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from controller.api.submissions import (
    Name,
    Strict,
)
from controller.auth import Revocation, role_of, shown_name
from controller.store.models import Device, Message, Task, TaskStatus, Thread
from controller.store.tasks import OutputChunk


def ts(seconds: float | None) -> datetime | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, UTC)


class ErrorBody(BaseModel):
    code: str = Field(description="Stable, machine-readable reason, e.g. `folder_not_granted`.")
    message: str = Field(description="What was wrong and how to fix it.")


class ErrorResponse(BaseModel):
    error: ErrorBody


class Health(BaseModel):
    status: Literal["ok"] = "ok"
    version: str


class PairRequest(Strict):
    code: str = Field(max_length=32, description="The code `dispatch pair` printed.")
    device_name: Name


class PairResponse(BaseModel):
    device_id: int
    device_name: str
    token: str = Field(description="Send as `Authorization: Bearer TOKEN`. Shown only once.")


class PairingCodeOut(BaseModel):
    code: str
    url: str = Field(description="Open on the phone to pair with this code.")
    expires_at: datetime


RoleName = Annotated[
    Literal["owner", "device"],
    Field(
        description="`owner`: the controller machine's CLI; issues pairing codes, revokes "
        "devices, changes settings. `device`: a paired phone or browser; works with threads "
        "and tasks."
    ),
]


class DeviceOut(BaseModel):
    id: int
    name: str = Field(description="The owner's comes from its role, never from a device.")
    role: RoleName
    is_owner: bool = Field(description='Same as `role == "owner"`.')
    created_at: datetime
    last_seen_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, d: Device) -> DeviceOut:
        return cls(**_device_fields(d))


class RevokedDevice(DeviceOut):
    cancelled_task_ids: list[int] = Field(
        description="Its queued tasks, cancelled with it; tasks already running keep running."
    )

    @classmethod
    def of_revocation(cls, r: Revocation) -> RevokedDevice:
        return cls(**_device_fields(r.device), cancelled_task_ids=list(r.cancelled_task_ids))


def _device_fields(d: Device) -> dict[str, Any]:
    return {
        "id": d.id,
        "name": shown_name(d),
        "role": role_of(d).value,
        "is_owner": d.is_owner,
        "created_at": ts(d.created_at),
        "last_seen_at": ts(d.last_seen_at),
        "revoked_at": ts(d.revoked_at),
    }


class Submitter(BaseModel):
    device_id: int
    name: str = Field(description="The device's name; the owner's comes from its role.")
    role: RoleName

    @classmethod
    def of(cls, d: Device) -> Submitter:
        return cls(device_id=d.id, name=shown_name(d), role=role_of(d).value)


class FolderOut(BaseModel):
    path: str
    mode: Literal["ro", "rw"]


class ThreadCreate(Strict):
    name: Name


class ThreadOut(BaseModel):
    id: int
    name: str
    created_at: datetime

    @classmethod
    def of(cls, t: Thread) -> ThreadOut:
        return cls(id=t.id, name=t.name, created_at=ts(t.created_at))  # type: ignore[arg-type]


class MessageCreate(Strict):
    text: str = Field(min_length=1, max_length=100_000)


class MessageOut(BaseModel):
    id: int
    thread_id: int
    position: int
    created_at: datetime
    author: str = Field(description="The sender's name; the owner's comes from its role.")
    device_id: int | None = Field(
        description="The device whose token sent it; null for messages from before this was "
        "recorded."
    )
    role: RoleName | None = Field(
        description="The sender's role: tells the owner's messages from a device's whatever the "
        "names; null when device_id is."
    )
    text: str

    @classmethod
    def of(cls, m: Message, by: Device | None) -> MessageOut:
        """`by`: the device `m.device_id` names."""
        assert by is None or by.id == m.device_id, f"message {m.id} was not sent by {by.id}"
        return cls(
            id=m.id,
            thread_id=m.thread_id,
            position=m.position,
            created_at=ts(m.created_at),  # type: ignore[arg-type]
            author=m.author if by is None else shown_name(by),
            device_id=m.device_id,
            role=None if by is None else role_of(by).value,
            text=m.text,
        )


class AgentOut(BaseModel):
    """What an agent task was asked to do, and with what."""

    prompt: str
    tools: list[str]
    display: Literal["sandbox", "host"]
    max_steps: int
    model: str | None = Field(description="null: the controller's `model` setting.")
    policy: dict[str, Any] | None
    allowed_domains: list[str]


class TaskOut(BaseModel):
    id: int
    thread_id: int
    position: int = Field(description="Place in the thread's history.")
    kind: Literal["command", "agent"]
    command: list[str]
    folders: list[FolderOut]
    network: Literal["none", "open", "allowlist"]
    network_allow: list[str] = Field(
        default_factory=list, description='Network "allowlist": the domains, presets expanded.'
    )
    isolation: Literal["container", "vm"] = "container"
    timeout_s: float
    status: TaskStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    exit_code: int | None
    outcome: str | None = Field(description="exited, timed_out, out_of_memory or stopped.")
    reason: str | None = Field(description="Why it failed, was cancelled or interrupted.")
    retry_of: int | None
    sandbox_id: str | None
    submitted_by: Submitter | None = Field(
        description="The device whose token queued it (for a retry, the one that retried); "
        "null for tasks queued before this was recorded."
    )
    agent: AgentOut | None = Field(default=None, description="For agent tasks.")
    final_answer: str | None = Field(default=None, description="The agent's last words.")
    tokens_in: int | None = None
    tokens_out: int | None = None
    cost_usd: float | None = Field(
        default=None, description="An estimate at list price; null when the model's is unknown."
    )

    @classmethod
    def of(cls, t: Task, by: Device | None) -> TaskOut:
        """`by`: the device `t.submitted_by` names."""
        return cls(**_task_fields(t, by))


class OutputChunkOut(BaseModel):
    stream: Literal["stdout", "stderr"]
    text: str


class StepOut(BaseModel):
    """One step of an agent task: a model reply, the tools' results, or a retried API call."""

    index: int
    kind: Literal["model", "tools", "retry"]
    text: str = Field(description="The model's text, or what was retried.")
    tool_calls: list[dict[str, Any]] = Field(description="id, name, toolset, input.")
    results: list[dict[str, Any]] = Field(
        description="tool_use_id, is_error, text, images (SHA-256 of screenshots, served at "
        "/api/v1/images/{sha})."
    )
    tokens_in: int
    tokens_out: int
    at: datetime


class TaskDetail(TaskOut):
    output: list[OutputChunkOut] = Field(description="Output in order; stream runs merged.")
    steps: list[StepOut] = Field(default_factory=list, description="Agent tasks: in order.")

    @classmethod
    def with_output(
        cls,
        t: Task,
        by: Device | None,
        output: list[OutputChunk],
        steps: list[dict[str, Any]] | None = None,
    ) -> TaskDetail:
        chunks = [OutputChunkOut(stream=c.stream, text=c.text) for c in output]  # type: ignore[arg-type]
        shown = [StepOut(**{**s, "at": ts(s["at"])}) for s in steps or []]
        return cls(**_task_fields(t, by), output=chunks, steps=shown)


def _task_fields(t: Task, by: Device | None) -> dict[str, Any]:
    assert by is None or by.id == t.submitted_by, f"task {t.id} was not submitted by {by.id}"
    duration = None
    if t.started_at is not None and t.finished_at is not None:
        duration = max(t.finished_at - t.started_at, 0.0)
    return {
        "id": t.id,
        "thread_id": t.thread_id,
        "position": t.position,
        "kind": t.kind.value,
        "command": t.command,
        "folders": t.folders,
        "network": t.network,
        "network_allow": list(t.network_allow or []),
        "isolation": t.isolation or "container",
        "timeout_s": t.timeout_s,
        "status": t.status,
        "created_at": ts(t.created_at),
        "started_at": ts(t.started_at),
        "finished_at": ts(t.finished_at),
        "duration_s": duration,
        "exit_code": t.exit_code,
        "outcome": t.outcome,
        "reason": t.reason,
        "retry_of": t.retry_of,
        "sandbox_id": t.sandbox_id,
        "submitted_by": None if by is None else Submitter.of(by),
        "agent": None if t.agent is None else AgentOut(**_agent_fields(t.agent)),
        "final_answer": t.final_answer,
        "tokens_in": t.tokens_in,
        "tokens_out": t.tokens_out,
        "cost_usd": t.cost_usd,
    }


def _agent_fields(agent: dict[str, Any]) -> dict[str, Any]:
    keys = ("prompt", "tools", "display", "max_steps", "model", "policy", "allowed_domains")
    return {key: agent.get(key) for key in keys} | {
        "allowed_domains": agent.get("allowed_domains") or []
    }


class MessageItem(BaseModel):
    type: Literal["message"] = "message"
    message: MessageOut


class TaskItem(BaseModel):
    type: Literal["task"] = "task"
    task: TaskOut


class ThreadDetail(ThreadOut):
    history: list[Annotated[MessageItem | TaskItem, Field(discriminator="type")]] = Field(
        description="Messages and tasks in the order they were added."
    )
